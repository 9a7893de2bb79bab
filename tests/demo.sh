#!/usr/bin/env bash
# tests/demo.sh: the README's first command, scripts/demo.sh, run twice in a
# row while the first run's mount is still up (it must start afresh, not
# fail on "Text file busy"), and with its output not on a terminal (no
# escape codes in a log).
. "$(dirname "$0")/lib.sh"

D=$T/demo
on_exit "'$CBRFS_BIN' umount --lazy '$D/mnt' >/dev/null 2>&1; fusermount3 -uz '$D/mnt' 2>/dev/null"

out=$(DEMO_DIR=$D "$REPO/scripts/demo.sh" 2>&1) && pass "demo runs" || fail "demo: $(printf '%s' "$out" | tail -n 20)"
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
