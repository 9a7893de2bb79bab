#!/usr/bin/env bash
# tests/reliability/changing.sh: files that change or vanish while a backup
# reads them. A background process (tests/reliability/churn.py) keeps
# appending to, truncating, rewriting in place, deleting and re-creating
# files, replacing files by FIFOs and back, and renaming directories back
# and forth, in SRC/churn, while
# `cbrfs backup create` runs CHANGE_ROUNDS times. SRC/stable never changes.
#
# Every churned file is written so that a correct copy can be recognised
# whatever instant it was read at: `grow-*`, `re-*` and the files in the
# renamed directories hold a prefix of one fixed pattern of non-zero bytes
# (so a hole, a zero tail or bytes from elsewhere show), `rw-*` files keep
# their size and are rewritten with one non-zero byte per generation (a
# torn read mixes generations, never zeros). A file missing from a
# restored directory of the churn must be named by a warning (it, or a
# directory above it).
#
# Checks, each round: exit 0 or 3 (3 = made with skipped or changed
# entries), never a crash; exit 3 exactly when warnings are printed, and
# every warning names a path under SRC/churn; SRC/stable restores byte for
# byte; every churned file restored is a valid state of that file (above);
# `cbrfs check` passes. At the end: at least one round overlapped the churn
# (else the test tried nothing); every round's backup restores again
# exactly as it did first; `cbrfs check --read-data` passes; with the churn
# stopped, the next backup exits 0 and restores equal to the source.
#
# Environment:
#   CHANGE_ROUNDS  backups taken during the churn [default 10]
#   CHANGE_SEED    seed of the churn [default 11]; printed, replay with it
#   CHANGE_MB      MB of unchanging data in SRC/stable [default 48]
. "$(dirname "$0")/../lib.sh"

ROUNDS=${CHANGE_ROUNDS:-10}
SEED=${CHANGE_SEED:-11}
MB=${CHANGE_MB:-48}
note "CHANGE_ROUNDS=$ROUNDS CHANGE_SEED=$SEED CHANGE_MB=$MB"

S=$T/src
mkdir -p "$S/stable/small" "$S/churn"
for i in $(seq 1 $((MB / 4))); do
	head -c $((4 << 20)) /dev/urandom >"$S/stable/big$i"
done
for i in $(seq 1 300); do
	printf 'stable %d\n' "$i" >"$S/stable/small/s$i"
done
ln -s big1 "$S/stable/link"
CHURN="python3 $TESTS/reliability/churn.py"
$CHURN setup "$S/churn" "$SEED" || die "churn setup"

cbrfs vault create cv --type filesystem --capacity 100GB >/dev/null || die "vault create"
cbrfs vault associate cv --path "$S" --name src >/dev/null || die "vault associate"

# manifest DIR: every entry with its type, and the sha256 of every file.
manifest() {
	(cd "$1" && find . -printf '%y %p\n' | sort && find . -type f -print0 | sort -z | xargs -0r sha256sum)
}
manifest "$S/stable" >"$T/stable.ref"

note "churn: appends, truncations, in-place rewrites, deletions and re-creations of files, files and FIFOs swapped, renames of directories"
bg $CHURN run "$S/churn" "$SEED" "$T/churn.stats"
CHURN_PID=$BG_PID
wait_for 10 "the churn to start" test -s "$T/churn.stats"

OVERLAPPED=0 WARNINGS=0 CODES=
declare -A KINDS=()
for r in $(seq 1 "$ROUNDS"); do
	b=c$r
	# Always a full read: an incremental backup would skip unchanged files,
	# and every round should race with the churn on all of them.
	run cbrfs backup create cv --name "$b" --full
	CODES="$CODES $RC"
	cp "$T/.err" "$T/$b.err"
	if matches 'panicked' "$OUT
$ERR"; then
		fail "round $r: the backup panicked: $(head -c 600 "$T/$b.err")"
	fi
	case $RC in
	0 | 3) pass "round $r: backup exit $RC" ;;
	*) fail "round $r: backup exit $RC (only 0 or 3 are allowed): $(head -c 600 "$T/$b.err")"; continue ;;
	esac
	nwarn=$(grep -c '^warning: resource src: ' "$T/$b.err")
	WARNINGS=$((WARNINGS + nwarn))
	if [ "$RC" = 3 ] && [ "$nwarn" -gt 0 ]; then
		OVERLAPPED=$((OVERLAPPED + 1))
		pass "round $r: exit 3 with $nwarn warnings"
	elif [ "$RC" = 0 ] && [ "$nwarn" = 0 ]; then
		pass "round $r: exit 0 without warnings"
	else
		fail "round $r: exit $RC but $nwarn warnings"
	fi
	# Every warning names a churned path, never an unchanging one.
	bad=$(grep '^warning: resource src: ' "$T/$b.err" | grep -v "^warning: resource src: $S/churn/")
	if [ -z "$bad" ]; then
		pass "round $r: every warning names a path under $S/churn"
	else
		fail "round $r: warnings about other paths: $(printf '%s' "$bad" | head -n 5)"
	fi
	while read -r kind; do
		KINDS[$kind]=$((${KINDS[$kind]:-0} + 1))
	done < <(grep '^warning: resource src: ' "$T/$b.err" | sed -E "s|^warning: resource src: $S/churn/[^:]*: ||; s/[0-9]+/N/g" | cut -c1-60)
	grep '^warning: resource src: ' "$T/$b.err" | head -n 3 | sed 's/^/   /'

	rm -rf "$T/r"
	if ! out=$(cbrfs restore cv "$b" --to "$T/r" 2>&1); then
		fail "round $r: restore of $b: $out"
		continue
	fi
	if out=$(diff <(manifest "$T/r/stable") "$T/stable.ref"); then
		pass "round $r: the unchanging files restore byte for byte"
	else
		fail "round $r: the unchanging files differ: $(printf '%s' "$out" | head -n 10)"
	fi
	# A record keeps the first 100 warnings: past that, missing files may
	# go unnamed.
	named=("$T/$b.err" "$S/churn")
	if [ "$nwarn" -ge 100 ]; then
		note "round $r: $nwarn warnings (the record keeps 100): missing files are not matched with warnings"
		named=()
	fi
	if out=$($CHURN verify "$T/r/churn" "${named[@]}" 2>&1); then
		pass "round $r: every churned file restored is a state it had${named[*]:+, every one missing is named by a warning} ($out)"
	else
		fail "round $r: churned files restored wrong: $(printf '%s' "$out" | head -n 10)"
	fi
	manifest "$T/r" >"$T/m-$b"
	check "round $r: cbrfs check" cbrfs check
done

kill "$CHURN_PID" 2>/dev/null
wait "$CHURN_PID" 2>/dev/null
wait_for 10 "the churn to write its counts" grep -q '"stopped": true' "$T/churn.stats"
note "churn did: $(cat "$T/churn.stats")"
note "backup exit codes:$CODES; $WARNINGS warnings in all, by kind:"
for k in "${!KINDS[@]}"; do
	printf -- '--   %5d  %s\n' "${KINDS[$k]}" "$k"
done
if [ "$OVERLAPPED" -gt 0 ]; then
	pass "$OVERLAPPED of $ROUNDS backups overlapped the churn (exit 3 with warnings)"
else
	fail "no backup overlapped the churn: the test tried nothing"
fi

note "every backup restores again as it did first"
for r in $(seq 1 "$ROUNDS"); do
	b=c$r
	[ -f "$T/m-$b" ] || continue
	rm -rf "$T/r"
	if cbrfs restore cv "$b" --to "$T/r" >"$T/.out" 2>&1 && out=$(diff <(manifest "$T/r") "$T/m-$b"); then
		pass "$b restores again identically"
	else
		fail "$b does not restore again identically: $(cat "$T/.out") ${out:-}"
	fi
done
check "cbrfs check --read-data" cbrfs check --read-data

note "the churn stopped: the next backup is clean and exact"
expect_exit 0 '' -- cbrfs backup create cv --name after
rm -rf "$T/r"
expect_ok cbrfs restore cv after --to "$T/r"
if out=$(treecmp "$S" "$T/r"); then
	pass "the backup after the churn restores equal to the source"
else
	fail "the backup after the churn differs from the source: $out"
fi
check "cbrfs check --read-data after the last backup" cbrfs check --read-data
