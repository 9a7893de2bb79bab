#!/usr/bin/env bash
# tests/packaging.sh: what a package and a monitoring system use.
# - `cbrfs completions bash|zsh|fish` print scripts that load (bash:
#   `complete -p cbrfs` after sourcing) and complete subcommands;
# - `cbrfs man DIR` writes a page for cbrfs and every subcommand, each with
#   a .TH header, that `man -l` renders;
# - `cbrfs metrics` prints the Prometheus text format (checked by a small
#   parser below) with real values after a real backup and a failed one,
#   and a check; `--output` writes it atomically, readable by all.
. "$(dirname "$0")/lib.sh"

# ---- completions ----
run bash -c 'source <("$1" completions bash) && complete -p cbrfs' _ "$CBRFS_BIN"
expect_eq "bash completion loads (complete -p cbrfs)" "$RC:$(matches '-F _cbrfs cbrfs' "$OUT" && echo y)" "0:y"
# COMP_WORDS for "cbrfs ba<TAB>": the function offers "backup".
run bash -c 'source <("$1" completions bash)
COMP_WORDS=(cbrfs ba); COMP_CWORD=1; COMP_LINE="cbrfs ba"; COMP_POINT=${#COMP_LINE}
_cbrfs cbrfs ba cbrfs; printf "%s\n" "${COMPREPLY[@]}"' _ "$CBRFS_BIN"
expect_eq "bash completes 'cbrfs ba' to backup" "$OUT" "backup"
run "$CBRFS_BIN" completions zsh
expect_eq "zsh completion starts with #compdef" "$RC:$(head -1 "$T/.out")" "0:#compdef cbrfs"
if command -v zsh >/dev/null; then
	expect_ok zsh -n "$T/.out"
fi
run "$CBRFS_BIN" completions fish
expect_eq "fish completion names subcommands" "$RC:$(grep -c 'metrics' "$T/.out" | sed 's/^[1-9][0-9]*$/some/')" "0:some"
expect_exit 2 "invalid value 'tcsh'" -- "$CBRFS_BIN" completions tcsh
# Neither needs a store: nothing is created where --store points.
expect_ok "$CBRFS_BIN" --store "$T/nostore" completions bash
expect_eq "completions create no store" "$([ -e "$T/nostore" ] && echo yes || echo no)" "no"

# ---- man pages ----
expect_ok "$CBRFS_BIN" --store "$T/nostore" man "$T/man"
expect_eq "man creates no store" "$([ -e "$T/nostore" ] && echo yes || echo no)" "no"
missing=
for sub in "" vault vault-create backup-create backup-wait restore check prune metrics completions policy-create task-list mount umount; do
	f=$T/man/cbrfs${sub:+-$sub}.1
	if [ ! -f "$f" ] || ! grep -q '^\.TH ' "$f"; then
		missing="$missing ${f##*/}"
	fi
done
expect_eq "man pages with a .TH header for cbrfs and its subcommands" "${missing:-none}" "none"
expect_eq "man page mode" "$(stat -c %a "$T/man/cbrfs.1")" "644"
if command -v man >/dev/null; then
	run env MANWIDTH=80 man -l "$T/man/cbrfs-metrics.1"
	expect_eq "man -l renders cbrfs-metrics(1)" "$RC:$(matches '^ +cbrfs +metrics .*--output' "$OUT" && echo y)" "0:y"
fi
# The page of the top command lists every subcommand's page.
expect_eq "cbrfs.1 lists cbrfs-metrics(1)" "$(grep -c 'cbrfs\\-metrics(1)' "$T/man/cbrfs.1")" "1"

# ---- metrics ----
# promparse FILE: check the text exposition format (0.0.4) strictly enough
# to catch a broken file: every sample's family has # HELP and # TYPE
# before it, a family's samples are together, names and labels are well
# formed, label values use only the three escapes, values are floats.
# Prints "name{sorted labels} value" lines for the checks below.
promparse() {
	python3 - "$1" <<'EOF'
import re, sys
name_re = re.compile(r'[a-zA-Z_:][a-zA-Z0-9_:]*')
lname_re = re.compile(r'[a-zA-Z_][a-zA-Z0-9_]*')
helps, types, seen_done, out = {}, {}, set(), []
current = None
def die(n, msg):
    print(f"line {n}: {msg}", file=sys.stderr); sys.exit(1)
text = open(sys.argv[1], encoding='utf-8').read()
if not text.endswith('\n'):
    die(0, 'no final line feed')
for n, line in enumerate(text.split('\n')[:-1], 1):
    if line.startswith('# HELP ') or line.startswith('# TYPE '):
        kw, rest = line[2:6], line[7:]
        m = name_re.match(rest)
        if not m or rest[m.end():m.end()+1] != ' ':
            die(n, 'bad metric name')
        name, arg = m.group(0), rest[m.end()+1:]
        if kw == 'HELP':
            if name in helps: die(n, f'second HELP for {name}')
            if re.search(r'\\[^\\n]', arg.replace('\\\\', '')): die(n, 'bad escape in HELP')
            helps[name] = arg
        else:
            if name in types: die(n, f'second TYPE for {name}')
            if arg not in ('counter', 'gauge', 'histogram', 'summary', 'untyped'): die(n, f'bad type {arg}')
            types[name] = arg
        if current != name:
            if current: seen_done.add(current)
            current = name
        continue
    if line.startswith('#') or line == '':
        continue
    m = name_re.match(line)
    if not m: die(n, 'bad sample name')
    name, i = m.group(0), m.end()
    labels = {}
    if line[i:i+1] == '{':
        i += 1
        while line[i] != '}':
            lm = lname_re.match(line, i)
            if not lm or line[lm.end():lm.end()+2] != '="': die(n, 'bad label')
            j, v = lm.end() + 2, ''
            while line[j] != '"':
                if line[j] == '\\':
                    esc = line[j+1]
                    if esc not in '\\"n': die(n, f'bad escape \\{esc}')
                    v += {'\\': '\\', '"': '"', 'n': '\n'}[esc]; j += 2
                else:
                    v += line[j]; j += 1
            if lm.group(0) in labels: die(n, 'repeated label')
            labels[lm.group(0)] = v
            i = j + 1
            if line[i] == ',': i += 1
        i += 1
    if line[i:i+1] != ' ': die(n, 'no space before the value')
    parts = line[i+1:].split(' ')
    if len(parts) > 2: die(n, 'junk after the value')
    try:
        float(parts[0])
    except ValueError:
        die(n, f'value {parts[0]!r} is not a float')
    if name not in helps or name not in types: die(n, f'{name} has no HELP or TYPE before it')
    if name in seen_done: die(n, f'samples of {name} are not together')
    if name != current: die(n, f'sample of {name} under the family {current}')
    out.append('%s{%s} %s' % (name, ','.join(f'{k}={v}' for k, v in sorted(labels.items())), parts[0]))
print('\n'.join(out))
EOF
}

# metric OUTPUT NAME LABELS: the value of one sample in promparse's output.
metric() {
	grep -F "$2{$3} " <<<"$1" | head -1 | cut -d' ' -f2
}

mkdir -p "$T/src/sub"
head -c 300000 /dev/urandom >"$T/src/big"
printf 'small\n' >"$T/src/sub/small"
expect_ok cbrfs vault create mv --type filesystem --capacity 20
expect_ok cbrfs vault associate mv --path "$T/src" --name data
mkdir -p "$T/never"
expect_ok cbrfs vault associate mv --path "$T/never" --name never
before=$(date +%s)
expect_ok cbrfs backup create mv --name b1 --resource data --json
cp "$T/.out" "$T/b1.json"
after=$(date +%s)
# A failed backup: its name is taken.
expect_exit 2 'already exists' -- cbrfs backup create mv --name b1 --resource data
expect_ok cbrfs check mv

expect_ok cbrfs metrics
cp "$T/.out" "$T/metrics.txt"
if run promparse "$T/metrics.txt" && [ "$RC" = 0 ]; then
	pass "metrics parse as the Prometheus text format"
else
	fail "metrics do not parse: $ERR"
fi
P=$OUT
ts=$(metric "$P" cbrfs_last_success_timestamp_seconds resource=data,vault=mv)
expect_eq "last success time is the backup's end ($before..$after)" \
	"$(python3 -c "print($before <= float('$ts') <= $after + 1)")" "True"
expect_eq "last success time of a resource never backed up" \
	"$(metric "$P" cbrfs_last_success_timestamp_seconds resource=never,vault=mv)" "0"
expect_eq "duration is the backup's" \
	"$(python3 -c "print(abs(float('$(metric "$P" cbrfs_last_success_duration_seconds resource=data,vault=mv)') - $(json_get "$T/b1.json" 'j["duration_ms"]') / 1000) < 0.002)")" "True"
added=$(metric "$P" cbrfs_last_success_added_bytes resource=data,vault=mv)
expect_eq "bytes added are the backup's, not 0" \
	"$added:$(python3 -c "print(float('$added') > 290000)")" "$(json_get "$T/b1.json" 'j["stats"]["bytes_added"]'):True"
expect_eq "one failed backup in the task log" "$(metric "$P" cbrfs_backup_failures vault=mv)" "1"
expect_eq "capacity" "$(metric "$P" cbrfs_vault_capacity_bytes vault=mv)" "$((20 << 30))"
expect_eq "usage" "$(metric "$P" cbrfs_vault_used_bytes vault=mv)" \
	"$(cbrfs vault show mv --json | json_get /dev/stdin 'j["used_bytes"]')"
expect_eq "backups" "$(metric "$P" cbrfs_backups vault=mv)" "1"
expect_eq "last check succeeded" "$(metric "$P" cbrfs_last_check_success vault=mv)" "1"
cts=$(metric "$P" cbrfs_last_check_timestamp_seconds vault=mv)
expect_eq "last check time is recent" "$(python3 -c "import time; print($before <= float('$cts') <= time.time())")" "True"
expect_eq "last check did not read data" "$(metric "$P" cbrfs_last_check_read_data vault=mv)" "0"
expect_eq "every family has HELP and TYPE" \
	"$(grep -c '^# HELP cbrfs_' "$T/metrics.txt"):$(grep -c '^# TYPE cbrfs_.* gauge$' "$T/metrics.txt")" "11:11"

# A damaged pack: check fails, and the metric says so.
pack=$(find "$STORE" -path '*packs*' -type f | head -1)
printf 'XXXX' | dd of="$pack" bs=1 seek=100 conv=notrunc 2>/dev/null
expect_exit 1 '' -- cbrfs check mv --read-data
run cbrfs metrics
expect_eq "failed check: success 0, read_data 1" \
	"$(P=$(promparse "$T/.out"); echo "$(metric "$P" cbrfs_last_check_success vault=mv),$(metric "$P" cbrfs_last_check_read_data vault=mv)")" "0,1"

# A vault deleted and made again under the same name has not been checked.
expect_ok cbrfs vault create cv --type filesystem --capacity 10
expect_ok cbrfs check cv
t0=$(date +%s)
# Vault creation times are rounded to the second: two seconds apart.
wait_for 4 "two seconds on" sh -c "[ \$(date +%s) -ge $((t0 + 2)) ]"
expect_ok cbrfs vault delete cv --force
expect_ok cbrfs vault create cv --type filesystem --capacity 10
run cbrfs metrics
expect_eq "a new vault of an old name has no last check" \
	"$(promparse "$T/.out" | grep -c 'cbrfs_last_check_success{vault=cv}')" "0"
expect_ok cbrfs check cv
run cbrfs metrics
expect_eq "until it is checked" "$(metric "$(promparse "$T/.out")" cbrfs_last_check_success vault=cv)" "1"

# --output: written whole, 0644, no temporary left behind; a symlink at
# the name is replaced, not followed.
mkdir -p "$T/prom"
ln -s "$T/victim" "$T/prom/cbrfs.prom"
expect_ok cbrfs metrics --output "$T/prom/cbrfs.prom"
expect_eq "--output wrote a regular file, 0644" "$(stat -c '%F %a' "$T/prom/cbrfs.prom")" "regular file 644"
expect_eq "--output did not follow the symlink" "$([ -e "$T/victim" ] && echo followed || echo no)" "no"
expect_eq "--output left no temporary file" "$(ls -A "$T/prom")" "cbrfs.prom"
if run promparse "$T/prom/cbrfs.prom" && [ "$RC" = 0 ]; then
	pass "--output file parses"
else
	fail "--output file does not parse: $ERR"
fi
expect_exit 2 'does not name a file' -- cbrfs metrics --output /
expect_exit 1 'No such file|nosuchdir' -- cbrfs metrics --output "$T/nosuchdir/m.prom"


# ---- progress bars ----
# Restore, check --read-data and backup wait draw a bar (with an ETA) on a
# terminal only. Not on a terminal: no escape code, only the result lines.
mkdir -p "$T/psrc"
head -c 64000000 /dev/urandom >"$T/psrc/big"
expect_ok cbrfs vault create pv --type filesystem --capacity 10
expect_ok cbrfs vault associate pv --path "$T/psrc" --name big
expect_ok cbrfs backup create pv --name p1
esc=$(printf '\033')
for what in "restore pv p1 --to $T/pr1" "check pv --read-data" "backup wait pv p1"; do
	# shellcheck disable=SC2086 # $what is the command's words
	run cbrfs $what
	if [ "$RC" = 0 ] && ! matches "$esc|ETA" "$OUT
$ERR"; then
		pass "not on a terminal, no bar or escape code: cbrfs $what"
	else
		fail "cbrfs $what (exit $RC) drew on a non-terminal: $(printf '%s' "$OUT$ERR" | cat -v | head -c 300)"
	fi
done
if command -v script >/dev/null; then
	for what in "restore pv p1 --to $T/pr2" "check pv --read-data"; do
		run script -qfec "'$CBRFS_BIN' --store '$STORE' $what" /dev/null
		if [ "$RC" = 0 ] && matches 'ETA [0-9]' "$(tr '\r' '\n' <"$T/.out")"; then
			pass "on a terminal, a bar with an ETA: cbrfs $what"
		else
			fail "cbrfs $what (exit $RC) on a terminal drew no bar: $(cat -v "$T/.out" | head -c 300)"
		fi
	done
fi
expect_eq "restored under the bar" "$(cmp "$T/psrc/big" "$T/pr2/big" && echo same)" "same"
# prune: a deleted backup leaves dead packs; off a terminal no bar, on
# one a bar (the copying of live blobs out of mostly dead packs).
rm "$T/psrc/big"
head -c 3000000 /dev/urandom >"$T/psrc/small"
expect_ok cbrfs backup create pv --name p2
expect_ok cbrfs backup delete pv p1
run cbrfs prune pv --dry-run
expect_eq "prune --dry-run off a terminal draws nothing" "$RC:$(matches "$esc|ETA" "$OUT$ERR" && echo drew)" "0:"
if command -v script >/dev/null; then
	run script -qfec "'$CBRFS_BIN' --store '$STORE' prune pv" /dev/null
	if [ "$RC" = 0 ] && matches 'ETA [0-9]' "$(tr '\r' '\n' <"$T/.out")" && matches '^vault pv: freed' "$(tr '\r' '\n' <"$T/.out" | sed 's/^.*\x1b\[2K//')"; then
		pass "prune on a terminal: a bar with an ETA, then its line"
	else
		fail "prune (exit $RC) on a terminal: $(cat -v "$T/.out" | head -c 300)"
	fi
fi
expect_ok cbrfs check pv --read-data
# backup wait follows a running backup: a bar with an ETA on a terminal.
# The backup is stopped (SIGSTOP) once its status exists, so that it
# cannot end before the wait has drawn, and continued once it has.
if command -v script >/dev/null; then
	mkdir -p "$T/wsrc"
	head -c 150000000 /dev/urandom >"$T/wsrc/big"
	expect_ok cbrfs vault create wv --type filesystem --capacity 10
	expect_ok cbrfs vault associate wv --path "$T/wsrc" --name w
	bg "$CBRFS_BIN" --store "$STORE" backup create wv --name w1 >"$T/w1.out" 2>&1
	backup_pid=$BG_PID
	on_exit "kill -CONT $backup_pid"
	wait_for 30 "the backup's status" test -e "$STORE/vaults/wv/running/w1.json"
	kill -STOP "$backup_pid"
	bg script -qfec "'$CBRFS_BIN' --store '$STORE' backup wait wv w1" "$T/wait.typescript" >/dev/null
	wait_pid=$BG_PID
	wait_for 30 "a bar" grep -q 'ETA' "$T/wait.typescript"
	kill -CONT "$backup_pid"
	wait "$wait_pid"
	rc=$?
	if [ "$rc" = 0 ] && matches 'w1 of vault wv is available' "$(tr '\r' '\n' <"$T/wait.typescript")"; then
		pass "backup wait on a terminal: a bar with an ETA, then available"
	else
		fail "backup wait (exit $rc) on a terminal: $(cat -v "$T/wait.typescript" | head -c 300)"
	fi
	wait "$backup_pid"
	expect_eq "the waited-for backup succeeded" "$?" "0"
fi

# ---- the binary ----
# Its relative relocations are packed (build.rs: DT_RELR), so that every
# process reads 3 KB of them at start, not 296 KB (issue 13's memory rows).
if command -v readelf >/dev/null; then
	run readelf -d "$CBRFS_BIN"
	matches '\(RELR\)' "$OUT" && pass "the binary packs its relative relocations (DT_RELR)" ||
		fail "the binary has no DT_RELR: build.rs's link option is lost"
else
	skip "the binary's relocations: no readelf"
fi
