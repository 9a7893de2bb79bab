#!/usr/bin/env bash
# tests/mount_requests.sh: the round trips a `cp -a` out of the mount costs
# (issue 17: every FUSE request is a wake-up the copy waits for), counted
# exactly from fuser's debug log. After the first close no FLUSH is sent
# (answered ENOSYS once), no directory is opened (OPENDIR answered ENOSYS
# once), no file either (OPEN answered ENOSYS once: no OPEN nor RELEASE,
# one READ per small file), no name is looked up that readdirplus gave,
# and a second copy finds the files' ACLs and contents in the kernel's
# caches (FUSE_POSIX_ACL, the page cache kept across opens). Through an
# --allow-other mount every open is asked, and a small file's content is
# put into the page cache at open instead (no READ). The copies are equal
# to the source, xattrs included. After a find, the first read in a
# directory hands over the files of its subdirectory too.
. "$(dirname "$0")/lib.sh"

is_root || {
	skip "mount_requests: needs root (mount)"
	exit 0
}

MNT=$T/mnt
SRC=$T/src
mkdir -p "$MNT" "$SRC/a/b" "$SRC/c"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"

files=0
for d in "$SRC" "$SRC/a" "$SRC/a/b" "$SRC/c"; do
	for i in $(seq 1 10); do
		printf 'file %s of %s\n' "$i" "$d" >"$d/f$i.txt"
		files=$((files + 1))
	done
done
setfattr -n user.color -v blue "$SRC/a/f1.txt"
expect_ok cbrfs vault create v --type filesystem --capacity 10GB
expect_ok cbrfs vault associate v --path "$SRC" --name src
expect_ok cbrfs backup create v --name b1

LOG=$STORE/logs/mount.log
# The daemon logs every request it receives at debug level.
export RUST_LOG=info,fuser=debug
expect_ok cbrfs mount "$MNT"
unset RUST_LOG
wait_mounted "$MNT"

# count OP FROM: requests OP in mount.log after byte FROM.
count() {
	tail -c +"$(($2 + 1))" "$LOG" | grep -cE "ino 0x[0-9a-f]+ $1( |$)"
}

note "cp -a out of the mount, the kernel's caches empty"
from=$(stat -c %s "$LOG")
if cp -a "$MNT/v/b1/src" "$T/out1"; then
	pass "cp -a of the backup"
else
	fail "cp -a of the backup failed"
fi
if diff_tree "$SRC" "$T/out1"; then pass "the copy equals the source"; else fail "the copy differs"; fi
expect_eq "user.color of the copy" "$(getfattr --only-values -n user.color "$T/out1/a/f1.txt" 2>/dev/null)" blue
n=$(count FLUSH "$from")
[ "$n" -le 1 ] && pass "FLUSH sent $n times for $files closes" || fail "FLUSH sent $n times for $files closes (at most the first)"
n=$(count OPENDIR "$from")
[ "$n" -le 1 ] && pass "OPENDIR sent $n times for 4 directories" || fail "OPENDIR sent $n times (at most the first)"
n=$(count OPEN "$from")
[ "$n" -le 1 ] && pass "OPEN sent $n times for $files files (at most the first)" || fail "OPEN sent $n times for $files files (at most the first)"
expect_eq "RELEASE requests" "$(count RELEASE "$from")" 0
# The first read in each directory hands over the (up to 64) small files
# after it, after that read is answered: one READ per directory, and a few
# more where the copy overtook the handing over (one per file without it).
reads=$(count READ "$from")
[ "$reads" -le $((files / 2)) ] && pass "READ sent $reads times for $files small files in 4 directories" || fail "READ sent $reads times for $files small files in 4 directories (the files after a read were not handed over)"
# v, b1 and src; every name below came with readdirplus.
n=$(count LOOKUP "$from")
[ "$n" -le 3 ] && pass "LOOKUP sent $n times (the path only)" || fail "LOOKUP sent $n times (readdirplus gave every name below the path)"

note "cp -a again: ACLs from the kernel's cache"
from=$(stat -c %s "$LOG")
cp -a "$MNT/v/b1/src" "$T/out2" && pass "second cp -a" || fail "second cp -a failed"
if diff_tree "$SRC" "$T/out2"; then pass "the second copy equals the source"; else fail "the second copy differs"; fi
# (The directories' may be asked again: the kernel drops an inode's cached
# ACLs when it refreshes its attributes, and a listing marks a
# directory's atime stale; so does a READ, for the files read by one.)
n=$(tail -c +"$((from + 1))" "$LOG" | grep -c 'GETXATTR name "system.posix_acl_access"')
[ "$n" -le $((4 + reads)) ] && pass "ACLs asked $n times for $files files and 4 directories ($reads files read by READ)" || fail "ACLs asked $n times: the files' ACLs were not cached by the kernel"
expect_eq "READ requests, second copy" "$(count READ "$from")" 0
expect_eq "FLUSH requests, second copy" "$(count FLUSH "$from")" 0
expect_eq "OPEN requests, second copy" "$(count OPEN "$from")" 0

expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"

note "an --allow-other mount asks every open; small files need no READ"
export RUST_LOG=info,fuser=debug
expect_ok cbrfs mount "$MNT" --allow-other
unset RUST_LOG
wait_mounted "$MNT"
from=$(stat -c %s "$LOG")
cp -a "$MNT/v/b1/src" "$T/out3" && pass "cp -a through --allow-other" || fail "cp -a through --allow-other failed"
if diff_tree "$SRC" "$T/out3"; then pass "that copy equals the source"; else fail "that copy differs"; fi
expect_eq "OPEN requests, --allow-other" "$(count OPEN "$from")" "$files"
expect_eq "READ requests for $files small files, --allow-other" "$(count READ "$from")" 0
expect_ok cbrfs umount "$MNT"

note "a listed tree: the first read in a directory hands over its subdirectory's files too"
# The copy that follows a find (as the benchmark's does): the read of
# top/f01 hands over f02..f10 and, one level down, sub/s01..s10, which the
# copy reads next; before session 12, sub/s01 cost a READ of its own.
SRC2=$T/src2
mkdir -p "$SRC2/sub"
for i in 01 02 03 04 05 06 07 08 09 10; do
	printf 'top %s\n' "$i" >"$SRC2/f$i"
	printf 'sub %s\n' "$i" >"$SRC2/sub/s$i"
done
expect_ok cbrfs vault create w --type filesystem --capacity 10GB
expect_ok cbrfs vault associate w --path "$SRC2" --name src2
expect_ok cbrfs backup create w --name b1
export RUST_LOG=info,fuser=debug
expect_ok cbrfs mount "$MNT"
unset RUST_LOG
wait_mounted "$MNT"
find "$MNT/w/b1/src2" >/dev/null
from=$(stat -c %s "$LOG")
cp -a "$MNT/w/b1/src2" "$T/out4" && pass "cp -a after a find" || fail "cp -a after a find failed"
if diff_tree "$SRC2" "$T/out4"; then pass "that copy equals the source"; else fail "that copy differs"; fi
expect_eq "READ requests for 20 small files in a directory and its subdirectory, listed before" "$(count READ "$from")" 1
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"
