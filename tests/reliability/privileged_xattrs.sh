#!/usr/bin/env bash
# tests/reliability/privileged_xattrs.sh: xattrs in the trusted.* and
# security.* namespaces in a backup are restored by root, and skipped (not
# an error, not a half restore) when an unprivileged user restores their own
# backup; user.* xattrs come back for both.
#   1. nobody's own tree, on which root set security.capability: nobody
#      backs it up (security.* is readable by anyone) and restores it
#      without the capability; root restoring the same backup gets it back.
#   2. trusted.* is not even listed for a user, so a user's backup of a live
#      tree never holds it: root backs up a tree with trusted.* and
#      security.* into a store it then gives to nobody; nobody restores it
#      without them, root with them.
. "$(dirname "$0")/../lib.sh"

if ! is_root; then
	skip "needs root to set trusted.* xattrs and to switch to nobody"
	pass "nothing to run as a user"
	exit 0
fi
U=nobody
UID_=$(id -u $U)
GID_=$(id -g $U)
chmod 0711 "$T"
mkdir "$T/u"
chown "$UID_:$GID_" "$T/u"
CAP=0x0100000200200000000000000000000000000000

# xattr_of FILE NAME: the value (hex) or nothing.
xattr_of() {
	getfattr --absolute-names -e hex -n "$2" "$1" 2>/dev/null | sed -n "s/^$2=//p"
}

note "1. a user's own backup holding security.capability"
as_user bash -c 'mkdir -p "$HOME/src" && printf "tool\n" >"$HOME/src/tool" && setfattr -n user.note -v hi "$HOME/src/tool"' || die "user tree"
setfattr -n security.capability -v $CAP "$T/u/src/tool" || die "cannot set security.capability here"
US=$T/u/store
expect_ok as_user "$CBRFS_BIN" --store "$US" vault create uv --type filesystem --capacity 10
expect_ok as_user "$CBRFS_BIN" --store "$US" vault associate uv --path "$T/u/src"
expect_ok as_user "$CBRFS_BIN" --store "$US" backup create uv --name b1 --json
expect_eq "errors in the user's backup" "$(json_get "$T/.out" 'j["stats"]["errors"]')" 0
expect_ok as_user "$CBRFS_BIN" --store "$US" restore uv b1 --to "$T/u/r1"
f=$(find "$T/u/r1" -name tool -type f)
[ -n "$f" ] || die "tool not restored by the user"
expect_eq "security.capability restored by the user" "$(xattr_of "$f" security.capability)" ""
expect_eq "user.note restored by the user" "$(getfattr --absolute-names --only-values -n user.note "$f" 2>/dev/null)" "hi"
expect_ok "$CBRFS_BIN" --store "$US" restore uv b1 --to "$T/root-r1"
f=$(find "$T/root-r1" -name tool -type f)
expect_eq "security.capability restored by root" "$(xattr_of "$f" security.capability)" "$CAP"

note "2. trusted.* and security.* in a backup restored by its (unprivileged) owner"
mkdir -p "$T/src2"
printf 'secret\n' >"$T/src2/f"
setfattr -n trusted.cbrfs-test -v secret "$T/src2/f"
setfattr -n user.note -v kept "$T/src2/f"
chown -R "$UID_:$GID_" "$T/src2"
# After the chown, which drops file capabilities.
setfattr -n security.capability -v $CAP "$T/src2/f"
S2=$T/u/store2
expect_ok "$CBRFS_BIN" --store "$S2" vault create tv --type filesystem --capacity 10
expect_ok "$CBRFS_BIN" --store "$S2" vault associate tv --path "$T/src2"
expect_ok "$CBRFS_BIN" --store "$S2" backup create tv --name b1
chown -R "$UID_:$GID_" "$S2"
expect_ok as_user "$CBRFS_BIN" --store "$S2" restore tv b1 --to "$T/u/r2"
f=$(find "$T/u/r2" -name f -type f)
[ -n "$f" ] || die "f not restored by the user"
expect_eq "trusted.cbrfs-test restored by the user (root reads it)" "$(xattr_of "$f" trusted.cbrfs-test)" ""
expect_eq "security.capability restored by the user" "$(xattr_of "$f" security.capability)" ""
expect_eq "user.note restored by the user" "$(getfattr --absolute-names --only-values -n user.note "$f" 2>/dev/null)" "kept"
expect_ok "$CBRFS_BIN" --store "$S2" restore tv b1 --to "$T/root-r2"
f=$(find "$T/root-r2" -name f -type f)
expect_eq "trusted.cbrfs-test restored by root" "$(getfattr --absolute-names --only-values -n trusted.cbrfs-test "$f" 2>/dev/null)" "secret"
expect_eq "security.capability restored by root" "$(xattr_of "$f" security.capability)" "$CAP"
