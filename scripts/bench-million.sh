#!/usr/bin/env bash
# scripts/bench-million.sh: one directory of a million entries, through
# every path that lists or walks it: the backup (walk, one tree blob of a
# million nodes), an unchanged re-backup, the mount (`ls | wc -l`,
# `find | wc -l`, `stat` of one name), and the restore. Checks that every
# count matches and prints each step's figures. Then (issue 17) the mount's
# memory while `find` walks the directory in each of ten backups: the
# daemon's RSS after each walk, the inodes it holds (the kernel's lookups:
# the root's user.cbrfs.inodes), its decoded trees' bytes
# (user.cbrfs.tree_cache_bytes) and the memory per inode, so that RSS
# staying flat across backups, and at most 200 bytes per inode, can be
# read off.
#
# A benchmark, not a test: CI does not run it and no time is asserted; a
# count that does not match, or a step that fails, ends it with exit 1.
# Needs /dev/fuse and fusermount3 (root, or a user allowed to mount), about
# 2.2 million free inodes and a few GB in BENCH_MILLION_DIR. The page cache
# is not dropped (the host is shared): every step after the first runs
# with the entries' metadata cached, as right after a busy day.
#
# Settings (environment):
#   BENCH_MILLION_N=1000000     entries in the directory (a small mode:
#                               BENCH_MILLION_N=20000 checks the script)
#   BENCH_MILLION_BACKUPS=10    backups the memory rows walk (all but the
#                               first unchanged re-backups)
#   BENCH_MILLION_DIR=/var/tmp/cbrfs-million   work directory (removed at
#                               the end unless BENCH_MILLION_KEEP=1)
#   CBRFS_BIN                   the binary [default target/release/cbrfs]
#
# Every timed step: wall, user and system seconds and peak RSS from
# `/usr/bin/time -f "%e %U %S %M"`; for the mount, the daemon's RSS and peak
# (VmRSS, VmHWM) after the listings.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${BENCH_MILLION_N:-1000000}
NB=${BENCH_MILLION_BACKUPS:-10}
[ "$NB" -ge 2 ] || { echo "bench-million: BENCH_MILLION_BACKUPS must be at least 2" >&2; exit 1; }
W=${BENCH_MILLION_DIR:-/var/tmp/cbrfs-million}
BIN=${CBRFS_BIN:-$REPO/target/release/cbrfs}
[ -x "$BIN" ] || { echo "bench-million: $BIN not found: cargo build --release" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-million: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

S=$W/src
STORE=$W/store
MNT=$W/mnt
R=$W/restore
cbrfs() { "$BIN" --store "$STORE" "$@"; }
cleanup() {
	"$BIN" --store "$STORE" umount "$MNT" >/dev/null 2>&1 || fusermount3 -uz "$MNT" >/dev/null 2>&1 || true
	if [ "${BENCH_MILLION_KEEP:-0}" != 1 ]; then
		rm -rf "$W"
	fi
}
trap cleanup EXIT
rm -rf "$W"
mkdir -p "$S/big" "$MNT"

ROWS=()
# timed NAME cmd...: run cmd under /usr/bin/time; keep "wall user sys rss".
timed() {
	local name=$1
	shift
	/usr/bin/time -o "$W/.time" -f "%e %U %S %M" "$@"
	read -r wall user sys rss <"$W/.time"
	ROWS+=("$name"$'\x1f'"$wall"$'\x1f'"$user"$'\x1f'"$sys"$'\x1f'"$rss")
	printf '%-40s %8ss wall %8ss user %8ss sys %9s KiB peak RSS\n' "$name" "$wall" "$user" "$sys" "$rss"
}
die() {
	echo "bench-million: $*" >&2
	exit 1
}

echo "== $N entries in $S/big (every 10th holds 8 bytes, the rest empty)"
start=$SECONDS
python3 - "$S/big" "$N" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    fd = os.open(f"{d}/f{i:07d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    if i % 10 == 0:
        os.write(fd, b"%07d\n" % i)
    os.close(fd)
EOF
echo "made in $((SECONDS - start)) s"
want_bytes=$(((N + 9) / 10 * 8))

cbrfs vault create m --type filesystem --capacity 100GB >/dev/null
cbrfs vault associate m --path "$S" --name src >/dev/null

echo "== backup"
timed "backup create (first, full)" "$BIN" --store "$STORE" backup create m --name b1
cbrfs backup show m b1 --json >"$W/b1.json"
got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stats"]; print(s["files_new"], s["bytes_total"], s["errors"])' "$W/b1.json")
[ "$got" = "$N $want_bytes 0" ] || die "b1 counts files_new, bytes_total, errors = $got, expected $N $want_bytes 0"
echo "b1: $N files, $want_bytes bytes, no errors"
timed "backup create (unchanged, incremental)" "$BIN" --store "$STORE" backup create m --name b2
cbrfs backup show m b2 --json >"$W/b2.json"
got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stats"]; print(s["files_unchanged"], s["bytes_read"])' "$W/b2.json")
[ "$got" = "$N 0" ] || die "b2 files_unchanged, bytes_read = $got, expected $N 0"
store_bytes=$(du -sb "$STORE" | cut -f1)
echo "store: $store_bytes bytes"

echo "== mount"
timed "mount (until ready)" "$BIN" --store "$STORE" mount "$MNT"
pid=$(pgrep -f -- "mount $MNT --foreground" | head -n 1 || true)
[ -n "$pid" ] || die "no mount daemon found"
timed "ls MNT/m/b1/src/big | wc -l" sh -c "ls '$MNT/m/b1/src/big' | wc -l >'$W/ls.count'"
[ "$(cat "$W/ls.count")" = "$N" ] || die "ls counted $(cat "$W/ls.count"), expected $N"
timed "ls again (kernel caches warm)" sh -c "ls '$MNT/m/b1/src/big' | wc -l >'$W/ls.count'"
[ "$(cat "$W/ls.count")" = "$N" ] || die "ls again counted $(cat "$W/ls.count")"
timed "find MNT/m/b2/src | wc -l" sh -c "find '$MNT/m/b2/src' | wc -l >'$W/find.count'"
[ "$(cat "$W/find.count")" = "$((N + 2))" ] || die "find counted $(cat "$W/find.count"), expected $((N + 2))"
mid=$(printf 'f%07d' $((N / 2)))
timed "stat of one name ($mid)" stat "$MNT/m/b1/src/big/$mid"
[ "$(stat -c %s "$MNT/m/b1/src/big/$mid")" = "$(stat -c %s "$S/big/$mid")" ] || die "$mid: size differs"
timed "cat of one small file" cat "$MNT/m/b1/src/big/f0000010"
read -r rss hwm < <(awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {print r, h}' "/proc/$pid/status")
echo "mount daemon: VmRSS $rss KiB, VmHWM $hwm KiB after the listings"
ROWS+=("mount daemon after ls, ls, find, stat (VmRSS, VmHWM)"$'\x1f'$'\x1f'$'\x1f'$'\x1f'"$rss (peak $hwm)")
cbrfs umount "$MNT"

echo "== memory while find walks the directory in $NB backups"
for i in $(seq 3 "$NB"); do
	cbrfs backup create m --name "b$i" >/dev/null
done
# A fresh mount: every row's inodes come from the walks alone.
cbrfs mount "$MNT" >/dev/null
pid=$(pgrep -f -- "mount $MNT --foreground" | head -n 1 || true)
[ -n "$pid" ] || die "no mount daemon found"
rss_of() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
xattr_of() { getfattr --only-values -n "user.cbrfs.$1" "$MNT" 2>/dev/null || echo 0; }
base=$(rss_of)
echo "mount daemon before the walks: VmRSS $base KiB"
MEM=()
first_rss=
for i in $(seq 1 "$NB"); do
	start=$(date +%s%N)
	got=$(find "$MNT/m/b$i/src" | wc -l)
	wall=$(python3 -c 'import sys; print("%.2f" % ((int(sys.argv[2]) - int(sys.argv[1])) / 1e9))' "$start" "$(date +%s%N)")
	[ "$got" = "$((N + 2))" ] || die "find in b$i counted $got, expected $((N + 2))"
	rss=$(rss_of)
	inodes=$(xattr_of inodes)
	trees=$(xattr_of tree_cache_bytes)
	# Bytes per inode: the RSS the walks added, less the decoded trees
	# (bounded on their own), over the inodes held; not given when the
	# kernel held fewer than one walk's entries (it dropped inodes under
	# memory pressure, and the RSS still holds what freed memory malloc
	# keeps).
	per=$(python3 -c 'import sys; r,b,t,n,N=map(int,sys.argv[1:]); print(round(max(r-b,0)*1024/n - t/n) if n >= N else "-")' "$rss" "$base" "$trees" "$inodes" "$N")
	[ -n "$first_rss" ] || first_rss=$rss
	MEM+=("b$i"$'\x1f'"$wall"$'\x1f'"$rss"$'\x1f'"$inodes"$'\x1f'"$trees"$'\x1f'"$per")
	printf 'find b%-3s %6ss  VmRSS %9s KiB  inodes %9s  trees %11s B  %5s B/inode\n' "$i" "$wall" "$rss" "$inodes" "$trees" "$per"
done
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
flat=$(python3 -c 'import sys; a,b=map(int,sys.argv[1:]); print("%.2f" % (b/a))' "$first_rss" "$rss")
echo "RSS after the last walk / after the first: $flat (VmHWM $hwm KiB)"
cbrfs umount "$MNT"

echo "== restore"
timed "restore b1" "$BIN" --store "$STORE" restore m b1 --to "$R"
got=$(find "$R/big" -mindepth 1 | wc -l)
[ "$got" = "$N" ] || die "restore made $got entries, expected $N"
diff <(cd "$S/big" && find . -type f -printf '%p %s\n' | sort) <(cd "$R/big" && find . -type f -printf '%p %s\n' | sort) >/dev/null ||
	die "restored names or sizes differ from the source"
cmp "$S/big/$mid" "$R/big/$mid" || die "$mid differs"
echo "restore: $N entries, names and sizes equal to the source"

echo
echo "| step | wall s | user s | sys s | peak RSS KiB |"
echo "|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
	IFS=$'\x1f' read -r name wall user sys rss <<<"$row"
	echo "| ${name//|/\\|} | $wall | $user | $sys | $rss |"
done
echo
echo "RSS flat while find walks a million-entry directory across $NB backups (entries $N each; daemon VmRSS $base KiB before the walks):"
echo
echo "| find in | wall s | daemon VmRSS KiB | inodes held | decoded trees B | B per inode |"
echo "|---|---|---|---|---|---|"
for row in "${MEM[@]}"; do
	IFS=$'\x1f' read -r name wall rss inodes trees per <<<"$row"
	echo "| $name | $wall | $rss | $inodes | $trees | $per |"
done
echo
echo "RSS after the last walk / after the first: $flat; VmHWM $hwm KiB. B per inode: (VmRSS - VmRSS before the walks - decoded trees) / inodes held."
echo
echo "entries $N; store $store_bytes bytes; host $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
