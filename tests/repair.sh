#!/usr/bin/env bash
# tests/repair.sh: a lost or damaged index is rebuilt from the packs by
# `cbrfs check --repair`, without losing any backup whose data is intact.
. "$(dirname "$0")/lib.sh"

SRC=$T/src
mkdir -p "$SRC/d"
head -c 3000000 /dev/urandom >"$SRC/blob"
printf 'one\n' >"$SRC/d/f"
cbrfs vault create v --type filesystem --capacity 10GB >/dev/null
cbrfs vault associate v --path "$SRC" --name src >/dev/null
expect_ok cbrfs backup create v --name a
printf 'two\n' >>"$SRC/d/f"
head -c 1000000 /dev/urandom >"$SRC/more"
expect_ok cbrfs backup create v --name b
cbrfs restore v b --to "$T/ref-b" >/dev/null

note "every index file deleted"
rm -f "$STORE"/vaults/v/index/*.idx
expect_exit 1 '' -- cbrfs check v
printf '%s' "$OUT" | grep -q 'damaged backup: a' && printf '%s' "$OUT" | grep -q 'damaged backup: b' &&
	pass "check names both backups as damaged" || fail "check output: $OUT"
expect_exit 0 'index rebuilt from [0-9]+ packs' -- cbrfs check v --repair --read-data
expect_ok cbrfs restore v b --to "$T/b"
out=$(treecmp "$T/ref-b" "$T/b" 2>&1) && pass "b restores exactly after the repair" || fail "b: $out"

note "a damaged index"
idx=$(ls "$STORE"/vaults/v/index/*.idx | head -1)
python3 -c "
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 2] ^= 0xff
open(p, 'wb').write(b)
" "$idx"
expect_exit 1 '' -- cbrfs check v
expect_ok cbrfs check v --repair --read-data
expect_ok cbrfs restore v a --to "$T/a"
expect_eq "a's file after the repair" "$(cat "$T/a/d/f")" "one"
expect_ok cbrfs backup create v --name c
expect_ok cbrfs check --read-data
