#!/usr/bin/env bash
# scripts/bench.sh: cbrfs against restic and borg, and against the machine's
# own limits, on data no one here wrote: the kernel source tree from Debian's
# linux-source package and an ext4 image made from it with mke2fs -d.
#
# A benchmark, not a test: CI does not run it and nothing asserts a time.
# Needs root (it drops the page cache before every timed step and installs
# what it needs with apt-get). Takes about an hour on 2 cores (full data,
# BENCH_RUNS=3); BENCH_QUICK=1 BENCH_RUNS=1 takes a few minutes.
#
# Settings (environment):
#   BENCH_RUNS=3          runs of every timed step (the figure is the median)
#   BENCH_QUICK=0         1: a subset of the tree (fs/ and Documentation/)
#                         and a small image, to develop the script
#   BENCH_DIR=/var/tmp/cbrfs-bench   work directory (needs ~15 GB free)
#   BENCH_SEED=20240601   seed of the changed variants
#   BENCH_TOOLS="cbrfs cbrfs-enc cbrfs-enckf restic-auto restic-off borg-lz4 borg-none"
#                         (cbrfs-enc: cbrfs on an encrypted vault, --encrypt
#                         with CBRFS_PASSWORD set; cbrfs-enckf: the same
#                         vault with a key-file slot added, every command
#                         run with --key-file, so no argon2id; their rows
#                         are set beside the unencrypted vault's in the
#                         report, issue 15, with the unlock's own cost)
#   BENCH_MOUNT_TOOLS="cbrfs cbrfs-enc cbrfs-enckf restic-auto borg-lz4"
#                         the tools whose mounts are measured (each tool's
#                         default compression: reads through restic-off and
#                         borg-none mounts cost ~15 min more and tell little)
#   BENCH_DATASETS="tree image binimg s3"
#                         tree: the kernel source; image: a half-sparse ext4
#                         image of part of it; binimg: a full (not sparse)
#                         ext4 image of compiled programs and libraries from
#                         Debian packages (compresses poorly, few zeros);
#                         s3: the tree's data in a vault on S3 (a 3-node
#                         SeaweedFS cluster, scripts/seaweed.sh, a fresh one
#                         each run) beside restic's own S3 backend on the
#                         same cluster; the "Object storage" section
#   BENCH_BINIMG_PKGS     the Debian packages whose files fill binimg
#                         (downloaded with apt-get download, cached in
#                         BENCH_DIR/debs; default: a fixed list, ~1.4 GB)
#   BENCH_S3_TOOLS="cbrfs restic-auto"   the tools of the s3 dataset
#   BENCH_S3_ENCRYPT=1    cbrfs's S3 vault encrypted, as restic's always is
#                         (0: plain)
#   BENCH_S3_COUNT=1      one more run of the s3 dataset with the counting
#                         proxy (tests/common/faultproxy.py --mode pass)
#                         between each tool and the gateway: requests and
#                         bytes per operation; its times, beside the direct
#                         runs', give the proxy's cost (0: no counting run)
#   BENCH_IMAGE_MB        image size (default 1024; 256 with BENCH_QUICK)
#   BENCH_IMAGE_TREE      the part of the tree the image is made of
#                         (default drivers/gpu; the whole subset with QUICK)
#   BENCH_PEER_CP_RUNS    runs in which cp -a of the whole tree out of the
#                         restic and borg mounts (and of restic's S3 mount)
#                         is measured (default: all;
#                         each takes a minute; cbrfs's is measured in every run)
#   BENCH_SCALE=100       backups in the scale row (0: no scale row)
#   BENCH_BASELINE=REV    also measure cbrfs built from git revision REV
#                         (tool "cbrfs-base", beside "cbrfs" in every run,
#                         the two alternating which goes first), and report
#                         each row's ratio to it (the "no row slower by more
#                         than 3 %" rule of a refactoring)
#   BENCH_BASELINE_BIN    the baseline's binary, when already built
#   BENCH_REPORT_ONLY=1   only write the report again from BENCH_DIR's figures
#   BENCH_DOC             where the report goes (default docs/BENCHMARKS.md;
#                         $BENCH_DIR/BENCHMARKS.quick.md with BENCH_QUICK=1)
#
# Text between the lines '<!-- notes -->' and '<!-- /notes -->' of an
# existing report is kept when the report is written again.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
START=$(date +%s)
RUNS=${BENCH_RUNS:-3}
QUICK=${BENCH_QUICK:-0}
W=${BENCH_DIR:-/var/tmp/cbrfs-bench}
SEED=${BENCH_SEED:-20240601}
TOOLS=${BENCH_TOOLS:-cbrfs cbrfs-enc cbrfs-enckf restic-auto restic-off borg-lz4 borg-none}
MOUNT_TOOLS=${BENCH_MOUNT_TOOLS:-cbrfs cbrfs-enc cbrfs-enckf restic-auto borg-lz4}
DATASETS=${BENCH_DATASETS:-tree image binimg s3}
BINIMG_PKGS=${BENCH_BINIMG_PKGS:-libllvm15 libllvm14 libclang-cpp15 libclang-cpp14 gcc-12 cpp-12 g++-12 gfortran-12 libgccjit0 golang-1.19-go libicu72 libz3-4 qemu-system-x86 libwebkit2gtk-4.1-0 libjavascriptcoregtk-4.1-0 libstd-rust-1.63 libgs10 postgresql-15 mariadb-server-core libx265-199 libavcodec59 libgl1-mesa-dri libqt5gui5 libgtk-3-0}
S3_TOOLS=${BENCH_S3_TOOLS:-cbrfs restic-auto}
S3_ENCRYPT=${BENCH_S3_ENCRYPT:-1}
S3_COUNT=${BENCH_S3_COUNT:-1}
SCALE_N=${BENCH_SCALE:-100}
PEER_CP_RUNS=${BENCH_PEER_CP_RUNS:-$RUNS}
if [ "$QUICK" = 1 ]; then
	IMAGE_MB=${BENCH_IMAGE_MB:-256}
	IMAGE_TREE=${BENCH_IMAGE_TREE:-.}
	DOC=${BENCH_DOC:-$W/BENCHMARKS.quick.md}
else
	IMAGE_MB=${BENCH_IMAGE_MB:-1024}
	IMAGE_TREE=${BENCH_IMAGE_TREE:-drivers/gpu}
	DOC=${BENCH_DOC:-$REPO/docs/BENCHMARKS.md}
fi

[ "$(id -u)" = 0 ] || { echo "bench.sh needs root (drop_caches, apt-get)" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "/dev/fuse is missing" >&2; exit 1; }

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }

# ---------------------------------------------------------------- report
report() {
log "writing the report to $DOC"
python3 - "$W" "$DOC" <<'PY'
import os, re, statistics, sys, collections

W, DOC = sys.argv[1], sys.argv[2]
meta = dict(l.rstrip('\n').split('=', 1) for l in open(os.path.join(W, 'meta.txt')) if '=' in l)
vals = collections.defaultdict(list)
for line in open(os.path.join(W, 'results.tsv')):
    ds, tool, metric, run, v = line.rstrip('\n').split('\t')
    vals[(ds, tool, metric)].append(float(v))
loads = [l.rstrip('\n').split('\t') for l in open(os.path.join(W, 'load.tsv'))]
import time
meta['total_min'] = '%d' % round((int(meta.get('end_epoch', time.time())) - int(meta['start_epoch'])) / 60)

TOOLS = meta['tools'].split()
PEERS = [t for t in TOOLS if t not in ('cbrfs', 'cbrfs-base', 'cbrfs-enc', 'cbrfs-enckf')]
ENC = 'cbrfs-enc' in TOOLS
ENCKF = 'cbrfs-enckf' in TOOLS
BASE = 'cbrfs-base' in TOOLS

def stat(ds, tool, metric):
    v = vals.get((ds, tool, metric))
    if not v:
        return None
    return statistics.median(v), min(v), max(v), len(v)

def fmt(x, unit):
    if x is None:
        return '–'
    if unit == 'MB':
        # (Requests' bytes can be a few kB.)
        return ('%.1f' if x >= 1e6 or x == 0 else '%.3f') % (x / 1e6)
    if unit == 'MiB':
        return '%.1f' % (x / 1024)
    if unit in ('ms', 'n'):
        return '%d' % x
    if unit == 'GB/s':
        return '%.2f' % x
    return '%.2f' % x

def cell(s, unit):
    if s is None:
        return '–'
    m, lo, hi, n = s
    few = '' if n >= int(meta['runs']) else ' [%d run%s]' % (n, '' if n == 1 else 's')
    if lo == hi:
        return fmt(m, unit) + few
    return '%s (%s–%s)%s' % (fmt(m, unit), fmt(lo, unit), fmt(hi, unit), few)

# Rows: (label, dataset, metric, unit, compare, target)
#   compare: 'peer' (ratio to the best peer), 'native:<metric>' (ratio to
#   the machine's own), 'abs' (a limit), 'restic' (ratio to restic auto).
ROWS = []
DSETS = meta.get('datasets', 'tree image').split()
for ds, dname in [(d, {'binimg': 'binaries image'}.get(d, d)) for d in ('tree', 'image', 'binimg') if d in DSETS]:
    for step, sname in (('first', 'first backup'), ('unchanged', 'unchanged re-backup'),
                        ('changed', 'changed re-backup')):
        tgt = {'first': ('peer', 0.5), 'unchanged': ('peer', 0.5)}.get(step, ('peer', None))
        ROWS.append(('%s: %s, wall s' % (dname, sname), ds, step + '.wall_s', 's', tgt[0], tgt[1]))
        ROWS.append(('%s: %s, CPU s' % (dname, sname), ds, step + '.cpu_s', 's', 'peer', None))
        ROWS.append(('%s: %s, peak RSS MiB' % (dname, sname), ds, step + '.rss_kib', 'MiB', 'restic', 1.0))
    ROWS.append(('%s: repository after 3 backups, MB' % dname, ds, 'repo_bytes', 'MB', 'restic', 1.0))
    ROWS.append(('%s: restore (own command), wall s' % dname, ds, 'restore.wall_s', 's', 'peer', None))
    ROWS.append(('%s: mount ready, ms' % dname, ds, 'mount_ready_ms', 'ms', 'abs', 100))
    ROWS.append(('%s: mount idle RSS, MiB' % dname, ds, 'mount_idle_rss_kib', 'MiB', 'abs', 50 * 1e6 / 1024))
    ROWS.append(('%s: mount RSS after reads, MiB' % dname, ds, 'mount_after_rss_kib', 'MiB', 'peer', None))
    ROWS.append(('%s: mount RssAnon after reads, MiB' % dname, ds, 'mount_after_anon_kib', 'MiB', 'peer', None))
    ROWS.append(('%s: mount RssAnon 3 s after reads, MiB' % dname, ds, 'mount_rested_anon_kib', 'MiB', 'peer', None))
    if ds == 'tree':
        ROWS.append(('tree: find | wc -l in mount, s', ds, 'mnt_find.wall_s', 's', 'native:find.wall_s', 2.0))
        ROWS.append(('tree: du -s in mount, s', ds, 'mnt_du.wall_s', 's', 'native:du.wall_s', 2.0))
        ROWS.append(('tree: cp -a out of mount, s', ds, 'mnt_cp_a.wall_s', 's', 'native:cp_a.wall_s', 1.5))
    else:
        ROWS.append(('%s: cat in mount, s' % dname, ds, 'mnt_cat.wall_s', 's', 'native:cat.wall_s', None))
        ROWS.append(('%s: cat in mount, GB/s' % dname, ds, 'mnt_cat.gbps', 'GB/s', 'absmin:cat.gbps', 1.0))
        ROWS.append(('%s: cp out of mount, s' % dname, ds, 'mnt_cp.wall_s', 's', 'native:cp.wall_s', None))

# Derived: throughput of cat through the mount and natively.
for (ds, tool, metric), v in list(vals.items()):
    if metric in ('mnt_cat.wall_s', 'cat.wall_s'):
        img = float(meta['binimg_bytes' if ds == 'binimg' else 'image_bytes'])
        vals[(ds, tool, metric.replace('.wall_s', '.gbps'))] = [img / max(x, 0.01) / 1e9 for x in v]

def lower_better(metric):
    return not metric.endswith('gbps')

table = []
for label, ds, metric, unit, cmp_, target in ROWS:
    c = stat(ds, 'cbrfs', metric)
    peers = {t: stat(ds, t, metric) for t in PEERS}
    have = {t: s for t, s in peers.items() if s}
    best = None
    if have:
        pick = min if lower_better(metric) else max
        best = pick(have, key=lambda t: have[t][0])
    native = None
    ratio = None
    ref = ''
    if cmp_.startswith('absmin:'):
        native = stat(ds, 'native', cmp_.split(':', 1)[1])
        cmp_ = 'absmin'
    if cmp_.startswith('native:'):
        native = stat(ds, 'native', cmp_.split(':', 1)[1])
        if c and native and native[0] > 0:
            ratio, ref = c[0] / native[0], 'native'
    elif cmp_ == 'restic':
        r = stat(ds, 'restic-auto', metric)
        if c and r and r[0] > 0:
            ratio, ref = c[0] / r[0], 'restic-auto'
    elif c and best and have[best][0] > 0:
        ratio, ref = c[0] / have[best][0], best
    if cmp_ in ('abs', 'absmin') or (cmp_.startswith('native:') and metric.endswith('gbps')):
        if c and best and have[best][0] > 0:
            ratio, ref = c[0] / have[best][0], best
    # Is the target met?
    met = ''
    if target is not None and c:
        if cmp_ == 'abs':
            met = 'yes' if c[0] < target else 'no'
        elif cmp_ == 'absmin':
            met = 'yes' if c[0] >= target else 'no'
        elif ratio is not None:
            met = 'yes' if ratio <= target else 'no'
    if cmp_ == 'abs':
        tdesc = '< %s %s' % (fmt(target, unit), unit)
    elif cmp_ == 'absmin':
        tdesc = '>= %s %s' % (fmt(target, unit), unit)
    elif target is None:
        tdesc = ''
    elif cmp_ == 'restic':
        tdesc = '<= restic auto'
    elif cmp_.startswith('native:'):
        tdesc = '<= %sx native' % target
    else:
        tdesc = '<= %sx best peer' % target
    table.append(dict(label=label, ds=ds, metric=metric, unit=unit, c=c, peers=peers, best=best,
                      native=native, ratio=ratio, ref=ref, target=tdesc, met=met))

# Scale rows.
scale = []
n = meta.get('scale_n', '0')
for metric1, metricN, label, unit, target in (
        ('mount_ready_ms', 'scale_mount_ready_ms', 'mount ready, ms', 'ms', 100),
        ('mount_idle_rss_kib', 'scale_mount_idle_rss_kib', 'mount idle RSS, MiB', 'MiB', 50 * 1e6 / 1024)):
    one, many = stat('tree', 'cbrfs', metric1), stat('tree', 'cbrfs', metricN)
    if many:
        scale.append(dict(label='tree: %s after %s backups vs 1' % (label, n), unit=unit, one=one, many=many,
                          ratio=(many[0] / one[0]) if one and one[0] else None,
                          met=('yes' if many[0] < target else 'no'),
                          target='< %s %s at any size' % (fmt(target, unit), unit)))

# ---- object storage (dataset s3): times of the runs straight to the
# gateway; requests and bytes from the counting run (dataset s3 too, steps'
# .n_* and *_bytes), its times kept apart as dataset s3proxy.
S3TOOLS = meta.get('s3_tools', '').split()
S3PEERS = [t for t in S3TOOLS if t not in ('cbrfs', 'cbrfs-base')]
S3REF = 'restic-auto' if 'restic-auto' in S3PEERS else (S3PEERS[0] if S3PEERS else None)
for (ds, tool, metric), v in list(vals.items()):
    if ds == 's3' and metric == 'mount_cold.down_bytes':
        f = vals.get((ds, tool, 'mnt_find_cold.down_bytes'))
        if f:
            vals[(ds, tool, 'coldfind.down_bytes')] = [a + b for a, b in zip(v, f)]
# (label, metric, unit, kind, target): kind 'ratio' (to S3REF), 'abs' (a
# limit), 'zero', 'meta' (no more bytes down than the metadata kept).
S3_ROWS = [
    ('first backup, wall s', 'first.wall_s', 's', 'ratio', 0.5),
    ('first backup, CPU s', 'first.cpu_s', 's', 'ratio', None),
    ('first backup, peak RSS MiB', 'first.rss_kib', 'MiB', 'ratio', None),
    ('unchanged re-backup, wall s', 'unchanged.wall_s', 's', 'ratio', 0.5),
    ('changed re-backup, wall s', 'changed.wall_s', 's', 'ratio', 0.5),
    ('bucket after 3 backups, MB', 'repo_bytes', 'MB', 'ratio', None),
    ('restore, empty cache, wall s', 'restore.wall_s', 's', 'ratio', 0.5),
    ('mount ready, empty cache, ms', 'mount_cold_ms', 'ms', 'abs', 2000),
    ('mount ready, warm cache, ms', 'mount_warm_ms', 'ms', 'abs', 100),
    ('find in the mount, empty cache, s', 'mnt_find_cold.wall_s', 's', 'ratio', None),
    ('cp -a out of the mount, empty cache, s', 'mnt_cp_cold.wall_s', 's', 'ratio', None),
    ('unchanged re-backup, LIST requests', 'unchanged.n_LIST', 'n', 'zero', 0),
    ('unchanged re-backup, packs uploaded', 'unchanged.put_packs', 'n', 'zero', 0),
    ('unchanged re-backup, MB up', 'unchanged.up_bytes', 'MB', 'ratio', None),
    ('mount + find, empty cache, MB down', 'coldfind.down_bytes', 'MB', 'meta', None),
    ('metadata kept after that find, MB', 'meta_bytes', 'MB', 'ratio', None),
]
s3table = []
if S3TOOLS and any(k[0] == 's3' for k in vals):
    for label, metric, unit, kind, target in S3_ROWS:
        c = stat('s3', 'cbrfs', metric)
        peers = {t: stat('s3', t, metric) for t in S3PEERS}
        ref = peers.get(S3REF) if S3REF else None
        ratio = c[0] / ref[0] if c and ref and ref[0] > 0 else None
        met, tdesc = '', ''
        if kind == 'ratio' and target is not None:
            tdesc = '<= %sx %s' % (target, S3REF)
            met = '' if ratio is None else ('yes' if ratio <= target else 'no')
        elif kind == 'abs':
            tdesc = '< %s %s' % (fmt(target, unit), unit)
            if metric == 'mount_cold_ms':
                tdesc += ' (80,000 files; here %s)' % meta.get('tree_files', '?')
            met = ('yes' if c[0] < target else 'no') if c else ''
        elif kind == 'zero':
            tdesc = '= 0'
            met = ('yes' if c[0] == 0 else 'no') if c else ''
        elif kind == 'meta':
            m = stat('s3', 'cbrfs', 'meta_bytes')
            tdesc = 'metadata only (<= the metadata kept%s)' % (', %s MB' % fmt(m[0], 'MB') if m else '')
            # Slack for the listings and records the mount reads.
            met = ('yes' if c[0] <= m[0] * 1.02 + 65536 else 'no') if c and m else ''
        s3table.append(dict(label='s3: ' + label, ds='s3', metric=metric, unit=unit, c=c, peers=peers,
                            best=None, native=None, ratio=ratio, ref=S3REF or '', target=tdesc, met=met))
S3_STEPS = [('first', 'first backup'), ('unchanged', 'unchanged re-backup'), ('changed', 'changed re-backup'),
            ('restore', 'restore, empty cache'), ('mount_cold', 'mount ready, empty cache'),
            ('mnt_find_cold', 'find in that mount'), ('mount_warm', 'mount ready, warm cache'),
            ('mnt_cp_cold', 'cp -a, empty cache')]
S3_KINDS = ('PUT', 'GET', 'LIST', 'HEAD', 'POST', 'DELETE', 'requests')
s3req = []
for step, slabel in S3_STEPS:
    for t in S3TOOLS:
        if stat('s3', t, step + '.n_requests') is None:
            continue
        def n(k):
            x = stat('s3', t, '%s.%s' % (step, k))
            return fmt(x[0], 'n') if x else '–'
        s3req.append([slabel, t] + [n('n_' + k) for k in S3_KINDS] + [n('put_packs'),
                     fmt(stat('s3', t, step + '.up_bytes')[0], 'MB'), fmt(stat('s3', t, step + '.down_bytes')[0], 'MB')])
        if stat('s3', t, step + '.own_put_requests'):
            # The tool's own count (its task log): PUT with POST, GET with HEAD.
            own = [n('own_put_requests'), n('own_get_requests'), n('own_list_requests'), '', '',
                   n('own_delete_requests')]
            total = sum(stat('s3', t, '%s.own_%s_requests' % (step, k))[0] for k in ('put', 'get', 'list', 'delete'))
            s3req.append([slabel, t + ' (own count)'] + own + [fmt(total, 'n'), '',
                         fmt(stat('s3', t, step + '.own_bytes_up')[0], 'MB'), fmt(stat('s3', t, step + '.own_bytes_down')[0], 'MB')])
s3cost = []
for step, slabel in S3_STEPS:
    metric = step + '_ms' if step.startswith('mount') else step + '.wall_s'
    unit = 'ms' if step.startswith('mount') else 's'
    for t in S3TOOLS:
        d, p = stat('s3', t, metric), stat('s3proxy', t, metric)
        if d and p and d[0] > 0:
            s3cost.append([slabel, t, fmt(d[0], unit), fmt(p[0], unit), '%.2f' % (p[0] / d[0])])

# ---- the printed table
def short(s, unit):
    if not s:
        return '–'
    return fmt(s[0], unit) + ('' if s[3] >= int(meta['runs']) else '*')
cols = ['row', 'cbrfs'] + PEERS + ['native', 'cbrfs/ref', 'ref', 'target', 'met']
lines = []
for r in table:
    lines.append([r['label'], short(r['c'], r['unit'])] + [short(r['peers'][p], r['unit']) for p in PEERS] +
                 [short(r['native'], r['unit']),
                  ('%.2f' % r['ratio']) if r['ratio'] is not None else '–', r['ref'], r['target'], r['met']])
for s in scale:
    lines.append([s['label'], short(s['many'], s['unit'])] + ['–'] * len(PEERS) + ['–',
                  ('%.2f' % s['ratio']) if s['ratio'] is not None else '–', 'cbrfs, 1 backup', s['target'], s['met']])
widths = [max(len(str(x[i])) for x in lines + [cols]) for i in range(len(cols))]
def row(x):
    return '  '.join(str(v).ljust(widths[i]) if i == 0 else str(v).rjust(widths[i]) for i, v in enumerate(x))
printed = [row(cols), '  '.join('-' * w for w in widths)] + [row(x) for x in lines]
printed.append('* fewer runs than %s (see "All figures")' % meta['runs'])
print('\n'.join(printed))
if s3table:
    s3cols = ['row', 'cbrfs'] + S3PEERS + ['cbrfs/%s' % S3REF, 'target', 'met']
    s3lines = [[r['label'], short(r['c'], r['unit'])] + [short(r['peers'][p], r['unit']) for p in S3PEERS] +
               [('%.2f' % r['ratio']) if r['ratio'] is not None else '–', r['target'], r['met']] for r in s3table]
    w3 = [max(len(str(x[i])) for x in s3lines + [s3cols]) for i in range(len(s3cols))]
    def row3(x):
        return '  '.join(str(v).ljust(w3[i]) if i == 0 else str(v).rjust(w3[i]) for i, v in enumerate(x))
    s3printed = [row3(s3cols), '  '.join('-' * w for w in w3)] + [row3(x) for x in s3lines]
    print('\n'.join(s3printed))

# ---- the report
old_notes = ''
if os.path.exists(DOC):
    m = re.search(r'<!-- notes -->\n(.*?)<!-- /notes -->', open(DOC).read(), re.S)
    if m:
        old_notes = m.group(1)
if not old_notes:
    old_notes = '(no notes yet)\n'

def md(cells):
    return '| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |'

out = []
out.append('# Benchmarks\n')
out.append('Written by `scripts/bench.sh` on %s%s. A benchmark, not a test: CI does not run it and no test asserts a time.\n'
           % (meta['date'], ' (QUICK: a subset of the data, for developing the script)' if meta['quick'] == '1' else ''))
out.append('## Machine and versions\n')
out.append(md(['what', 'value']))
out.append(md(['---', '---']))
for k, lbl in (('nproc', 'CPUs (nproc)'), ('cpu', 'CPU'), ('mem', 'memory'), ('disk', 'disk (df of the work directory)'),
               ('kernel', 'kernel'), ('cbrfs', 'cbrfs commit'), ('cbrfs_subject', 'cbrfs commit subject'),
               ('restic', 'restic'), ('borg', 'borg'), ('rustc', 'rustc')):
    v = meta.get(k, '')
    if k == 'mem':
        v = '%.1f GiB' % (int(v) / 2**30)
    out.append(md([lbl, '`%s`' % v]))
out.append('')
out.append('## Data\n')
out.append('- **tree**: `%s` from Debian\'s `linux-source` package, unpacked%s: %s files (%s entries with directories and links), %s bytes (`du -sb`), %s KiB on disk (`du -s`).'
           % (meta['ksrc'], ' (QUICK: only fs/ and Documentation/)' if meta['quick'] == '1' else '',
              meta['tree_files'], meta['tree_entries'], meta['tree_bytes'], meta['tree_du_kib']))
out.append('- **image**: an ext4 image of `tree/%s` (%s files, %s bytes), `mke2fs -t ext4 -b 4096 -d tree/%s disk.img` (fixed UUID and hash seed): %s bytes, %s allocated (sparse).'
           % (meta['image_tree'], meta['image_tree_files'], meta['image_tree_bytes'], meta['image_tree'], meta['image_bytes'], meta['image_alloc']))
if 'binimg_bytes' in meta:
    out.append('- **binaries image**: a full ext4 image (`mke2fs -d`, fixed UUID and hash seed, then written out with `cp --sparse=never`, so not sparse) of the files of these Debian packages (`apt-get download`, `dpkg-deb -x`): %s. Content %s bytes in %s files; image %s bytes, %s allocated. Versions: `BENCH_DIR/debs/versions.txt`.'
               % (meta['binimg_pkgs'], meta['binimg_tree_bytes'], meta['binimg_tree_files'], meta['binimg_bytes'], meta['binimg_alloc']))
out.append('- **changed variants** (seed %s, `random.Random`): 1 %% of the tree\'s files modified (half with 1–64 bytes appended, half with 1–64 bytes overwritten in place), 0.2 %% removed, 0.2 %% added (100 B–40 KB of text each); 1 %% of the image\'s 4 KiB blocks overwritten with random bytes. The data is put back after each run.'
           % meta['seed'])
out.append('- **scale**: one cbrfs store with %s backups of the tree, 5 files changed between each.\n' % meta['scale_n'])
out.append('## Method\n')
out.append('- Each run: a fresh repository, first backup (`b1`), unchanged re-backup (`b2`), the changed variant, changed re-backup (`b3`); repository size (`du -sb`) after the three; the tool\'s own restore of `b1`; then the mount of the repository: ready time, idle memory, reads of `b1` through it.')
out.append('- `sync; echo 3 > /proc/sys/vm/drop_caches` before every timed step. Wall, CPU (user+sys) and peak RSS from `/usr/bin/time -f "%%e %%U %%S %%M"`. Each figure: median of %s runs, (min–max) when they differ.' % meta['runs'])
out.append('- cbrfs: `cbrfs backup create`, vault compression zstd (the default). restic: repository version 2, `--compression auto` and `off` (restic always encrypts). borg: `borg init -e none`, `borg create -C lz4` and `-C none`. Tree backups run in the tree\'s parent with the relative path `tree`.')
out.append('- Mount ready: from starting the mount command (`cbrfs mount` returns once ready; `restic mount` and `borg mount -f` run in the background) to the first successful `ls` inside a backup (`MNT/v/b1`, `MNT/ids/*/`, `MNT/b1`). Mount memory: RSS of the serving process (`ps -o rss`) one second after ready, and after the reads (RSS, and its anonymous part `RssAnon` from /proc/PID/status: the rest is mapped pack files, page cache the kernel can drop), and `RssAnon` again 3 s later (cbrfs gives its read cache back after 2 s idle).')
out.append('- Reads through the mount: `find | wc -l`, `du -s`, `cp -a` of the whole tree (out of the restic and borg mounts in the first %s run(s)); `cat >/dev/null` and `cp` of the image (compared with the source by `cmp`). Mounts of restic and borg: their default compression only (`%s`). Restore: `cbrfs restore`, `restic restore ID --target`, `borg extract`.' % (meta['peer_cp_runs'], meta['mount_tools']))
out.append('- Copies and restores are written to a tmpfs (outputs of one step are removed before the next), so the figures are of reading; the sources and repositories are on the disk below.')
out.append('- Native: `cp -a`, `tar -cf - | cat >/dev/null`, `find | wc -l`, `du -s` of the tree; `cat >/dev/null` and `cp` of the image, on the same disk.')
out.append('- Other people\'s builds and tests may have loaded the machine (2 cores) during the run: the load average at the start and end of each section is below.\n')
out.append('## Ratio table\n')
out.append('Medians. `cbrfs/ref` is cbrfs divided by `ref`: the best (lowest; highest for GB/s) of the restic and borg variants, restic with compression auto where the target names restic, or the machine\'s own command. Sizes in MB are 10^6 bytes; memory in MiB.\n')
out.append('```')
out.extend(printed)
out.append('```\n')
out.append('## Targets\n')
out.append(md(['target', 'row', 'cbrfs', 'reference', 'met']))
out.append(md(['---', '---', '---:', '---:', '---']))
for r in table + s3table:
    if r['met']:
        refv = ''
        if r['ref'] == 'native' and r['native']:
            refv = 'native %s' % fmt(r['native'][0], r['unit'])
        elif r['ref'] and r['ref'] in r['peers'] and r['peers'][r['ref']]:
            refv = '%s %s' % (r['ref'], fmt(r['peers'][r['ref']][0], r['unit']))
        ratio = (' (ratio %.2f)' % r['ratio']) if r['ratio'] is not None else ''
        out.append(md([r['target'], r['label'], fmt(r['c'][0], r['unit']) + ratio, refv, r['met']]))
for s in scale:
    out.append(md([s['target'], s['label'], '%s (1 backup: %s)' % (fmt(s['many'][0], s['unit']), fmt(s['one'][0], s['unit']) if s['one'] else '–'), '', s['met']]))
out.append('')
if s3table:
    out.append('## Object storage\n')
    out.append('The tree (above) backed up to S3: cbrfs with a vault in a bucket (`vault create --storage s3://BUCKET/PREFIX --s3-endpoint URL`%s), restic with its own S3 backend (`-r s3:URL/BUCKET/PREFIX`, compression auto; `AWS_DEFAULT_REGION` set, so no location request), on the same SeaweedFS %s cluster (scripts/seaweed.sh: one master, three volume servers with replication 002, one filer, its S3 gateway; all on this machine), a fresh cluster each run, both tools in it, the order reversed every other run.\n'
               % (', encrypted like restic\'s' if meta.get('s3_encrypt', '1') == '1' else ', not encrypted', meta.get('seaweedfs', '')))
    out.append('- Each run and tool: first backup (`b1`), unchanged re-backup (`b2`), the changed variant, changed re-backup (`b3`); the bytes under the prefix (the filer\'s listing); restore of `b1` with an **empty cache**; a mount with an empty cache (ready time as above, then `find | wc -l` of `b1`), the same mount again with the **warm cache** it left (ready time); a mount with an empty cache and `cp -a` of `b1` out of it.')
    out.append('- Empty cache: cbrfs\'s vault directory emptied of all but `vault.json` and local state (README: the cache may be deleted at any time); restic\'s `--cache-dir` removed. The page cache is dropped before every step, as above.')
    out.append('- Requests and bytes: one more run (%s) with `tests/common/faultproxy.py --mode pass --log` between each tool and the gateway, which forwards every request and streams every answer unchanged and logs method, kind, status and body bytes of each; LIST is a GET that lists (objects, uploads, parts, buckets). "Packs" counts the PUTs under cbrfs\'s `packs/` and restic\'s `data/`. The times in the tables are those of the direct runs; the proxy\'s cost is its run\'s times beside theirs.\n'
               % ('done' if meta.get('s3_count', '1') == '1' else 'not done: BENCH_S3_COUNT=0'))
    out.append('```')
    out.extend(s3printed)
    out.append('```\n')
    out.append('Median (min–max) of %s runs:\n' % meta['runs'])
    out.append(md(['row', 'cbrfs'] + S3PEERS))
    out.append(md(['---'] + ['---:'] * (len(S3PEERS) + 1)))
    for r in s3table:
        out.append(md([r['label'], cell(r['c'], r['unit'])] + [cell(r['peers'][p], r['unit']) for p in S3PEERS]))
    out.append('')
    if s3req:
        out.append('### Requests and bytes per operation\n')
        out.append('From the counting run (one run). MB are 10^6 bytes of request and answer bodies. "(own count)": what cbrfs counted itself for the command\'s task (`task list --json`, `requests`: PUT with POST, GET with HEAD), beside the proxy\'s.\n')
        out.append(md(['operation', 'tool'] + list(S3_KINDS[:-1]) + ['all', 'packs PUT', 'MB up', 'MB down']))
        out.append(md(['---', '---'] + ['---:'] * (len(S3_KINDS) + 3)))
        for x in s3req:
            out.append(md(x))
        out.append('')
    if s3cost:
        out.append('### The counting proxy\'s cost\n')
        out.append('The counting run\'s times (one run, through the proxy) against the direct runs\' medians.\n')
        out.append(md(['operation', 'tool', 'direct', 'through the proxy', 'ratio']))
        out.append(md(['---', '---', '---:', '---:', '---:']))
        for x in s3cost:
            out.append(md(x))
        out.append('')
out.append('## All figures\n')
out.append('Median (min–max) of %s runs.\n' % meta['runs'])
out.append(md(['row'] + ['cbrfs'] + PEERS + ['native']))
out.append(md(['---'] + ['---:'] * (len(PEERS) + 2)))
for r in table:
    out.append(md([r['label'], cell(r['c'], r['unit'])] + [cell(r['peers'][p], r['unit']) for p in PEERS] + [cell(r['native'], r['unit'])]))
for s in scale:
    out.append(md([s['label'], cell(s['many'], s['unit'])] + ['–'] * len(PEERS) + ['–']))
out.append('')
extra = [('native: tar -cf - tree | cat, s', 'tree', 'native', 'tar_cat.wall_s', 's'),
         ('native: cat of the image, GB/s', 'image', 'native', 'cat.gbps', 'GB/s'),
         ('entries seen by find in the mount', 'tree', None, 'mnt_find_entries', ''),
         ('du -s in the mount, KiB', 'tree', None, 'mnt_du_kib', ''),
         ('entries copied by cp -a from the mount', 'tree', None, 'mnt_cp_a_entries', ''),
         ('entries restored', 'tree', None, 'restore_entries', '')]
out.append(md(['check', 'values']))
out.append(md(['---', '---']))
for label, ds, tool, metric, unit in extra:
    if tool:
        s = stat(ds, tool, metric)
        out.append(md([label, cell(s, unit)]))
    else:
        parts = []
        for t in TOOLS:
            s = stat(ds, t, metric)
            if s:
                parts.append('%s %d' % (t, s[0]))
        out.append(md([label, ', '.join(parts)]))
sr = stat('tree', 'cbrfs', 'scale_repo_bytes')
if sr:
    out.append(md(['cbrfs store after %s backups, MB' % n, fmt(sr[0], 'MB')]))
out.append('')
out.append('## Load average\n')
out.append(md(['section', 'start (1, 5, 15 min)', 'end', 'duration s']))
out.append(md(['---', '---', '---', '---:']))
start = {}
for name, edge, ts, la in loads:
    if edge == 'start':
        start[name] = (int(ts), la)
    else:
        t0, la0 = start.get(name, (int(ts), ''))
        out.append(md([name, la0, la, str(int(ts) - t0)]))
out.append('')
if BASE:
    out.append('## Against the baseline\n')
    out.append('cbrfs (`%s`) against cbrfs built from `%s` (`cbrfs-base`), measured in the same runs, alternating which goes first. Ratio: cbrfs / base (for GB/s, base / cbrfs), so above 1 is slower. Rows of time and memory over 1.03 are flagged.\n' % (meta['cbrfs'], meta.get('baseline', '?')))
    out.append(md(['row', 'cbrfs', 'cbrfs-base', 'ratio', 'slower > 3 %']))
    out.append(md(['---', '---:', '---:', '---:', '---']))
    for r in table + s3table:
        b = stat(r['ds'], 'cbrfs-base', r['metric'])
        if not r['c'] or not b or not b[0]:
            continue
        q = (b[0] / r['c'][0]) if r['metric'].endswith('gbps') else (r['c'][0] / b[0])
        out.append(md([r['label'], cell(r['c'], r['unit']), cell(b, r['unit']), '%.3f' % q, 'yes' if q > 1.03 else '']))
    out.append('')
if ENC:
    out.append('## Encrypted vault\n')
    out.append('cbrfs on an encrypted vault (`cbrfs-enc`: `vault create --encrypt`, the password in `CBRFS_PASSWORD`) against the unencrypted vault (`cbrfs`), measured in the same runs. Ratio: encrypted / plain (for GB/s, plain / encrypted), so above 1 is slower; target (issue 15): within 10 %% on every row, and backups still at most 0.5x restic (which always encrypts).%s\n'
               % (' `cbrfs-enckf`: the same encrypted vault with a key-file slot added (`vault key add --new-key-file`), every command run with `--key-file`: the same sealing and keyed ids, without the password\'s argon2id (m = 64 MiB, t = 3, p = 4), which every command on a password pays once. The unlock rows are `vault show v` alone: on the plain vault it reads the settings, on the encrypted ones it also unlocks the vault.' if ENCKF else ''))
    # The unlock's own cost: rows of the encrypted section only (the peers
    # have no such step).
    enc_rows = []
    for ds in [d for d in ('tree', 'image', 'binimg') if d in DSETS]:
        dname = {'binimg': 'binaries image'}.get(ds, ds)
        for metric, unit, what in (('unlock.wall_s', 's', 'wall s'), ('unlock.cpu_s', 's', 'CPU s'),
                                   ('unlock.rss_kib', 'MiB', 'peak RSS MiB')):
            enc_rows.append(dict(label='%s: unlock (vault show), %s' % (dname, what), ds=ds, metric=metric,
                                 unit=unit, c=stat(ds, 'cbrfs', metric)))
    head = ['row', 'cbrfs', 'cbrfs-enc', 'enc/plain', 'within 10 %']
    if ENCKF:
        head += ['cbrfs-enckf', 'enckf/plain', 'within 10 %']
    out.append(md(head + ['enc/restic-auto']))
    out.append(md(['---', '---:', '---:', '---:', '---'] + (['---:', '---:', '---'] if ENCKF else []) + ['---:']))
    def vs_plain(r, e):
        if not e or not e[0]:
            return None
        gbps = r['metric'].endswith('gbps')
        return (r['c'][0] / e[0]) if gbps else (e[0] / r['c'][0])
    for r in table + enc_rows:
        e = stat(r['ds'], 'cbrfs-enc', r['metric'])
        k = stat(r['ds'], 'cbrfs-enckf', r['metric']) if ENCKF else None
        if not r['c'] or not r['c'][0] or not ((e and e[0]) or (k and k[0])):
            continue
        gbps = r['metric'].endswith('gbps')
        q = vs_plain(r, e)
        ra = stat(r['ds'], 'restic-auto', r['metric'])
        vs = ''
        if ra and ra[0] and e and e[0]:
            rq = (ra[0] / e[0]) if gbps else (e[0] / ra[0])
            backup = r['metric'].split('.')[0] in ('first', 'unchanged') and r['metric'].endswith('wall_s')
            vs = '%.2f%s' % (rq, (' (<= 0.5: %s)' % ('yes' if rq <= 0.5 else 'no')) if backup else '')
        cells = [r['label'], cell(r['c'], r['unit']), cell(e, r['unit']),
                 '–' if q is None else '%.3f' % q, '' if q is None else ('yes' if q <= 1.10 else 'no')]
        if ENCKF:
            kq = vs_plain(r, k)
            cells += [cell(k, r['unit']), '–' if kq is None else '%.3f' % kq,
                      '' if kq is None else ('yes' if kq <= 1.10 else 'no')]
        out.append(md(cells + [vs]))
    out.append('')
out.append('## Notes\n')
out.append('<!-- notes -->')
out.append(old_notes.rstrip('\n'))
out.append('<!-- /notes -->\n')
out.append('## Re-running\n')
out.append('```sh')
out.append('sudo scripts/bench.sh                      # full data, %s runs: this one took %s min' % (meta['runs'], meta['total_min']))
out.append('sudo BENCH_QUICK=1 BENCH_RUNS=1 scripts/bench.sh   # a subset, to check the script')
out.append('```\n')
out.append('As root: it installs restic, borgbackup, linux-source, fuse3 and time with apt-get when missing, builds cbrfs in release mode, and works in `BENCH_DIR` (default `/var/tmp/cbrfs-bench`, about 15 GB). Other settings (`BENCH_TOOLS`, `BENCH_MOUNT_TOOLS`, `BENCH_DATASETS`, `BENCH_S3_TOOLS`, `BENCH_S3_ENCRYPT`, `BENCH_S3_COUNT`, `BENCH_IMAGE_MB`, `BENCH_SCALE`, `BENCH_SEED`, `BENCH_DOC`) are described at the top of the script. This run: `%s`. Raw figures: `BENCH_DIR/results.tsv`; every command and its output: `BENCH_DIR/commands.log`.\n' % meta['cmdline'])
os.makedirs(os.path.dirname(os.path.abspath(DOC)), exist_ok=True)
open(DOC, 'w').write('\n'.join(out))
PY
}
if [ "${BENCH_REPORT_ONLY:-0}" = 1 ]; then report; exit 0; fi

# ---------------------------------------------------------------- install
need=()
command -v restic >/dev/null || need+=(restic)
command -v borg >/dev/null || need+=(borgbackup)
/usr/bin/python3 -c 'import llfuse' 2>/dev/null || need+=(python3-llfuse)
[ -x /usr/bin/time ] || need+=(time)
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
command -v python3 >/dev/null || need+=(python3)
ls /usr/src/linux-source-*.tar.xz >/dev/null 2>&1 || need+=(linux-source)
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
KTAR=$(ls /usr/src/linux-source-*.tar.xz | sort -V | tail -1)
S3=0
case " $DATASETS " in *" s3 "*) S3=1 ;; esac
if [ "$S3" = 1 ]; then
	# Room for a kernel tree per tool on every volume server (each holds
	# a copy of every object: replication 002).
	SEAWEED_VOLUME_MAX=${SEAWEED_VOLUME_MAX:-200}
	# The cluster's functions (seaweed_start, seaweed_stop) and its pinned
	# engine, installed once into a cached venv.
	. "$REPO/scripts/seaweed.sh"
	SEAWEED_BUCKET=cbrfs-bench
	log "installing SeaweedFS $SEAWEED_VERSION (scripts/seaweed.sh)"
	seaweed_install || { echo "cannot install SeaweedFS (scripts/seaweed.sh install)" >&2; exit 1; }
fi

log "building cbrfs (release)"
cargo build --release --quiet
mkdir -p "$W/bin"
cp "${CARGO_TARGET_DIR:-target}/release/cbrfs" "$W/bin/cbrfs"
CBRFS=$W/bin/cbrfs
BASELINE=${BENCH_BASELINE:-}
if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
	cp "$BENCH_BASELINE_BIN" "$W/bin/cbrfs-base"
	BASELINE=${BASELINE:-$BENCH_BASELINE_BIN}
elif [ -n "$BASELINE" ]; then
	log "building the baseline $BASELINE (release)"
	rm -rf "$W/base-src"
	mkdir -p "$W/base-src"
	git archive "$BASELINE" | tar -x -C "$W/base-src"
	(cd "$W/base-src" && CARGO_TARGET_DIR="$W/base-target" cargo build --release --quiet)
	cp "$W/base-target/release/cbrfs" "$W/bin/cbrfs-base"
fi
if [ -n "$BASELINE" ]; then
	TOOLS="$TOOLS cbrfs-base"
	case " $MOUNT_TOOLS " in *" cbrfs "*) MOUNT_TOOLS="$MOUNT_TOOLS cbrfs-base" ;; esac
	# On S3 too, when the baseline has S3 vaults.
	case " $S3_TOOLS " in *" cbrfs "*)
		if "$W/bin/cbrfs-base" vault create --help 2>/dev/null | grep -q -- '--storage'; then
			S3_TOOLS="$S3_TOOLS cbrfs-base"
		fi ;;
	esac
fi
# bin_of TOOL: the cbrfs binary a cbrfs tool runs.
bin_of() { if [ "$1" = cbrfs-base ]; then echo "$W/bin/cbrfs-base"; else echo "$CBRFS"; fi; }
# enc_of TOOL: the vault option of a cbrfs tool (cbrfs-enc, cbrfs-enckf:
# encrypted).
enc_of() { case $1 in cbrfs-enc | cbrfs-enckf) echo --encrypt ;; esac; }
# kf_of TOOL: the option every command of a cbrfs tool gets (cbrfs-enckf:
# the key file of its vault's key-file slot; a path without spaces).
KEYFILE=$W/bench.key
kf_of() { if [ "$1" = cbrfs-enckf ]; then echo --key-file "$KEYFILE"; fi; }
# 64 random bytes, the key file's suggested form (README).
[ -s "$KEYFILE" ] || { head -c 64 /dev/urandom >"$KEYFILE" && chmod 600 "$KEYFILE"; }

export RESTIC_PASSWORD=bench
# The password of cbrfs-enc's vaults (every cbrfs command and its mount
# daemon read it; unencrypted vaults ignore it).
export CBRFS_PASSWORD=bench
export BORG_BASE_DIR=$W/borg-base
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
export BORG_DELETE_I_KNOW_WHAT_I_AM_DOING=YES

SRC=$W/src
RES=$W/results.tsv
LOAD=$W/load.tsv
CMDLOG=$W/commands.log
MNT=$W/mnt
mkdir -p "$SRC" "$MNT" "$W/repo" "$W/out"
# Copies and restores go to a tmpfs: the figures are of reading, the shared
# disk's write-back does not spill into the next step, and removing a copy
# of 78,000 files between steps takes a second.
mountpoint -q "$W/out" || mount -t tmpfs -o size=10g,mode=0755 cbrfs-bench-out "$W/out"
: >"$RES"
: >"$LOAD"
: >"$CMDLOG"

# ---------------------------------------------------------------- cleanup
BG_PIDS=()
cleanup() {
	set +e
	if mountpoint -q "$MNT"; then
		"$CBRFS" umount "$MNT" >/dev/null 2>&1 || fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT"
	fi
	for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	# The S3 section's cluster (only the PIDs it started).
	[ -n "${SEAWEED_DIR:-}" ] && seaweed_stop
	grep -qs " $MNT " /proc/self/mountinfo && fusermount3 -uz "$MNT"
	mountpoint -q "$W/out" && umount "$W/out"
	# Leave the source data as it was.
	[ -d "$W/stash-tree" ] && python3 "$W/mutate.py" tree-revert "$SRC/tree" "$W/stash-tree"
	[ -d "$W/stash-image" ] && python3 "$W/mutate.py" image-revert "$SRC/disk.img" "$W/stash-image"
	[ -d "$W/stash-binimg" ] && python3 "$W/mutate.py" image-revert "$SRC/bin.img" "$W/stash-binimg"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$RES"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
section() { # NAME start|end
	printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$(date +%s)" "$(loadavg)" >>"$LOAD"
	log "$1 $2 (load average $(loadavg))"
}
now_ns() { date +%s%N; }

# timed DATASET TOOL STEP RUN CMD...: drop the page cache, run CMD under
# /usr/bin/time, record wall seconds, CPU seconds (user+sys) and peak RSS (KiB).
timed() {
	local ds=$1 tool=$2 step=$3 run=$4
	shift 4
	drop
	echo "+ [$(date +%T)] $*" >>"$CMDLOG"
	if ! /usr/bin/time -f '%e %U %S %M' -o "$W/time.out" "$@" >>"$CMDLOG" 2>&1; then
		echo "FAILED: $*" >&2
		tail -20 "$CMDLOG" >&2
		exit 1
	fi
	local e u s m
	read -r e u s m < <(tail -1 "$W/time.out")
	rec "$ds" "$tool" "$step.wall_s" "$run" "$e"
	rec "$ds" "$tool" "$step.cpu_s" "$run" "$(python3 -c "print(round($u+$s,2))")"
	rec "$ds" "$tool" "$step.rss_kib" "$run" "$m"
}

# ---------------------------------------------------------------- mutations
cat >"$W/mutate.py" <<'PY'
"""Deterministic changed variants of the tree and the image, and their undo.

tree-change ROOT SEED STASH: about 1 % of the regular files modified (half
get bytes appended, half a few bytes overwritten in place), 0.2 % removed and
0.2 % added; the originals go to STASH so that tree-revert puts them back.
image-change IMG SEED STASH: 1 % of the 4 KiB blocks overwritten with random
bytes; the old blocks go to STASH. scale-step ROOT SEED STEP STASH: 5 files
get a line appended (originals stashed once).
"""
import json, os, random, shutil, string, sys

def files_of(root):
    out = []
    for d, dirs, fs in os.walk(root):
        dirs.sort()
        for f in sorted(fs):
            p = os.path.join(d, f)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(os.path.relpath(p, root))
    return out

def stash_file(root, stash, rel, man):
    dst = os.path.join(stash, 'files', rel)
    if os.path.exists(dst) or rel in man['added']:
        return
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.copy2(os.path.join(root, rel), dst)
    man['stashed'].append(rel)

def load_man(stash):
    p = os.path.join(stash, 'manifest.json')
    if os.path.exists(p):
        return json.load(open(p))
    os.makedirs(stash, exist_ok=True)
    return {'stashed': [], 'added': []}

def save_man(stash, man):
    json.dump(man, open(os.path.join(stash, 'manifest.json'), 'w'))

def text(rng, n):
    words = [''.join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(200)]
    out, size = [], 0
    while size < n:
        line = ' '.join(rng.choices(words, k=rng.randint(3, 12))) + ';\n'
        out.append(line)
        size += len(line)
    return ''.join(out)[:n].encode()

def tree_change(root, seed, stash):
    rng = random.Random(seed)
    files = files_of(root)
    n = len(files)
    k_mod, k_rm, k_add = max(1, n // 100), max(1, n // 500), max(1, n // 500)
    picked = rng.sample(files, k_mod + k_rm)
    mod, rm = picked[:k_mod], picked[k_mod:]
    man = load_man(stash)
    changed = 0
    for rel in mod + rm:
        stash_file(root, stash, rel, man)
    for rel in mod:
        p = os.path.join(root, rel)
        size = os.path.getsize(p)
        data = rng.randbytes(rng.randint(1, 64))
        if size == 0 or rng.random() < 0.5:
            with open(p, 'ab') as f:
                f.write(data)
        else:
            off = rng.randrange(size)
            data = data[:size - off]
            with open(p, 'r+b') as f:
                f.seek(off)
                f.write(data)
        changed += len(data)
    for rel in rm:
        os.remove(os.path.join(root, rel))
    dirs = sorted({os.path.dirname(f) for f in files})
    added = 0
    for i in range(k_add):
        rel = os.path.join(rng.choice(dirs), 'bench-added-%d.c' % i)
        data = text(rng, rng.randint(100, 40000))
        with open(os.path.join(root, rel), 'wb') as f:
            f.write(data)
        man['added'].append(rel)
        added += len(data)
    save_man(stash, man)
    print('files %d: modified %d (%d bytes), removed %d, added %d (%d bytes)'
          % (n, k_mod, changed, k_rm, k_add, added))

def scale_step(root, seed, step, stash):
    rng = random.Random(seed * 1000 + step)
    man = load_man(stash)
    cache = os.path.join(stash, 'files.json')
    if os.path.exists(cache):
        files = json.load(open(cache))
    else:
        files = files_of(root)
        json.dump(files, open(cache, 'w'))
    for rel in rng.sample(files, 5):
        stash_file(root, stash, rel, man)
        with open(os.path.join(root, rel), 'ab') as f:
            f.write(b'/* scale step %d */\n' % step)
    save_man(stash, man)

def tree_revert(root, stash):
    man = load_man(stash)
    for rel in man['added']:
        p = os.path.join(root, rel)
        if os.path.exists(p):
            os.remove(p)
    for rel in man['stashed']:
        shutil.copy2(os.path.join(stash, 'files', rel), os.path.join(root, rel))
    shutil.rmtree(stash)

def image_change(img, seed, stash):
    rng = random.Random(seed)
    size = os.path.getsize(img)
    nblocks = size // 4096
    blocks = sorted(rng.sample(range(nblocks), nblocks // 100))
    os.makedirs(stash, exist_ok=True)
    with open(img, 'r+b') as f, open(os.path.join(stash, 'blocks'), 'wb') as s:
        for b in blocks:
            f.seek(b * 4096)
            s.write(b.to_bytes(8, 'little') + f.read(4096).ljust(4096, b'\0'))
        for b in blocks:
            f.seek(b * 4096)
            f.write(rng.randbytes(4096))
    print('blocks %d: overwritten %d (%d bytes)' % (nblocks, len(blocks), len(blocks) * 4096))

def image_revert(img, stash):
    with open(img, 'r+b') as f, open(os.path.join(stash, 'blocks'), 'rb') as s:
        while True:
            rec = s.read(8 + 4096)
            if not rec:
                break
            f.seek(int.from_bytes(rec[:8], 'little') * 4096)
            f.write(rec[8:])
    shutil.rmtree(stash)

cmd = sys.argv[1]
if cmd == 'tree-change':
    tree_change(sys.argv[2], int(sys.argv[3]), sys.argv[4])
elif cmd == 'tree-revert':
    tree_revert(sys.argv[2], sys.argv[3])
elif cmd == 'image-change':
    image_change(sys.argv[2], int(sys.argv[3]), sys.argv[4])
elif cmd == 'image-revert':
    image_revert(sys.argv[2], sys.argv[3])
elif cmd == 'scale-step':
    scale_step(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
else:
    sys.exit('unknown command ' + cmd)
PY

# ---------------------------------------------------------------- data
# A run interrupted half-way may have left a changed variant: undo it.
[ -d "$W/stash-tree" ] && python3 "$W/mutate.py" tree-revert "$SRC/tree" "$W/stash-tree"
[ -d "$W/stash-image" ] && python3 "$W/mutate.py" image-revert "$SRC/disk.img" "$W/stash-image"
[ -d "$W/stash-binimg" ] && python3 "$W/mutate.py" image-revert "$SRC/bin.img" "$W/stash-binimg"

want="$(basename "$KTAR") quick=$QUICK"
if [ "$(cat "$SRC/tree.stamp" 2>/dev/null)" != "$want" ]; then
	log "unpacking $KTAR (quick=$QUICK)"
	rm -rf "$SRC/tree" "$SRC/disk.img" "$SRC/tree.stamp" "$SRC/image.stamp"
	mkdir -p "$SRC/tree"
	top=$(basename "$KTAR" .tar.xz)
	if [ "$QUICK" = 1 ]; then
		tar -xJf "$KTAR" -C "$SRC/tree" --strip-components=1 "$top/fs" "$top/Documentation"
	else
		tar -xJf "$KTAR" -C "$SRC/tree" --strip-components=1
	fi
	echo "$want" >"$SRC/tree.stamp"
fi
want_img="$want image=${IMAGE_MB}M of $IMAGE_TREE"
if [ "$(cat "$SRC/image.stamp" 2>/dev/null)" != "$want_img" ]; then
	log "making a ${IMAGE_MB} MiB ext4 image of the tree (mke2fs -t ext4 -d)"
	rm -f "$SRC/disk.img"
	E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 4096 \
		-U 6a2c2b8e-5f55-4c57-9d5e-0b9e7a1c0001 \
		-E hash_seed=6a2c2b8e-5f55-4c57-9d5e-0b9e7a1c0002,root_owner=0:0 \
		-d "$SRC/tree/$IMAGE_TREE" "$SRC/disk.img" "${IMAGE_MB}M"
	echo "$want_img" >"$SRC/image.stamp"
fi
TREE_FILES=$(find "$SRC/tree" -type f | wc -l)
TREE_ENTRIES=$(find "$SRC/tree" | wc -l)
TREE_BYTES=$(du -sb "$SRC/tree" | cut -f1)
TREE_DU=$(du -s "$SRC/tree" | cut -f1)
IMG_BYTES=$(stat -c %s "$SRC/disk.img")
IMG_ALLOC=$(($(stat -c %b "$SRC/disk.img") * $(stat -c %B "$SRC/disk.img")))
log "tree: $TREE_FILES files, $TREE_ENTRIES entries, $TREE_BYTES bytes; image: $IMG_BYTES bytes ($IMG_ALLOC allocated)"

# The binaries image: the files of fixed Debian packages (compiled programs
# and libraries), in an ext4 image just large enough for them (a 5 % margin
# and room for the journal and inode tables), written out without holes.
BIN_BYTES=
case " $DATASETS " in *" binimg "*)
	want_bin="binimg $(echo "$BINIMG_PKGS" | md5sum | cut -c1-12) quick=$QUICK"
	if [ "$(cat "$SRC/binimg.stamp" 2>/dev/null)" != "$want_bin" ]; then
		log "making the binaries image from: $BINIMG_PKGS"
		rm -rf "$SRC/bin.img" "$SRC/bin-tree" "$W/debs"
		mkdir -p "$W/debs" "$SRC/bin-tree"
		pkgs=$BINIMG_PKGS
		# QUICK: the first three packages only.
		[ "$QUICK" = 1 ] && pkgs=$(echo "$BINIMG_PKGS" | tr ' ' '\n' | head -3 | tr '\n' ' ')
		# shellcheck disable=SC2086
		(cd "$W/debs" && apt-get download -qq $pkgs)
		for d in "$W/debs"/*.deb; do
			dpkg-deb -x "$d" "$SRC/bin-tree"
			dpkg-deb -f "$d" Package Version | tr '\n' ' ' >>"$W/debs/versions.txt"
			echo >>"$W/debs/versions.txt"
		done
		kib=$(du -sk "$SRC/bin-tree" | cut -f1)
		mib=$((kib * 105 / 100 / 1024 + 96))
		E2FSPROGS_FAKE_TIME=1700000000 mke2fs -q -F -t ext4 -b 4096 \
			-U 6a2c2b8e-5f55-4c57-9d5e-0b9e7a1c0003 \
			-E hash_seed=6a2c2b8e-5f55-4c57-9d5e-0b9e7a1c0004,root_owner=0:0 \
			-d "$SRC/bin-tree" "$SRC/bin.sparse" "${mib}M"
		cp --sparse=never "$SRC/bin.sparse" "$SRC/bin.img"
		rm -f "$SRC/bin.sparse"
		echo "$want_bin" >"$SRC/binimg.stamp"
	fi
	BIN_BYTES=$(stat -c %s "$SRC/bin.img")
	BIN_ALLOC=$(($(stat -c %b "$SRC/bin.img") * $(stat -c %B "$SRC/bin.img")))
	log "binaries image: $BIN_BYTES bytes ($BIN_ALLOC allocated)"
	;;
esac

# ---------------------------------------------------------------- meta
{
	echo "date=$(date -u +%FT%TZ)"
	echo "nproc=$(nproc)"
	echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
	echo "mem=$(free -b | awk '/^Mem:/ {print $2}')"
	echo "kernel=$(uname -r)"
	echo "disk=$(df -h --output=source,fstype,size,avail "$W" | tail -1 | tr -s ' ')"
	echo "cbrfs=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock || echo '+dirty')"
	echo "cbrfs_subject=$(git log -1 --format=%s)"
	echo "restic=$(restic version | head -1)"
	echo "borg=$(borg --version)"
	echo "rustc=$(rustc --version)"
	echo "ksrc=$(basename "$KTAR")"
	echo "quick=$QUICK"
	echo "runs=$RUNS"
	echo "seed=$SEED"
	echo "tree_files=$TREE_FILES"
	echo "tree_entries=$TREE_ENTRIES"
	echo "tree_bytes=$TREE_BYTES"
	echo "tree_du_kib=$TREE_DU"
	echo "image_bytes=$IMG_BYTES"
	echo "image_alloc=$IMG_ALLOC"
	echo "image_tree=$IMAGE_TREE"
	echo "image_tree_files=$(find "$SRC/tree/$IMAGE_TREE" -type f | wc -l)"
	echo "image_tree_bytes=$(du -sb "$SRC/tree/$IMAGE_TREE" | cut -f1)"
	if [ -n "$BIN_BYTES" ]; then
		echo "binimg_bytes=$BIN_BYTES"
		echo "binimg_alloc=$BIN_ALLOC"
		echo "binimg_tree_files=$(find "$SRC/bin-tree" -type f | wc -l)"
		echo "binimg_tree_bytes=$(du -sb "$SRC/bin-tree" | cut -f1)"
		echo "binimg_pkgs=$BINIMG_PKGS"
	fi
	echo "peer_cp_runs=$PEER_CP_RUNS"
	echo "scale_n=$SCALE_N"
	echo "tools=$TOOLS"
	echo "baseline=$BASELINE"
	echo "mount_tools=$MOUNT_TOOLS"
	echo "datasets=$DATASETS"
	echo "s3_tools=$S3_TOOLS"
	echo "s3_encrypt=$S3_ENCRYPT"
	echo "s3_count=$S3_COUNT"
	[ "$S3" = 1 ] && echo "seaweedfs=$SEAWEED_VERSION"
	echo "start_epoch=$START"
	echo "cmdline=$(env | grep '^BENCH_' | sort | tr '\n' ' ')scripts/bench.sh"
} >"$W/meta.txt"

# ---------------------------------------------------------------- tools
# item DATASET: the path backed up, relative to $SRC.
# (s3 backs up the tree's data.)
item() { case $1 in tree | s3) echo tree ;; binimg) echo bin.img ;; *) echo disk.img ;; esac; }
# repo_of TOOL DATASET: the repository (for cbrfs, the store); restic's on
# S3 is a URL on the current cluster ($S3_EP: the gateway, or the counting
# proxy in front of it).
repo_of() {
	case $2/$1 in
	s3/restic-*) echo "s3:$S3_EP/$SEAWEED_BUCKET/bench/$1" ;;
	*) echo "$W/repo/$1-$2" ;;
	esac
}

tool_init() { # TOOL DATASET
	local r
	r=$(repo_of "$1" "$2")
	case $r in s3:*) ;; *) rm -rf "$r" ;; esac
	rm -rf "$W/cache-$1-$2" "$BORG_BASE_DIR"
	case $1 in
	cbrfs | cbrfs-base | cbrfs-enc | cbrfs-enckf)
		local b
		b=$(bin_of "$1")
		if [ "$2" = s3 ]; then
			# shellcheck disable=SC2046 # zero or one option
			"$b" --store "$r" vault create v --type filesystem --capacity 10000GB \
				--storage "s3://$SEAWEED_BUCKET/bench/$1" --s3-endpoint "$S3_EP" $(s3_encrypt_opt "$b")
			"$b" --store "$r" vault associate v --path "$SRC/tree" --name tree
		elif [ "$2" = tree ]; then
			"$b" --store "$r" vault create v --type filesystem --capacity 10000GB $(enc_of "$1")
			"$b" --store "$r" vault associate v --path "$SRC/tree" --name tree
		else
			"$b" --store "$r" vault create v --type disk --capacity 10000GB $(enc_of "$1")
			"$b" --store "$r" vault associate v --disk "$SRC/$(item "$2")" --name disk
		fi
		# cbrfs-enckf: the vault made with the password as cbrfs-enc's, then a
		# key-file slot added, as a scheduled job's setup would (README).
		if [ "$1" = cbrfs-enckf ]; then "$b" --store "$r" vault key add v --new-key-file "$KEYFILE"; fi ;;
	restic-*) restic -r "$r" --cache-dir "$W/cache-$1-$2" init --repository-version 2 ;;
	borg-*) borg init -e none "$r" ;;
	esac >>"$CMDLOG" 2>&1
}

# tool_backup TOOL DATASET NAME: the command line of a backup named NAME.
tool_backup() {
	local r
	r=$(repo_of "$1" "$2")
	case $1 in
	cbrfs | cbrfs-base | cbrfs-enc | cbrfs-enckf) echo "$(bin_of "$1")" $(kf_of "$1") --store "$r" backup create v --name "$3" ;;
	restic-auto | restic-off)
		echo restic -r "$r" --cache-dir "$W/cache-$1-$2" --compression "${1#restic-}" \
			backup --host bench --tag "$3" "$(item "$2")" ;;
	borg-lz4 | borg-none) echo borg create -C "${1#borg-}" "$r::$3" "$(item "$2")" ;;
	esac
}

restic_id() { # TOOL DATASET TAG: the short id of the snapshot tagged TAG
	restic -r "$(repo_of "$1" "$2")" --cache-dir "$W/cache-$1-$2" snapshots --tag "$3" --json |
		python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["short_id"])'
}

# tool_restore TOOL DATASET NAME DEST
tool_restore() {
	local r
	r=$(repo_of "$1" "$2")
	case $1 in
	cbrfs | cbrfs-base | cbrfs-enc | cbrfs-enckf)
		if [ "$2" = tree ] || [ "$2" = s3 ]; then echo "$(bin_of "$1")" $(kf_of "$1") --store "$r" restore v "$3" --to "$4"
		else echo "$(bin_of "$1")" $(kf_of "$1") --store "$r" restore v "$3" --resource disk --to "$4/$(item "$2")"; fi ;;
	restic-*) echo restic -r "$r" --cache-dir "$W/cache-$1-$2" restore "$(restic_id "$1" "$2" "$3")" --target "$4" ;;
	borg-*) echo "cd '$4' && borg extract '$r::$3'" ;;
	esac
}

MOUNT_PID=
# tool_mount TOOL DATASET: mount the repository at $MNT, return once the
# mount answers (cbrfs) or at once (restic, borg: they serve in the
# foreground, in the background here). Sets MOUNT_PID.
tool_mount() {
	local r
	r=$(repo_of "$1" "$2")
	case $1 in
	cbrfs | cbrfs-base | cbrfs-enc | cbrfs-enckf)
		local out
		# shellcheck disable=SC2046 # zero or two words
		out=$("$(bin_of "$1")" $(kf_of "$1") --store "$r" mount "$MNT")
		MOUNT_PID=$(printf '%s' "$out" | sed -n 's/.*daemon pid \([0-9]*\).*/\1/p')
		[ -n "$MOUNT_PID" ] || MOUNT_PID=$(pgrep -f "mount $MNT --foreground" | head -1) ;;
	restic-*)
		restic -r "$r" --cache-dir "$W/cache-$1-$2" mount "$MNT" >>"$CMDLOG" 2>&1 &
		MOUNT_PID=$! ;;
	borg-*)
		borg mount -f "$r" "$MNT" >>"$CMDLOG" 2>&1 &
		MOUNT_PID=$! ;;
	esac
	BG_PIDS+=("$MOUNT_PID")
}

tool_umount() { # TOOL
	case $1 in
	cbrfs | cbrfs-base | cbrfs-enc | cbrfs-enckf) "$(bin_of "$1")" umount "$MNT" >>"$CMDLOG" 2>&1 ;;
	*)
		fusermount3 -u "$MNT" 2>>"$CMDLOG" || { sleep 1; fusermount3 -u "$MNT"; }
		wait "$MOUNT_PID" 2>/dev/null || true ;;
	esac
	local i
	for i in $(seq 50); do kill -0 "$MOUNT_PID" 2>/dev/null || break; sleep 0.1; done
	MOUNT_PID=
}

# inside TOOL DATASET NAME: the path of the backup's data inside the mount
# (the tree's root directory, or the image file).
inside() {
	case $1 in
	cbrfs | cbrfs-base | cbrfs-enc | cbrfs-enckf) if [ "$2" = tree ] || [ "$2" = s3 ]; then echo "$MNT/v/$3/tree"; else echo "$MNT/v/$3/disk.img"; fi ;; # the resource is named disk
	restic-*) echo "$MNT/ids/$(restic_id "$1" "$2" "$3")/$(item "$2")" ;;
	borg-*) echo "$MNT/$3/$(item "$2")" ;;
	esac
}

rss_kib() { ps -o rss= -p "$1" | tr -d ' '; }

# ---------------------------------------------------------------- native
section native start
for run in $(seq "$RUNS"); do
	rm -rf "$W/out/native"
	timed tree native cp_a "$run" cp -a "$SRC/tree" "$W/out/native"
	rm -rf "$W/out/native"
	timed tree native tar_cat "$run" bash -c "tar -C '$SRC' -cf - tree | cat >/dev/null"
	timed tree native find "$run" bash -c "find '$SRC/tree' | wc -l"
	timed tree native du "$run" du -s "$SRC/tree"
	for ds in $DATASETS; do
		case $ds in tree | s3) continue ;; esac # (s3: the tree's data)
		timed "$ds" native cat "$run" bash -c "cat '$SRC/$(item "$ds")' >/dev/null"
		timed "$ds" native cp "$run" cp "$SRC/$(item "$ds")" "$W/out/native.img"
		rm -f "$W/out/native.img"
	done
done
section native end

# ---------------------------------------------------------------- backups
# Each run: a fresh repository, a first backup, an unchanged re-backup, the
# changed variant and a changed re-backup; then the repository's size, and
# the data put back as it was.
change() { # DATASET
	if [ "$1" = tree ]; then python3 "$W/mutate.py" tree-change "$SRC/tree" "$SEED" "$W/stash-tree"
	else python3 "$W/mutate.py" image-change "$SRC/$(item "$1")" "$SEED" "$W/stash-$1"; fi
}
revert() { # DATASET
	if [ "$1" = tree ]; then python3 "$W/mutate.py" tree-revert "$SRC/tree" "$W/stash-tree"
	else python3 "$W/mutate.py" image-revert "$SRC/$(item "$1")" "$W/stash-$1"; fi
}

# mount_steps TOOL DATASET RUN: mount ready time, the mount's memory, and
# reads through the mount of the first backup (the original data).
mount_steps() {
	local tool=$1 ds=$2 run=$3 p t0 t1 n
	drop
	t0=$(now_ns)
	tool_mount "$tool" "$ds"
	case $tool in
	cbrfs | cbrfs-base | cbrfs-enc | cbrfs-enckf) p="$MNT/v/b1" ;;
	restic-*) p="$MNT/ids" ;;
	borg-*) p="$MNT/b1" ;;
	esac
	local ready=
	for n in $(seq 30000); do
		if [ "$tool" = restic-auto ] || [ "$tool" = restic-off ]; then
			ls "$MNT/ids/"*/ >/dev/null 2>&1 && { ready=1; break; }
		else
			ls "$p" >/dev/null 2>&1 && { ready=1; break; }
		fi
		sleep 0.01
	done
	t1=$(now_ns)
	[ -n "$ready" ] || { echo "$tool: the mount did not answer in 5 minutes" >&2; exit 1; }
	rec "$ds" "$tool" mount_ready_ms "$run" $(((t1 - t0) / 1000000))
	sleep 1
	rec "$ds" "$tool" mount_idle_rss_kib "$run" "$(rss_kib "$MOUNT_PID")"
	local in
	in=$(inside "$tool" "$ds" b1)
	if [ "$ds" = tree ]; then
		timed "$ds" "$tool" mnt_find "$run" bash -c "find '$in' | wc -l >'$W/find.out'"
		rec "$ds" "$tool" mnt_find_entries "$run" "$(cat "$W/find.out")"
		timed "$ds" "$tool" mnt_du "$run" bash -c "du -s '$in' >'$W/du.out'"
		rec "$ds" "$tool" mnt_du_kib "$run" "$(cut -f1 "$W/du.out")"
		case $tool in cbrfs*) cbrfs_tool=1 ;; *) cbrfs_tool= ;; esac
		if [ -n "$cbrfs_tool" ] || [ "$run" -le "$PEER_CP_RUNS" ]; then
			rm -rf "$W/out/mnt"
			timed "$ds" "$tool" mnt_cp_a "$run" cp -a "$in" "$W/out/mnt"
			rec "$ds" "$tool" mnt_cp_a_entries "$run" "$(find "$W/out/mnt" | wc -l)"
			rm -rf "$W/out/mnt"
		fi
	else
		timed "$ds" "$tool" mnt_cat "$run" bash -c "cat '$in' >/dev/null"
		timed "$ds" "$tool" mnt_cp "$run" cp "$in" "$W/out/mnt.img"
		cmp -s "$W/out/mnt.img" "$SRC/$(item "$ds")" || { echo "$tool: the image read through the mount differs" >&2; exit 1; }
		rm -f "$W/out/mnt.img"
	fi
	rec "$ds" "$tool" mount_after_rss_kib "$run" "$(rss_kib "$MOUNT_PID")"
	rec "$ds" "$tool" mount_after_anon_kib "$run" "$(awk '/^RssAnon:/ {print $2}' "/proc/$MOUNT_PID/status")"
	# Again once the mount has been idle for 3 s: cbrfs keeps its chunk
	# cache and read buffers for 2 s after the last read (vfs/file.rs
	# READ_IDLE), so the row above depends on how long the `cmp` took.
	sleep 3
	rec "$ds" "$tool" mount_rested_anon_kib "$run" "$(awk '/^RssAnon:/ {print $2}' "/proc/$MOUNT_PID/status")"
	tool_umount "$tool"
}

# Runs are the outer loop, so that drift in the machine's state (other work,
# the disk's write-back) spreads over every tool; even runs take the tools in
# reverse order (cbrfs and its baseline alternate which goes first).
for ds in $DATASETS; do
	[ "$ds" = s3 ] && continue # its own section below
	for run in $(seq "$RUNS"); do
		order=$TOOLS
		[ $((run % 2)) = 0 ] && order=$(printf '%s\n' $TOOLS | tac | tr '\n' ' ')
		section "$ds/run$run" start
		for tool in $order; do
			log "$ds $tool run $run/$RUNS"
			tool_init "$tool" "$ds"
			cd "$SRC"
			timed "$ds" "$tool" first "$run" bash -c "$(tool_backup "$tool" "$ds" b1)"
			timed "$ds" "$tool" unchanged "$run" bash -c "$(tool_backup "$tool" "$ds" b2)"
			change "$ds" >>"$CMDLOG"
			timed "$ds" "$tool" changed "$run" bash -c "$(tool_backup "$tool" "$ds" b3)"
			cd "$REPO"
			revert "$ds"
			sync
			rec "$ds" "$tool" repo_bytes "$run" "$(du -sb "$(repo_of "$tool" "$ds")" | cut -f1)"
			# The tool's own restore of the first backup.
			rm -rf "$W/out/restore"
			mkdir -p "$W/out/restore"
			timed "$ds" "$tool" restore "$run" bash -c "$(tool_restore "$tool" "$ds" b1 "$W/out/restore")"
			if [ "$ds" != tree ]; then
				f=$(find "$W/out/restore" -name "$(item "$ds")" -type f | head -1)
				cmp -s "$f" "$SRC/$(item "$ds")" || { echo "$tool: the restored image differs" >&2; exit 1; }
			else
				rec "$ds" "$tool" restore_entries "$run" "$(find "$W/out/restore" | wc -l)"
			fi
			rm -rf "$W/out/restore"
			# The unlock's own cost beside the plain vault's: a command that
			# does little else (reads the settings; on an encrypted vault
			# unlocks it to open the sealed ones).
			case $tool in cbrfs | cbrfs-enc | cbrfs-enckf)
				# shellcheck disable=SC2046 # zero or two words
				timed "$ds" "$tool" unlock "$run" "$(bin_of "$tool")" $(kf_of "$tool") --store "$(repo_of "$tool" "$ds")" vault show v ;;
			esac
			case " $MOUNT_TOOLS " in *" $tool "*) mount_steps "$tool" "$ds" "$run" ;; esac
			rm -rf "$(repo_of "$tool" "$ds")" "$W/cache-$tool-$ds" "$BORG_BASE_DIR"
		done
		section "$ds/run$run" end
	done
done

# ---------------------------------------------------------------- object storage
# The tree's data backed up to S3 by cbrfs (a vault with --storage s3://)
# and by restic (its own s3: backend), on the same SeaweedFS cluster: a
# fresh 3-node cluster each run (started before and stopped after the
# timing, data under $W), both tools in it, the order reversed every other
# run. The runs go straight to the gateway; with BENCH_S3_COUNT=1 one more
# run goes through the counting proxy, whose log gives requests and bytes
# per operation (its times, kept apart as dataset s3proxy, show the proxy's
# cost).

# s3_encrypt_opt BIN: the `vault create` option BENCH_S3_ENCRYPT asks for,
# for a binary where S3 vaults are encrypted by default (it has
# --no-encrypt) or not.
s3_encrypt_opt() {
	local help
	help=$("$1" vault create --help)
	if [ "$S3_ENCRYPT" = 1 ]; then
		case $help in *--no-encrypt*) ;; *) echo --encrypt ;; esac
	else
		case $help in *--no-encrypt*) echo --no-encrypt ;; esac
	fi
}

S3_EP=
S3_LOG=$W/s3-requests.log
S3_COUNTING=0
S3_PROXY_PID=
S3_OFF=0

# s3_cluster_start COUNTING: a fresh cluster; with COUNTING=1 the counting
# proxy in front of its gateway. Sets S3_EP, the endpoint the tools use.
s3_cluster_start() {
	local rc=0 i
	# seaweed.sh's greps of `weed shell` output assume no pipefail.
	set +o pipefail
	TMPDIR=$W seaweed_start >>"$CMDLOG" 2>&1 || rc=$?
	set -o pipefail
	[ "$rc" = 0 ] || { echo "cannot start the SeaweedFS cluster (scripts/seaweed.sh; see $CMDLOG)" >&2; exit 1; }
	S3_EP=$SEAWEED_S3_ENDPOINT
	S3_COUNTING=$1
	if [ "$1" = 1 ]; then
		: >"$W/proxy.port"
		python3 "$REPO/tests/common/faultproxy.py" --upstream "${SEAWEED_S3_ENDPOINT#http://}" \
			--mode pass --log "$S3_LOG" >"$W/proxy.port" 2>>"$CMDLOG" &
		S3_PROXY_PID=$!
		BG_PIDS+=("$S3_PROXY_PID")
		for i in $(seq 100); do [ -s "$W/proxy.port" ] && break; sleep 0.1; done
		[ -s "$W/proxy.port" ] || { echo "the counting proxy did not start (see $CMDLOG)" >&2; exit 1; }
		S3_EP=http://127.0.0.1:$(head -n 1 "$W/proxy.port")
	fi
	log "SeaweedFS cluster at $SEAWEED_S3_ENDPOINT; the tools use $S3_EP"
}

s3_cluster_stop() {
	if [ -n "$S3_PROXY_PID" ]; then
		kill "$S3_PROXY_PID" 2>/dev/null || true
		wait "$S3_PROXY_PID" 2>/dev/null || true
		S3_PROXY_PID=
	fi
	seaweed_stop
}

# s3_mark, then s3_counted TOOL STEP RUN: record the requests and bytes the
# counting proxy logged in between under STEP (nothing in a direct run).
# PUTs of packs: cbrfs's PREFIX/packs/, restic's PREFIX/data/.
s3_mark() { S3_OFF=$(stat -c %s "$S3_LOG" 2>/dev/null || echo 0); }
s3_counted() {
	[ "$S3_COUNTING" = 1 ] || return 0
	local k v
	python3 "$REPO/tests/common/faultproxy.py" --summary "$S3_LOG" --from "$S3_OFF" \
		--match '/bench/[^/]+/(packs|data)/' >"$W/count.out"
	while IFS=$'\t' read -r k v; do
		case $k in
		requests) k=n_requests ;;
		up | down) k=${k}_bytes ;;
		put_match) k=put_packs ;;
		put_match_up) k=put_packs_bytes ;;
		*) k=n_$k ;;
		esac
		rec s3 "$1" "$2.$k" "$3" "$v"
	done <"$W/count.out"
}

# s3_own_counted TOOL STEP RUN: in the counting run, cbrfs's own count of
# the requests of the task STEP's command recorded (its task log's
# `requests`, docs/JSON.md), to hold beside the proxy's.
s3_own_counted() {
	[ "$S3_COUNTING" = 1 ] || return 0
	case $1 in cbrfs | cbrfs-base) ;; *) return 0 ;; esac
	local k v
	"$(bin_of "$1")" --store "$(repo_of "$1" s3)" task list --json 2>>"$CMDLOG" | python3 -c '
import json, sys
tasks = [t for t in json.load(sys.stdin) if t.get("type") in ("backup", "restore") and t.get("requests")]
if tasks:
    for k, v in tasks[0]["requests"].items():
        print("%s\t%d" % (k, v))
' >"$W/own.out" || return 0
	while IFS=$'\t' read -r k v; do
		rec s3 "$1" "$2.own_$k" "$3" "$v"
	done <"$W/own.out"
}

# s3_prefix_bytes PREFIX: the bytes of the objects under PREFIX in the
# bucket, from the filer's listing (neither tool's own account).
s3_prefix_bytes() {
	python3 - "http://127.0.0.1:$SEAWEED_FILER_PORT" "/buckets/$SEAWEED_BUCKET/$1" <<'PY'
import json, sys, urllib.parse, urllib.request
base = sys.argv[1]
def walk(path):
    total, last = 0, ''
    while True:
        url = '%s%s/?limit=1000&lastFileName=%s' % (base, urllib.parse.quote(path), urllib.parse.quote(last))
        req = urllib.request.Request(url, headers={'Accept': 'application/json'})
        j = json.load(urllib.request.urlopen(req, timeout=60))
        for e in j.get('Entries') or []:
            if e.get('Mode', 0) & (1 << 31):  # os.ModeDir
                total += walk(e['FullPath'])
            else:
                total += int(e.get('FileSize', 0))
        if not j.get('ShouldDisplayLoadMore') or not j.get('LastFileName'):
            return total
        last = j['LastFileName']
print(walk(sys.argv[2].rstrip('/')))
PY
}

# s3_empty_cache TOOL: delete the tool's local cache of its S3 repository:
# for cbrfs everything in the vault's directory but vault.json and local
# state (README: the cache may be deleted at any time), for restic its
# --cache-dir.
s3_empty_cache() {
	case $1 in
	cbrfs | cbrfs-base)
		find "$(repo_of "$1" s3)/vaults/v" -mindepth 1 -maxdepth 1 ! -name vault.json \
			! -name '*.lock' ! -name running ! -name 'policy-state*' -exec rm -rf {} + ;;
	restic-*) rm -rf "$W/cache-$1-s3" ;;
	esac
}

# s3_meta_bytes TOOL: what the tool keeps locally after a find in a cold
# mount, data aside: cbrfs's whole copies (index, records, metadata packs;
# not cache/, the data ranges), restic's cache directory (index,
# snapshots, tree packs).
s3_meta_bytes() {
	case $1 in
	cbrfs | cbrfs-base)
		local v
		v=$(repo_of "$1" s3)/vaults/v
		echo $(($(du -sb "$v" | cut -f1) - $(du -sb "$v/vault.json" | cut -f1) -
			$( (du -sb "$v/cache" 2>/dev/null || echo 0) | cut -f1))) ;;
	restic-*) du -sb "$W/cache-$1-s3" | cut -f1 ;;
	esac
}

# s3_mount_ready TOOL TDS STEP RUN: mount (page cache dropped), poll until
# the first backup answers, record STEP_ms.
s3_mount_ready() {
	local tool=$1 n t0 t1 ready=
	drop
	t0=$(now_ns)
	tool_mount "$tool" s3
	for n in $(seq 30000); do
		case $tool in
		restic-*) ls "$MNT/ids/"*/ >/dev/null 2>&1 && { ready=1; break; } ;;
		*) ls "$MNT/v/b1" >/dev/null 2>&1 && { ready=1; break; } ;;
		esac
		sleep 0.01
	done
	t1=$(now_ns)
	[ -n "$ready" ] || { echo "$tool: the S3 mount did not answer in 5 minutes" >&2; exit 1; }
	rec "$2" "$tool" "${3}_ms" "$4" $(((t1 - t0) / 1000000))
}

# s3_steps TOOL RUN TDS: one tool's round: three backups, restore with an
# empty cache, mounts with an empty and a warm cache, find and cp -a
# through a mount with an empty cache. Times under dataset TDS.
s3_steps() {
	local tool=$1 run=$2 tds=$3 in
	tool_init "$tool" s3
	cd "$SRC"
	s3_mark
	timed "$tds" "$tool" first "$run" bash -c "$(tool_backup "$tool" s3 b1)"
	s3_counted "$tool" first "$run"
	s3_own_counted "$tool" first "$run"
	s3_mark
	timed "$tds" "$tool" unchanged "$run" bash -c "$(tool_backup "$tool" s3 b2)"
	s3_counted "$tool" unchanged "$run"
	s3_own_counted "$tool" unchanged "$run"
	change tree >>"$CMDLOG"
	s3_mark
	timed "$tds" "$tool" changed "$run" bash -c "$(tool_backup "$tool" s3 b3)"
	s3_counted "$tool" changed "$run"
	s3_own_counted "$tool" changed "$run"
	cd "$REPO"
	revert tree
	rec "$tds" "$tool" repo_bytes "$run" "$(s3_prefix_bytes "bench/$tool")"

	s3_empty_cache "$tool"
	rm -rf "$W/out/restore"
	mkdir -p "$W/out/restore"
	s3_mark
	timed "$tds" "$tool" restore "$run" bash -c "$(tool_restore "$tool" s3 b1 "$W/out/restore")"
	s3_counted "$tool" restore "$run"
	s3_own_counted "$tool" restore "$run"
	rec "$tds" "$tool" restore_entries "$run" "$(find "$W/out/restore" | wc -l)"
	rm -rf "$W/out/restore"

	# Mount with an empty cache, find; then the same mount again, warm.
	s3_empty_cache "$tool"
	s3_mark
	s3_mount_ready "$tool" "$tds" mount_cold "$run"
	s3_counted "$tool" mount_cold "$run"
	in=$(inside "$tool" s3 b1)
	s3_mark
	timed "$tds" "$tool" mnt_find_cold "$run" bash -c "find '$in' | wc -l >'$W/find.out'"
	s3_counted "$tool" mnt_find_cold "$run"
	rec "$tds" "$tool" mnt_find_entries "$run" "$(cat "$W/find.out")"
	tool_umount "$tool"
	rec "$tds" "$tool" meta_bytes "$run" "$(s3_meta_bytes "$tool")"
	s3_mark
	s3_mount_ready "$tool" "$tds" mount_warm "$run"
	s3_counted "$tool" mount_warm "$run"
	tool_umount "$tool"

	# cp -a of the whole tree out of a mount with an empty cache (out of
	# restic's only in the first BENCH_PEER_CP_RUNS runs: it takes ~5 min).
	if [ "$tool" = cbrfs ] || [ "$run" -le "$PEER_CP_RUNS" ]; then
		s3_empty_cache "$tool"
		s3_mount_ready "$tool" "$tds" mount_cold_cp "$run"
		in=$(inside "$tool" s3 b1)
		rm -rf "$W/out/mnt"
		s3_mark
		timed "$tds" "$tool" mnt_cp_cold "$run" cp -a "$in" "$W/out/mnt"
		s3_counted "$tool" mnt_cp_cold "$run"
		rec "$tds" "$tool" mnt_cp_a_entries "$run" "$(find "$W/out/mnt" | wc -l)"
		rm -rf "$W/out/mnt"
		tool_umount "$tool"
	fi
	rm -rf "$W/repo/$tool-s3" "$W/cache-$tool-s3"
}

if [ "$S3" = 1 ]; then
	# For the encrypted vault (restic's password is RESTIC_PASSWORD).
	export CBRFS_PASSWORD=bench
	# restic asks the bucket's location unless told the region.
	export AWS_DEFAULT_REGION=us-east-1
	: >"$S3_LOG"
	last=$RUNS
	[ "$S3_COUNT" = 1 ] && last=$((RUNS + 1))
	for run in $(seq "$last"); do
		counting=0 tds=s3 name=s3/run$run
		if [ "$run" -gt "$RUNS" ]; then counting=1 tds=s3proxy name=s3/counted; fi
		order=$S3_TOOLS
		[ $((run % 2)) = 0 ] && order=$(printf '%s\n' $S3_TOOLS | tac | tr '\n' ' ')
		section "$name" start
		s3_cluster_start "$counting"
		for tool in $order; do
			log "s3 $tool run $run/$last$([ "$counting" = 1 ] && echo ' (through the counting proxy)')"
			s3_steps "$tool" "$run" "$tds"
		done
		s3_cluster_stop
		section "$name" end
	done
fi

# ---------------------------------------------------------------- scale
# One cbrfs store with SCALE_N backups of the tree, a small change between
# each: the mount's ready time and memory, to hold beside the one-backup
# figures above.
if [ "$SCALE_N" -gt 0 ]; then
	section scale start
	tool_init cbrfs tree
	r=$(repo_of cbrfs tree)
	cd "$SRC"
	for i in $(seq "$SCALE_N"); do
		[ "$i" = 1 ] || python3 "$W/mutate.py" scale-step "$SRC/tree" "$SEED" "$i" "$W/stash-tree"
		"$CBRFS" --store "$r" backup create v --name "b$i" >>"$CMDLOG" 2>&1
		if [ $((i % 10)) = 0 ]; then log "scale: $i backups"; fi
	done
	cd "$REPO"
	python3 "$W/mutate.py" tree-revert "$SRC/tree" "$W/stash-tree"
	rec tree cbrfs scale_repo_bytes 1 "$(du -sb "$r" | cut -f1)"
	for run in $(seq "$RUNS"); do
		drop
		t0=$(now_ns)
		tool_mount cbrfs tree
		ls "$MNT/v/b$SCALE_N" >/dev/null
		t1=$(now_ns)
		rec tree cbrfs scale_mount_ready_ms "$run" $(((t1 - t0) / 1000000))
		sleep 1
		rec tree cbrfs scale_mount_idle_rss_kib "$run" "$(rss_kib "$MOUNT_PID")"
		timed tree cbrfs scale_ls_vault "$run" ls "$MNT/v"
		tool_umount cbrfs
	done
	rm -rf "$r"
	section scale end
fi

echo "end_epoch=$(date +%s)" >>"$W/meta.txt"
report
log "done: $DOC"
