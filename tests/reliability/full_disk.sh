#!/usr/bin/env bash
# tests/reliability/full_disk.sh: the store on a small tmpfs. A backup that
# hits ENOSPC fails cleanly: every earlier backup restores, no half-made
# backup is listed, its partial packs are gone, and the next backup after
# space is freed succeeds. A restore into a full target fails with an error
# and does not pretend to have succeeded.
. "$(dirname "$0")/../lib.sh"

if ! is_root; then
	skip "full disk: needs root to mount a tmpfs"
	exit 0
fi
mkdir -p "$T/small" "$T/src"
mount -t tmpfs -o size=24m tmpfs "$T/small" || die "mount tmpfs"
on_exit "umount -l '$T/small'"
STORE=$T/small/store

head -c 4000000 /dev/urandom >"$T/src/first"
cbrfs vault create v --type filesystem --capacity 10GB --compression none >/dev/null
cbrfs vault associate v --path "$T/src" --name src >/dev/null
expect_ok cbrfs backup create v --name ok1
used_before=$(du -sk "$STORE/vaults/v/packs" | cut -f1)

note "a backup larger than the free space"
head -c 40000000 /dev/urandom >"$T/src/big"
expect_exit 1 'No space left on device|space' -- cbrfs backup create v --name toobig
cbrfs backup list v | grep -q '^toobig ' && fail "the failed backup is listed" || pass "no half-made backup is listed"
used_after=$(du -sk "$STORE/vaults/v/packs" | cut -f1)
[ "$used_after" -le $((used_before + 64)) ] && pass "its partial packs were removed (${used_before} KiB -> ${used_after} KiB)" ||
	fail "packs grew from ${used_before} KiB to ${used_after} KiB"
find "$STORE" -name '.tmp-*' | grep -q . && fail "temporary files left: $(find "$STORE" -name '.tmp-*')" || pass "no temporary files left"
expect_ok cbrfs restore v ok1 --to "$T/r1"
cmp -s "$T/src/first" "$T/r1/first" && pass "the earlier backup restores" || fail "ok1 differs"
expect_ok cbrfs check --read-data

note "after space is freed"
rm -f "$T/src/big"
head -c 2000000 /dev/urandom >"$T/src/second"
expect_ok cbrfs backup create v --name ok2
expect_ok cbrfs restore v ok2 --to "$T/r2"
cmp -s "$T/src/second" "$T/r2/second" && pass "the next backup succeeds and restores" || fail "ok2 differs"

note "a restore into a full target"
mkdir -p "$T/tiny"
mount -t tmpfs -o size=1m tmpfs "$T/tiny" || die "mount tiny tmpfs"
on_exit "umount -l '$T/tiny'"
expect_exit 1 'No space left on device' -- cbrfs restore v ok2 --to "$T/tiny/out"
