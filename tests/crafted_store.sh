#!/usr/bin/env bash
# tests/crafted_store.sh: the release binary on hostile stores (issue 12,
# findings 4, 8 and 9). The stores are written by the crate's own encoders
# and store writer (tests/crafted_store.rs, `write_crafted_stores`, run here
# with cargo); each command runs under `timeout 30` and `prlimit --as` of
# 2 GB, and must end in time, within memory, without a panic, with an
# error that names the backup (or cleanly, where the store is only odd).
. "$(dirname "$0")/lib.sh"

LIMIT_AS=2000000000
CRAFTED=$T/crafted

if ! command -v cargo >/dev/null; then
	skip "crafted stores: cargo is needed to write them"
	exit 0
fi
note "writing the crafted stores"
if ! (cd "$REPO" && CBRFS_CRAFTED_DIR=$CRAFTED cargo test -q --test crafted_store \
	write_crafted_stores -- --ignored --exact) >"$T/cargo.log" 2>&1; then
	die "crafted stores could not be written: $(tail -n 20 "$T/cargo.log")"
fi

# bounded CASE EXPECTED_RC PATTERN ARGS...: run the binary on case CASE's
# store under the time and memory limits; PASS if it exits EXPECTED_RC
# and its output matches PATTERN (extended regexp, empty: anything).
bounded() {
	local case=$1 want=$2 pattern=$3
	shift 3
	run timeout 30 prlimit --as=$LIMIT_AS -- "$CBRFS_BIN" --store "$CRAFTED/$case/store" "$@"
	local all="$OUT
$ERR"
	if [ "$RC" = 124 ]; then
		fail "$case: '$*' did not finish within 30 s"
	elif [ "$RC" -gt 128 ]; then
		fail "$case: '$*' died of signal $((RC - 128)) (memory limit?): $(tail -n 5 <<<"$ERR")"
	elif matches 'panicked|memory allocation' "$all"; then
		fail "$case: '$*' panicked or ran out of memory: $(tail -n 5 <<<"$ERR")"
	elif [ "$RC" != "$want" ]; then
		fail "$case: '$*' exited $RC, expected $want: $(tail -n 5 <<<"$all")"
	elif [ -n "$pattern" ] && ! matches "$pattern" "$all"; then
		fail "$case: '$*' output does not match /$pattern/: $(tail -n 5 <<<"$all")"
	else
		pass "$case: '$*' exited $RC in time and memory"
	fi
}

# nothing_outside CASE: restore (into $T/out-CASE/t) wrote nothing beside
# its target, nor where `../../escaped-file` leads.
nothing_outside() {
	local beside
	beside=$(ls -A "$T/out-$1" | grep -vx t)
	if [ -n "$beside" ] || [ -e "$T/escaped-file" ]; then
		fail "$1: restore wrote outside its target: $beside $(ls "$T")"
	else
		pass "$1: restore wrote nothing outside its target"
	fi
}

note "finding 4: a resource root named ../../escaped-file"
bounded escape 1 'escape' check v --read-data
mkdir -p "$T/out-escape"
bounded escape 1 'escape' restore v escape --to "$T/out-escape/t"
nothing_outside escape
bounded escape 0 '' restore v good --to "$T/good-escape"

note "finding 4: a tree entry named ../x"
bounded escape-tree 1 'escapetree' check v --read-data
mkdir -p "$T/out-escape-tree"
bounded escape-tree 1 'escapetree' restore v escapetree --to "$T/out-escape-tree/t"
nothing_outside escape-tree

note "finding 9: root and root node disagree"
bounded split 1 'split' check v --read-data
bounded split 1 'split' prune v
bounded split 1 'split' restore v split --to "$T/split"

note "finding 8: a 1-byte file naming 2 GiB"
bounded tiny 1 'tiny' check v --read-data
bounded tiny 1 'tiny' restore v tiny --to "$T/tiny"
# Restore writes each chunk, then sets the file's size: the 2 GiB would be
# written and cut back to 1 byte, so its report is what tells.
if matches 'GiB' "$OUT$ERR"; then
	fail "tiny: restore wrote GiBs: $OUT"
else
	pass "tiny: restore did not write 2 GiB"
fi

note "finding 8: one chunk list repeated 40,000 times (8e7 chunk references)"
bounded biglists 0 '' check v --read-data
bounded biglists 0 '' prune v

note "finding 8: 40 trees each pointing twice at the next"
bounded shared 0 '' check v --read-data
bounded shared 0 '' prune v

note "finding 8: 10,000 levels of nesting"
bounded deep 0 '' check v --read-data
bounded deep 0 '' prune v
