#!/usr/bin/env bash
# tests/demo.sh: the README's first command, scripts/demo.sh, run twice in a
# row while the first run's mount is still up (it must start afresh, not
# fail on "Text file busy"), and with its output not on a terminal (no
# escape codes in a log); its S3 part (a SeaweedFS cluster, a lost host, a
# new one restoring from the bucket) restores identical data.
. "$(dirname "$0")/lib.sh"

D=$T/demo
on_exit "'$CBRFS_BIN' umount --lazy '$D/mnt' >/dev/null 2>&1; fusermount3 -uz '$D/mnt' 2>/dev/null"

out=$(DEMO_DIR=$D "$REPO/scripts/demo.sh" 2>&1) && pass "demo runs" || fail "demo: $(printf '%s' "$out" | tail -n 20)"
# The bucket part: a new host restored the vault from the bucket alone.
case $out in
*"restored on a new host from the bucket alone: identical"*) pass "the demo restores an S3 vault on a new host" ;;
*) fail "the demo's S3 part did not restore: $(printf '%s' "$out" | tail -n 20)" ;;
esac
[ ! -e "$D/host1" ] && pass "the lost host's store is gone" || fail "the demo left $D/host1"
if grep -qs " $D/mnt " /proc/self/mountinfo; then
	pass "the demo leaves its store mounted"
else
	fail "the demo's mount is not up after it"
fi
out=$(DEMO_DIR=$D "$REPO/scripts/demo.sh" 2>&1) && pass "demo re-run while its mount is up" || fail "demo re-run: $(printf '%s' "$out" | tail -n 20)"
if printf '%s' "$out" | grep -q $'\033'; then
	fail "the demo printed escape codes into a pipe"
else
	pass "no escape codes when not on a terminal"
fi
expect_eq "the re-run's store holds its two backups" \
	"$(CBRFS_STORE=$D/store "$CBRFS_BIN" backup list demo --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" 2
