#!/usr/bin/env bash
# A backup killed with SIGKILL half-way leaves no visible backup, nothing
# that check or restore trips on, and no lock: the earlier backup restores
# intact and the same backup taken again succeeds and cleans up after the
# dead one.
. "$(dirname "$0")/../lib.sh"

S=$T/src
mkdir -p "$S/d"
for i in 1 2 3; do printf 'small %d\n' "$i" >"$S/d/s$i"; done
expect_ok cbrfs vault create kv --type filesystem --capacity 10
expect_ok cbrfs vault associate kv --path "$S"
expect_ok cbrfs backup create kv --name b1
expect_ok cbrfs restore kv b1 --to "$T/r1-ref"

note "adding 200 MB of new data and killing the backup once it has sealed a pack"
random_file "$S/big" $((200 << 20))
PACKS=$STORE/vaults/kv/packs
packs_before=$(find "$PACKS" -name '*.pack' | wc -l)
"$CBRFS_BIN" --store "$STORE" backup create kv --name b2 >"$T/b2.out" 2>&1 &
pid=$!
more_packs() { [ "$(find "$PACKS" -name '*.pack' | wc -l)" -gt "$packs_before" ]; }
wait_for 60 "the backup to seal its first pack" more_packs
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rc=$?
if [ "$rc" = 137 ]; then
	pass "the backup died of SIGKILL after sealing a pack"
else
	die "the backup was not killed in time (exit $rc): $(cat "$T/b2.out")"
fi

expect_ok cbrfs backup list kv --json
expect_eq "backups after the kill" "$(json_get "$T/.out" '[b["name"] for b in j]')" '["b1"]'
expect_exit 2 'BackupService.6200' -- cbrfs backup show kv b2
expect_exit 2 'BackupService.6200' -- cbrfs restore kv b2 --to "$T/r2-dead"
expect_ok cbrfs check --read-data
expect_ok cbrfs restore kv b1 --to "$T/r1"
if out=$(treecmp "$T/r1-ref" "$T/r1"); then pass "b1 restores intact after the kill"; else fail "b1 after the kill: $out"; fi

note "the same backup again"
expect_ok cbrfs backup create kv --name b2 --json
expect_eq "b2 taken again reads the new data" "$(json_get "$T/.out" 'j["stats"]["bytes_read"]')" $((200 << 20))
leftovers=$(find "$STORE" -name '.tmp-*')
if [ -z "$leftovers" ]; then
	pass "no temporary files are left in the store"
else
	fail "temporary files left in the store: $leftovers"
fi
expect_ok cbrfs restore kv b2 --to "$T/r2"
if out=$(treecmp "$S" "$T/r2"); then pass "b2 taken again restores whole"; else fail "b2 taken again: $out"; fi
expect_ok cbrfs check --read-data
