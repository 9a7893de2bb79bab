#!/usr/bin/env bash
# The comparer itself: treecmp.py finds two copies of a tree the same, and
# finds each kind of difference the restore tests rely on it to find. A
# comparer that cannot fail would make every round-trip test pass.
. "$(dirname "$0")/lib.sh"

A=$T/a
mkdir -p "$A/d/sub"
printf 'hello\n' >"$A/f"
printf 'other\n' >"$A/d/g"
ln "$A/f" "$A/d/f-link"
printf 'lone\n' >"$A/lone"
ln -s f "$A/sym"
mkfifo "$A/fifo"
truncate -s 64M "$A/sparse"
printf 'x' | dd of="$A/sparse" bs=1 seek=$((32 << 20)) conv=notrunc status=none
setfattr -n user.k -v v "$A/f" 2>/dev/null || die "setfattr: user xattrs unsupported under $T"
setfacl -m u:nobody:r "$A/d/g" || die "setfacl failed under $T"
if is_root; then
	mknod "$A/null" c 1 3
fi
name=$(printf 'bad\377name')
printf 'x' >"$A/$name"
touch -d '2001-02-03 04:05:06.123456789' "$A/f"

# copy: a faithful copy of A (cp -a keeps modes, times, xattrs, ACLs,
# links and holes).
copy() {
	rm -rf "$T/b"
	cp -a --sparse=always "$A" "$T/b"
}

# expect_diff WHAT PATTERN MUTATION...: copy A, apply the mutation to the
# copy, and expect treecmp to exit 1 with a line matching PATTERN.
expect_diff() {
	local what=$1 pattern=$2
	shift 2
	copy
	(cd "$T/b" && eval "$*") || {
		fail "$what: the mutation '$*' failed"
		return
	}
	run treecmp "$A" "$T/b"
	if [ "$RC" = 1 ] && matches "$pattern" "$OUT"; then
		pass "treecmp finds $what"
	else
		fail "treecmp does not find $what: exit $RC, output: $OUT $ERR"
	fi
}

copy
run treecmp "$A" "$T/b"
if [ "$RC" = 0 ]; then pass "treecmp finds a cp -a copy the same"; else fail "cp -a copy differs: $OUT $ERR"; fi

expect_diff "a missing file" '/lone: only in A' 'rm lone'
expect_diff "an extra file" '/new: only in B' ': > new'
expect_diff "a changed byte" '/f: content' 'printf "hellp\n" > f.tmp && touch -r f f.tmp && cat f.tmp > f && rm f.tmp && touch -d "2001-02-03 04:05:06.123456789" f'
expect_diff "a mode change" '/d/g: mode' 'chmod 0640 d/g'
expect_diff "a lost setuid bit" '/lone: mode' 'chmod u+s lone && touch -r ../a/lone lone'
expect_diff "an mtime off by 1 ns" '/f: mtime' 'touch -d "2001-02-03 04:05:06.123456788" f'
expect_diff "a root mtime change" '^/: mtime' 'touch -d "1999-01-01" .'
expect_diff "a changed xattr" 'xattr user.k' 'setfattr -n user.k -v w f'
expect_diff "a lost xattr" 'xattr user.k' 'setfattr -x user.k f'
expect_diff "a lost ACL" 'xattr system.posix_acl_access' 'setfacl -b d/g'
expect_diff "a changed symlink target" '/sym: symlink target' 'ln -sfn g sym'
expect_diff "a type change" '/fifo: type' 'rm fifo && : > fifo'
expect_diff "a broken hard link" 'hard links differ' 'cp f f.tmp && mv f.tmp d/f-link && touch -r f d/f-link'
expect_diff "a new hard link pair" 'hard links differ|link count' 'rm lone && ln d/g lone'
expect_diff "a filled hole" 'holes not kept' 'dd if=/dev/zero of=sparse bs=1M count=64 conv=notrunc status=none && printf x | dd of=sparse bs=1 seek=$((32 << 20)) conv=notrunc status=none && touch -r ../a/sparse sparse'
expect_diff "a byte written into a hole" '/sparse: content differs from offset 10485760' 'printf y | dd of=sparse bs=1 seek=$((10 << 20)) conv=notrunc status=none && touch -r ../a/sparse sparse'
expect_diff "a changed byte in a sparse file's data" '/sparse: content differs from offset 33554432' 'printf y | dd of=sparse bs=1 seek=$((32 << 20)) conv=notrunc status=none && touch -r ../a/sparse sparse'
expect_diff "a size change" '/lone: size' 'printf "lone\n\n" > lone'
expect_diff "a change under a non-UTF-8 name" 'bad\\xffname: content' "printf y > \"$name\""
if is_root; then
	expect_diff "an owner change" '/f: uid' 'chown nobody f'
	expect_diff "a group change" '/f: gid' 'chgrp nogroup f'
	expect_diff "a device number change" '/null: rdev' 'rm null && mknod null c 1 5'
	copy
	chown nobody:nogroup "$T/b/f"
	run treecmp --ignore-owner "$A" "$T/b"
	if [ "$RC" = 0 ]; then pass "--ignore-owner ignores owner and group"; else fail "--ignore-owner: $OUT"; fi
else
	skip "owner and device checks: need root"
fi

copy
touch -d '1999-01-01' "$T/b"
run treecmp --ignore-root-mtime "$A" "$T/b"
if [ "$RC" = 0 ]; then pass "--ignore-root-mtime ignores the root's mtime"; else fail "--ignore-root-mtime: $OUT"; fi
touch -d '1999-01-01' "$T/b/d"
run treecmp --ignore-root-mtime "$A" "$T/b"
if [ "$RC" = 1 ]; then pass "--ignore-root-mtime still compares other directories' mtimes"; else fail "--ignore-root-mtime hid /d: $OUT"; fi

run treecmp "$A" "$T/nonexistent"
expect_eq "treecmp exit code for a missing tree" "$RC" 2
