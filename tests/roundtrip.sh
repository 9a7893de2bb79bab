#!/usr/bin/env bash
# Round trip: a source tree with every kind of entry and metadata is backed
# up and restored, and the restore is the same as the source (diff -r and
# treecmp.py). Then the tree changes, a second (incremental) backup restores
# as the changed tree, and the first backup still restores as it was.
. "$(dirname "$0")/lib.sh"

S=$T/src
mkdir -p "$S"

# ---- the source tree ----
note "making a source tree with every kind of entry under $S"
mkdir -p "$S/empty-dir" "$S/dir with space" "$S/sub/a/b"
: >"$S/empty"
: >"$S/sub/empty too"
printf 'small\n' >"$S/small"
cp "$S/small" "$S/same-content-as-small"
random_file "$S/big-100M" $((100 << 20))
random_file "$S/sub/a/b/medium" $((3 << 20 | 12345))
# 300 small files: many tree entries and many tiny blobs.
mkdir "$S/many"
for i in $(seq 1 300); do
	printf 'file %d\n' "$i" >"$S/many/f$i"
done

# Sparse files: data islands in a 1 GiB hole, a hole at the end, one that
# is all hole.
truncate -s 1G "$S/sparse-1G"
for off in 0 $((300 << 20)) $((700 << 20)) $(((1 << 30) - 4096)); do
	head -c 4096 /dev/urandom | dd of="$S/sparse-1G" bs=4096 seek=$((off / 4096)) conv=notrunc status=none
done
# Data past 4 GiB: offsets that do not fit 32 bits.
truncate -s 5G "$S/sparse-5G"
for off in $((4 << 30)) $(((4 << 30) + (1 << 20) + 123)) $(((5 << 30) - 1000)); do
	head -c 1000 /dev/urandom | dd of="$S/sparse-5G" bs=1 seek="$off" conv=notrunc status=none
done
printf 'head' >"$S/sparse-tail-hole"
truncate -s 64M "$S/sparse-tail-hole"
truncate -s 16M "$S/all-hole"

# Symlinks: relative, absolute, dangling, to a directory, long target.
ln -s small "$S/link-rel"
ln -s "$S/small" "$S/link-abs"
ln -s does/not/exist "$S/link-dangling"
ln -s sub "$S/link-to-dir"
ln -s "$(printf 't%.0s' $(seq 1 1000))" "$S/link-long-target"

# Hard links: a pair, a group of three across directories, one to a
# setuid file.
printf 'linked\n' >"$S/hl-a"
ln "$S/hl-a" "$S/hl-b"
printf 'three\n' >"$S/sub/hl3-1"
ln "$S/sub/hl3-1" "$S/sub/a/hl3-2"
ln "$S/sub/hl3-1" "$S/dir with space/hl3-3"

mkfifo "$S/fifo"
ln "$S/fifo" "$S/fifo-hardlink"
ln -P "$S/link-dangling" "$S/symlink-hardlink"
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$S/socket"
if is_root; then
	mknod "$S/dev-null" c 1 3
	mknod "$S/dev-block" b 7 200
	chown nobody:nogroup "$S/small"
	chown 12345:54321 "$S/sub/a/b/medium"
	chown -h 4242:4343 "$S/link-rel"
else
	skip "device nodes and owners: need root"
fi

# Extended attributes and ACLs.
setfattr -n user.color -v blue "$S/small" || die "setfattr failed: user xattrs unsupported under $T"
setfattr -n user.empty -v '' "$S/small"
setfattr -n user.binary -v 0x00ff10ee00 "$S/big-100M"
setfattr -n user.long -v "$(head -c 3000 /dev/zero | tr '\0' 'v')" "$S/sub/empty too"
setfattr -n user.on-dir -v yes "$S/sub"
setfacl -m u:nobody:r "$S/hl-a" || die "setfacl failed: ACLs unsupported under $T"
setfacl -m g:nogroup:rw,m::rw "$S/sub/a/b/medium"
setfacl -d -m u:nobody:rx "$S/dir with space"
printf 'inherits\n' >"$S/dir with space/inherits-default-acl"
if is_root; then
	setfattr -n trusted.cbrfs-test -v secret "$S/small"
	setfattr -h -n trusted.on-symlink -v yes "$S/link-abs"
	# A file capability (cap_net_raw+ep, VFS_CAP_REVISION_2): chown clears
	# it, so restore must set it after the owner.
	printf '#!/bin/sh\n' >"$S/with-capability"
	chown 1000:1000 "$S/with-capability"
	setfattr -n security.capability -v 0x0100000200200000000000000000000000000000 "$S/with-capability" ||
		fail "cannot set security.capability"
fi

# Modes: setuid, setgid, sticky, odd ones.
printf '#!/bin/sh\n' >"$S/setuid"
chmod 4755 "$S/setuid"
printf 'g\n' >"$S/setgid"
chmod 2711 "$S/setgid"
mkdir "$S/sticky" "$S/setgid-dir" "$S/no-perms-dir"
chmod 1777 "$S/sticky"
chmod 2775 "$S/setgid-dir"
printf 'x\n' >"$S/no-perms-dir/inside"
chmod 0000 "$S/no-perms-dir"
printf 'w\n' >"$S/write-only"
chmod 0222 "$S/write-only"

# Names: space, newline, non-UTF-8 bytes, 255 bytes, leading dash, dots.
printf 'space\n' >"$S/name with space"
printf 'newline\n' >"$S/$(printf 'new\nline')"
printf 'latin1\n' >"$S/$(printf 'caf\351')"
printf 'bytes\n' >"$S/$(printf '\377\376\001x')"
printf 'long\n' >"$S/$(printf 'n%.0s' $(seq 1 255))"
printf 'utf8\n' >"$S/$(printf '\303\251t\303\251')"
printf 'dash\n' >"$S/-dash"
printf 'dots\n' >"$S/..dots"
printf 'hidden\n' >"$S/.hidden"

# A deep-ish tree: 40 levels.
d=$S/deep
for i in $(seq 1 40); do d=$d/level$i; done
mkdir -p "$d"
printf 'bottom\n' >"$d/bottom"

# Times: nanoseconds, before 1970, far future; then the directories', last.
touch -h -d '2001-02-03 04:05:06.123456789' "$S/small" "$S/link-abs"
touch -d '1960-06-15 12:00:00.5' "$S/empty"
touch -d '2200-01-01 00:00:00.000000001' "$S/hl-a"
touch -d '1999-12-31 23:59:59.999999999' "$S/sub/a"

count_entries() { find "$1" -printf . | wc -c; }
note "source has $(count_entries "$S") entries"

# ---- backup 1 and its restore ----
# CBRFS_TEST_VAULT_OPTS=--encrypt (with CBRFS_PASSWORD set) runs the same
# round trip on an encrypted vault (tests/encryption.sh runs it so).
# shellcheck disable=SC2086
expect_ok cbrfs vault create rt --type filesystem --capacity 10GB ${CBRFS_TEST_VAULT_OPTS:-}
if [ -n "${CBRFS_TEST_VAULT_OPTS:-}" ]; then
	run cbrfs vault show rt --json
	expect_eq "vault rt made with $CBRFS_TEST_VAULT_OPTS is encrypted" "$(json_get "$T/.out" 'j["encrypted"]')" True
fi
expect_ok cbrfs vault associate rt --path "$S" --name src
# expect_restored_source BACKUP DIR WHAT: DIR, where BACKUP was restored,
# is the same as the source $S (WHAT: how the source is called) to diff -r
# and to treecmp. diff -r reads every hole as zeros: the 5 GiB sparse file
# is left to treecmp, which compares where either side has data, or diff
# alone reads 10 GB.
expect_restored_source() {
	local out
	if out=$(diff_tree "$S" "$2" --exclude=sparse-5G); then
		pass "diff -r finds the restore of $1 the same as the $3"
	else
		fail "diff -r $3 vs restore of $1: $out"
	fi
	if out=$(treecmp "$S" "$2"); then
		pass "treecmp finds the restore of $1 the same as the $3: ${out##*$'\n'}"
	else
		fail "treecmp $3 vs restore of $1: $out"
	fi
}

note "backup b1"
expect_ok cbrfs backup create rt --name b1 --json
cp "$T/.out" "$T/b1.json"
errors=$(json_get "$T/b1.json" 'j["stats"]["errors"]')
expect_eq "b1 reports no entry it could not back up" "$errors" 0
expect_eq "b1 is a full backup" "$(json_get "$T/b1.json" 'j["type"]')" full

note "restore b1 into $T/r1"
expect_ok cbrfs restore rt b1 --to "$T/r1"
expect_restored_source b1 "$T/r1" "source"

# A sparse file must come back sparse (treecmp checks it against the source,
# this says it plainly).
alloc=$(($(stat -c %b "$T/r1/sparse-1G") * 512))
if [ "$alloc" -lt $((8 << 20)) ]; then
	pass "the 1 GiB sparse file takes $alloc bytes after restore"
else
	fail "the 1 GiB sparse file takes $alloc bytes after restore: holes were filled"
fi

# ---- changes, backup 2 ----
note "changing the source"
random_file "$S/sub/a/b/medium" $((3 << 20 | 12345))    # same size, new bytes
printf 'more\n' >>"$S/small"                              # grows
rm "$S/many/f7" "$S/link-dangling"                        # deleted
mv "$S/many/f8" "$S/many/f8-renamed"                      # renamed
random_file "$S/new-file" 100000                           # new
mkdir -p "$S/new-dir/x" && printf 'n\n' >"$S/new-dir/x/y"  # new tree
chmod 0600 "$S/setuid"                                     # mode only
setfattr -n user.color -v red "$S/small"                   # xattr
setfacl -x u:nobody "$S/hl-a"                              # ACL removed
ln -sfn big-100M "$S/link-rel"                             # new target
ln "$S/small" "$S/small-hardlink"                          # new hard link
rm "$S/fifo" && printf 'was a fifo\n' >"$S/fifo"           # type change
dd if=/dev/urandom of="$S/big-100M" bs=4096 seek=1000 count=1 conv=notrunc status=none # one block
head -c 4096 /dev/urandom | dd of="$S/sparse-1G" bs=4096 seek=$((500 << 8)) conv=notrunc status=none
touch -d '2011-11-11 11:11:11.111111111' "$S/sub/a/b"

note "backup b2"
expect_ok cbrfs backup create rt --name b2 --json
cp "$T/.out" "$T/b2.json"
expect_eq "b2 is incremental" "$(json_get "$T/b2.json" 'j["type"]')" incremental
# New data: 3 MB (medium), 100 kB (new-file), the chunk or two around the
# changed block of big-100M (chunks are at most 4 MiB), a sparse block, trees.
added_b2=$(json_get "$T/b2.json" 'j["stats"]["bytes_added"]')
if [ "$added_b2" -lt $((16 << 20)) ]; then
	pass "b2 added $added_b2 bytes: a one-block change to the 100 MB file did not store it again"
else
	fail "b2 added $added_b2 bytes for about 4 MB of changes: the 100 MB file was stored again"
fi
unchanged_b2=$(json_get "$T/b2.json" 'j["stats"]["files_unchanged"]')
if [ "$unchanged_b2" -ge 290 ]; then
	pass "b2 found $unchanged_b2 files unchanged"
else
	fail "b2 found only $unchanged_b2 files unchanged (of about 300 that were)"
fi

note "restore b2 into $T/r2"
expect_ok cbrfs restore rt b2 --to "$T/r2"
expect_restored_source b2 "$T/r2" "changed source"

# ---- backup 1 again ----
note "restore b1 again into $T/r1-again; it must match the first restore"
expect_ok cbrfs restore rt b1 --to "$T/r1-again"
if out=$(treecmp "$T/r1" "$T/r1-again"); then
	pass "b1 still restores as it was after b2: ${out##*$'\n'}"
else
	fail "b1 restores differently after b2: $out"
fi

# ---- restore into a new, nested directory; a single resource by name ----
expect_ok cbrfs restore rt b2 --resource src --to "$T/new/nested/r2b"
if out=$(treecmp "$T/r2" "$T/new/nested/r2b"); then
	pass "restore --resource into a new nested directory gives the same tree"
else
	fail "restore --resource into a new nested directory: $out"
fi

expect_ok cbrfs check rt --read-data
