#!/usr/bin/env bash
# tests/server.sh: server vaults. A server of two directories and a disk
# image is backed up in one run; a member added later is in the next
# backup; hooks run in order (pre before any member is read, post after,
# also after a failure); a failing pre-hook fails the backup cleanly;
# restore puts every member under a root, or back in place.
. "$(dirname "$0")/lib.sh"

MNT=$T/mnt
mkdir -p "$MNT" "$T/etc" "$T/data/db" "$T/later"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"
printf 'conf\n' >"$T/etc/app.conf"
head -c 3000000 /dev/urandom >"$T/data/db/table"
printf 'late\n' >"$T/later/file"
truncate -s 64M "$T/vol.img"
head -c 1048576 /dev/urandom | dd of="$T/vol.img" bs=1M seek=10 conv=notrunc status=none
HOOKLOG=$T/hooks.log

# Only init and vault create create a store (issue #16).
expect_exit 2 'no cbrfs store at' -- cbrfs server define app --path "$T/etc"
expect_ok cbrfs init
expect_exit 2 'BackupService.7108|--path|required' -- cbrfs server define empty
expect_ok cbrfs server define app --path "$T/etc" --path "$T/data" --disk "$T/vol.img" \
	--pre-hook "echo pre \$CBRFS_BACKUP >> '$HOOKLOG'; echo frozen > '$T/data/FROZEN'" \
	--post-hook "echo post \$CBRFS_BACKUP \$CBRFS_RESULT >> '$HOOKLOG'; rm -f '$T/data/FROZEN'"
cbrfs vault create sv --type server --capacity 10GB >/dev/null
cbrfs vault create fs --type filesystem --capacity 10GB >/dev/null
expect_exit 2 'BackupService.6102' -- cbrfs vault associate fs --server app
expect_exit 2 'BackupService.6302' -- cbrfs vault associate sv --server nosuch
expect_ok cbrfs vault associate sv --server app
expect_exit 2 'associated with vault sv' -- cbrfs server delete app

note "one backup holds all three members"
expect_ok cbrfs backup create sv --name b1
expect_ok cbrfs mount "$MNT"
expect_eq "members in the mount" "$(ls "$MNT/sv/b1/app" | tr '\n' ' ')" "data etc vol.img "
expect_eq "a directory member" "$(cat "$MNT/sv/b1/app/etc/app.conf")" "conf"
cmp -s "$T/data/db/table" "$MNT/sv/b1/app/data/db/table" && pass "the data member reads back" || fail "data differs"
cmp -s "$T/vol.img" "$MNT/sv/b1/app/vol.img" && pass "the disk member reads back as vol.img" || fail "vol.img differs"
expect_eq "hooks ran in order" "$(cat "$HOOKLOG" | tr '\n' '|')" "pre b1|post b1 success|"
[ -f "$MNT/sv/b1/app/data/FROZEN" ] && pass "the pre-hook ran before the members were read" || fail "FROZEN not in the backup"
[ ! -e "$T/data/FROZEN" ] && pass "the post-hook ran after" || fail "post-hook did not clean up"

note "a member added later is in the next backup"
expect_ok cbrfs server update app --add-path "$T/later"
expect_ok cbrfs backup create sv --name b2
wait_for 3 "b2 in the mount" test -d "$MNT/sv/b2/app"
expect_eq "members of b2" "$(ls "$MNT/sv/b2/app" | tr '\n' ' ')" "data etc later vol.img "
expect_eq "the new member's file" "$(cat "$MNT/sv/b2/app/later/file")" "late"

note "restore every member under a root"
expect_ok cbrfs restore sv b2 --resource app --to "$T/root"
out=$(diff_tree "$T/etc" "$T/root/etc") && pass "etc restored" || fail "etc: $out"
cmp -s "$T/vol.img" "$T/root/vol.img" && pass "vol.img restored" || fail "vol.img differs"
expect_eq "later restored" "$(cat "$T/root/later/file")" "late"

note "restore in place"
printf 'damaged\n' >"$T/etc/app.conf"
dd if=/dev/zero of="$T/vol.img" bs=1M seek=10 count=1 conv=notrunc status=none
expect_ok cbrfs restore sv b2 --resource app --in-place
expect_eq "the directory member is back" "$(cat "$T/etc/app.conf")" "conf"
cmp -s "$T/vol.img" "$MNT/sv/b2/app/vol.img" && pass "the disk member is back in place" || fail "vol.img not restored"
ls -d "$T"/etc.cbrfs-replaced-* >/dev/null 2>&1 && pass "the replaced directory was moved aside, not lost" || fail "no etc.cbrfs-replaced-*"

note "the post-hook runs after a failure too"
: >"$HOOKLOG"
mv "$T/vol.img" "$T/vol.moved"
expect_exit 1 'vol.img' -- cbrfs backup create sv --name broken
expect_eq "hooks around the failed backup" "$(cat "$HOOKLOG" | tr '\n' '|')" "pre broken|post broken failure|"
cbrfs backup list sv | grep -q '^broken ' && fail "a failed backup is listed" || pass "no half-made backup is listed"
mv "$T/vol.moved" "$T/vol.img"

note "a failing pre-hook fails the backup cleanly"
: >"$HOOKLOG"
expect_ok cbrfs server update app --pre-hook "echo cannot freeze the database >&2; exit 3"
expect_exit 1 'pre-hook.*cannot freeze the database' -- cbrfs backup create sv --name nope
cbrfs backup list sv | grep -q '^nope ' && fail "a backup with a failed pre-hook is listed" || pass "nothing half-made after a failed pre-hook"
expect_eq "the post-hook ran after the failed pre-hook" "$(cat "$HOOKLOG" | tr '\n' '|')" "post nope failure|"
expect_ok cbrfs check --read-data
expect_ok cbrfs umount "$MNT"
