#!/usr/bin/env bash
# Daily operation (issue #16): only creating commands create a store; mount
# refuses a non-empty mount point; one policy scheduler per store whatever
# the number of mounts; no "[Not Implemented]" noise in mount.log; a
# simulated `policy run-due --now` in the future moves neither `latest` nor
# the expiry of today's task records.
. "$(dirname "$0")/lib.sh"

E='^cbrfs: error: '

note "no command but init and vault create creates a store"
for args in "vault list" "backup list" "task list" "policy list" "check"; do
	# shellcheck disable=SC2086 # words on purpose
	expect_exit 2 "${E}no cbrfs store at $STORE" -- cbrfs $args
done
[ ! -e "$STORE" ] && pass "no store left behind by the refused commands" ||
	fail "the refused commands created $STORE"
mkdir -p "$T/umnt"
run cbrfs umount "$T/umnt"
[ ! -e "$STORE" ] && pass "umount creates no store" || fail "umount created $STORE"
expect_exit 2 "${E}no cbrfs store at $T/typo .*; $T/typo is \\\$CBRFS_STORE" -- \
	env CBRFS_STORE="$T/typo" "$CBRFS_BIN" backup list
[ ! -e "$T/typo" ] && pass "a mistyped \$CBRFS_STORE is not created" || fail "$T/typo was created"
expect_exit 2 "vault name" -- cbrfs vault create 'bad name' --type filesystem --capacity 10
[ ! -e "$STORE" ] && pass "a refused vault create creates no store" || fail "a refused vault create created $STORE"
expect_ok cbrfs init
matches "^created cbrfs store at $T/store" "$OUT" && pass "init: $OUT" || fail "init said: $OUT"
expect_ok cbrfs init
matches "^existing cbrfs store" "$OUT" && pass "init again: $OUT" || fail "init again said: $OUT"
expect_ok cbrfs vault list --json
expect_eq "vault list of a new store" "$OUT" "[]"
expect_ok "$CBRFS_BIN" --store "$T/store2" vault create v2 --type filesystem --capacity 10
[ -f "$T/store2/cbrfs-store.json" ] && pass "vault create creates its store" || fail "vault create made no store"

note "a source and a vault"
SRC=$T/src
mkdir -p "$SRC/d"
for i in 1 2 3 4 5; do printf 'file %s\n' "$i" >"$SRC/d/f$i"; done
expect_ok cbrfs vault create v --type filesystem --capacity 10
expect_ok cbrfs vault associate v --path "$SRC" --name src
expect_ok cbrfs backup create v --name b1

note "mount refuses a non-empty mount point unless --nonempty"
MNT=$T/mnt
MNT2=$T/mnt2
mkdir -p "$MNT" "$MNT2"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT2'; fusermount3 -uz '$MNT2'"
printf 'mine\n' >"$MNT/keep"
expect_exit 2 "${E}mount point $MNT is not empty.*--nonempty" -- cbrfs mount "$MNT"
expect_ok cbrfs mount "$MNT" --nonempty
expect_eq "a file of the store through the --nonempty mount" "$(cat "$MNT/v/b1/src/d/f1")" "file 1"
expect_ok cbrfs umount "$MNT"
expect_eq "the hidden file is back after umount" "$(cat "$MNT/keep")" "mine"
rm -f "$MNT/keep"

note "reading through the mount leaves no [Not Implemented] in mount.log"
LOG=$STORE/logs/mount.log
expect_ok cbrfs mount "$MNT"
for i in 1 2 3 4 5; do cat "$MNT/v/b1/src/d/f$i" >/dev/null; done
cp -r "$MNT/v/b1/src/d" "$T/copied"
sync -f "$MNT/v/b1/src/d/f1" 2>/dev/null
expect_ok cbrfs umount "$MNT"
if grep -q "Not Implemented" "$LOG"; then
	fail "mount.log has Not Implemented lines: $(grep "Not Implemented" "$LOG" | sort | uniq -c | head -5)"
else
	pass "mount.log has no Not Implemented line after reads, cp and fsync"
fi

note "two mounts of one store: one scheduler, one backup per time point"
# A daily point at the next minute (UTC), applied now: due within a minute.
read -r h m < <(date -u -d '+1 minute' '+%-H %-M')
expect_ok cbrfs policy create pnow --schedule "FREQ=DAILY;BYHOUR=$h;BYMINUTE=$m" --keep-last 10
expect_ok cbrfs policy apply pnow v
: >"$LOG"
expect_ok cbrfs mount "$MNT"
expect_ok cbrfs mount "$MNT2"
wait_for 20 "the second mount says it does not schedule" \
	grep -q "another cbrfs mount of this store runs the policy scheduler" "$LOG"
policy_backups() {
	cbrfs backup list v --json | python3 -c 'import json,sys; print(sum(1 for b in json.load(sys.stdin) if b.get("origin") == "policy"))'
}
has_policy_backup() { [ "$(policy_backups)" -ge 1 ]; }
wait_for 150 "a policy backup from the mounts' scheduler" has_policy_backup
# Both daemons pass every 30 s: give each time for one more pass.
deadline=$((SECONDS + 35))
while [ "$SECONDS" -lt "$deadline" ] && [ "$(policy_backups)" -le 1 ]; do sleep 1; done
expect_eq "policy backups for the one time point, two mounts" "$(policy_backups)" 1
expect_eq "the second mount serves files" "$(cat "$MNT2/v/b1/src/d/f2")" "file 2"
expect_ok cbrfs umount "$MNT2"

note "policy run-due --now in the future changes no real data"
today_task=$(cbrfs task list --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
expect_ok cbrfs policy run-due --now 2027-06-01T14:00:00Z --json
matches "backed up" "$OUT" && pass "the simulated pass backed up" || fail "simulated pass: $OUT"
expect_ok cbrfs backup create v --name real1
expect_eq "latest after a simulated 2027 pass and a real backup" "$(readlink "$MNT/v/latest")" "real1"
if cbrfs task list --json | python3 -c 'import json,sys; sys.exit(0 if any(t["id"] == sys.argv[1] for t in json.load(sys.stdin)) else 1)' "$today_task"; then
	pass "today's task $today_task survives a pass dated 2027"
else
	fail "today's task $today_task was expired by a pass dated 2027"
fi
state=$STORE/vaults/v/policy-state.json
if [ ! -f "$state" ] || python3 -c 'import json,sys,time; sys.exit(0 if json.load(open(sys.argv[1]))["last_ns"] <= time.time_ns() else 1)' "$state"; then
	pass "the real scheduler's state is not moved into the future"
else
	fail "policy-state.json is in the future: $(cat "$state")"
fi
expect_ok cbrfs umount "$MNT"
