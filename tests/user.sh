#!/usr/bin/env bash
# An unprivileged user backs up and restores a tree of their own: modes,
# times, user xattrs, ACLs, links, fifos and holes come back; owners stay
# the user's. The default store is $XDG_DATA_HOME/cbrfs (or $CBRFS_STORE).
. "$(dirname "$0")/lib.sh"

if ! is_root; then
	skip "needs root to switch to the user nobody"
	pass "nothing to run as a user"
	exit 0
fi
U=nobody
UID_=$(id -u $U)
GID_=$(id -g $U)
chmod 0711 "$T"
mkdir "$T/u"
chown "$UID_:$GID_" "$T/u"

note "making a tree as $U"
as_user bash -c '
set -e
S=$HOME/src
mkdir -p "$S/d/e" "$S/sticky"
printf "hello\n" > "$S/f"
head -c 300000 /dev/urandom > "$S/d/e/r"
ln "$S/f" "$S/d/f-link"
ln -s ../f "$S/d/sym"
mkfifo "$S/fifo"
truncate -s 100M "$S/sparse"
printf x | dd of="$S/sparse" bs=1 seek=50000000 conv=notrunc status=none
chmod 0640 "$S/f"
chmod 2750 "$S/d"
chmod 1777 "$S/sticky"
chmod 0444 "$S/d/e/r"
setfattr -n user.note -v hi "$S/f"
setfacl -m u:root:r "$S/d/f-link"
setfacl -d -m u:root:rx "$S/d/e"
mkdir "$S/ro"
printf "in a read-only directory\n" > "$S/ro/x"
chmod 0555 "$S/ro"
touch -d "2003-04-05 06:07:08.9" "$S/d/e"
' || die "could not make the tree as $U"

note "backup and restore as $U with --store"
expect_ok as_user "$CBRFS_BIN" --store "$T/u/store" vault create uv --type filesystem --capacity 10
expect_ok as_user "$CBRFS_BIN" --store "$T/u/store" vault associate uv --path "$T/u/src"
expect_ok as_user "$CBRFS_BIN" --store "$T/u/store" backup create uv --name b1 --json
expect_eq "errors in the user's backup" "$(json_get "$T/.out" 'j["stats"]["errors"]')" 0
expect_ok as_user "$CBRFS_BIN" --store "$T/u/store" restore uv b1 --to "$T/u/restored"
if out=$(treecmp "$T/u/src" "$T/u/restored"); then
	pass "the user's restore is the same as the source (owners included): ${out##*$'\n'}"
else
	fail "the user's restore: $out"
fi
owner=$(stat -c %u:%g "$T/u/restored/d/e/r")
expect_eq "owner of a restored file" "$owner" "$UID_:$GID_"
expect_ok as_user "$CBRFS_BIN" --store "$T/u/store" check --read-data

note "the default store of a user: \$XDG_DATA_HOME/cbrfs, then \$CBRFS_STORE"
XDG_DATA_HOME=$T/u/xdg
expect_ok as_user "$CBRFS_BIN" vault create xv --type filesystem --capacity 10
if [ -f "$T/u/xdg/cbrfs/vaults/xv/vault.json" ]; then
	pass "without --store the user's store is \$XDG_DATA_HOME/cbrfs"
else
	fail "no vault under $T/u/xdg/cbrfs: $(find "$T/u" -maxdepth 3 -name vault.json)"
fi
CBRFS_STORE=$T/u/envstore
expect_ok as_user "$CBRFS_BIN" vault create ev --type filesystem --capacity 10
if [ -f "$T/u/envstore/vaults/ev/vault.json" ]; then
	pass "\$CBRFS_STORE overrides \$XDG_DATA_HOME"
else
	fail "no vault under \$CBRFS_STORE=$T/u/envstore"
fi
unset CBRFS_STORE XDG_DATA_HOME

note "another user cannot read the root-owned store"
expect_ok cbrfs vault create rootv --type filesystem --capacity 10
expect_exit 1 'Permission denied' -- as_user "$CBRFS_BIN" --store "$STORE" vault list

note "an unreadable file is reported, the backup is made, and it exits 3"
as_user bash -c "printf secret > '$T/u/src/locked' && chmod 000 '$T/u/src/locked'"
expect_exit 3 'locked' -- as_user "$CBRFS_BIN" --store "$T/u/store" backup create uv --name partial
expect_ok as_user "$CBRFS_BIN" --store "$T/u/store" backup show uv partial
expect_ok as_user "$CBRFS_BIN" --store "$T/u/store" restore uv partial --to "$T/u/partial"
[ ! -e "$T/u/partial/locked" ] && [ -e "$T/u/partial/d/e/r" ] && pass "the partial backup has the readable files, not the unreadable one" ||
	fail "partial restore: $(ls -R "$T/u/partial" | head)"
