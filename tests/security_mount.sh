#!/usr/bin/env bash
# tests/security_mount.sh: nothing in a backup runs with privileges through
# the mount (issue #12, finding 2). The mount is always nosuid and nodev;
# `--noexec` adds noexec. A setuid-root copy of `id` kept in a backup, run
# through an --allow-other mount by an unprivileged user this test makes,
# does not get euid 0; a device node kept in a backup does not open; with
# --noexec nothing runs at all. Also: logs/mount.log is 0600 in a 0700
# directory (finding 13).
. "$(dirname "$0")/lib.sh"

is_root || {
	skip "security_mount: needs root (setuid files, mknod, other users)"
	exit 0
}

MNT=$T/mnt
SRC=$T/src
USER_NAME=cbrfs_sec_mount
mkdir -p "$MNT" "$SRC"
# The unprivileged user must reach the mount point.
chmod 755 "$T" "$MNT"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"

if ! id -u "$USER_NAME" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$USER_NAME" ||
		die "useradd $USER_NAME"
	on_exit "userdel '$USER_NAME'"
fi
as_user() { setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --clear-groups "$@"; }

note "a backup holding a setuid-root program and a device node"
cp /usr/bin/id "$SRC/suid-id"
chown root:root "$SRC/suid-id"
chmod 4755 "$SRC/suid-id"
# A copy of /dev/zero: harmless, and readable by root if nodev is missing.
mknod -m 666 "$SRC/zero" c 1 5
# Sanity: the setuid copy does give euid 0 where suid is honoured.
src_out=$(as_user "$SRC/suid-id" 2>&1)
matches 'euid=0' "$src_out" || skip "the source's setuid copy gave no euid 0 here ($src_out); the check below still runs"

expect_ok cbrfs vault create v --type filesystem --capacity 10GB
expect_ok cbrfs vault associate v --path "$SRC" --name src
expect_ok cbrfs backup create v --name b1

# mount_opts DIR: the options of DIR's mount in /proc/self/mountinfo (the
# per-mount options, field 6).
mount_opts() {
	local d
	d=$(realpath -m -- "$1")
	awk -v d="$d" '$5 == d { print $6 }' /proc/self/mountinfo
}

has_opt() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac }

note "default mount (--allow-other)"
expect_ok cbrfs mount "$MNT" --allow-other
wait_mounted "$MNT"
opts=$(mount_opts "$MNT")
has_opt "$opts" nosuid && pass "the mount is nosuid ($opts)" || fail "the mount is not nosuid: $opts"
has_opt "$opts" nodev && pass "the mount is nodev ($opts)" || fail "the mount is not nodev: $opts"
has_opt "$opts" noexec && fail "the mount is noexec without --noexec: $opts" || pass "without --noexec the mount is exec"
line=$(awk -v d="$(realpath "$MNT")" '$2 == d' /proc/mounts)
has_opt "$(awk '{ print $4 }' <<<"$line")" nosuid && has_opt "$(awk '{ print $4 }' <<<"$line")" nodev &&
	pass "/proc/mounts shows nosuid,nodev: $line" || fail "/proc/mounts: $line"

B=$MNT/v/b1/src
stat -c '%a %U' "$B/suid-id" | grep -qx '4755 root' &&
	pass "the backup keeps the file's setuid bit and owner (as recorded)" ||
	fail "suid-id in the mount: $(stat -c '%a %U' "$B/suid-id")"
out=$(as_user "$B/suid-id" 2>&1)
rc=$?
if [ "$rc" = 0 ] && ! matches 'euid=0' "$out" && matches "uid=$(id -u "$USER_NAME")" "$out"; then
	pass "a setuid-root program run through the mount by $USER_NAME runs without euid 0 ($out)"
else
	fail "setuid-root program through the mount (rc $rc): $out"
fi
out=$(head -c 4 "$B/zero" 2>&1 | od -An -tx1)
err=$(head -c 4 "$B/zero" 2>&1 >/dev/null)
if matches 'Permission denied' "$err"; then
	pass "a device node in a backup does not open through the mount (nodev): $err"
else
	fail "a device node in a backup opened through the mount: ${out:-$err}"
fi

# Through an --allow-other mount every open is asked (no
# FUSE_NO_OPEN_SUPPORT there): a write open is refused, not only its
# writes, so no shared writable mapping can change the pages other users
# read.
err=$(python3 -c 'import sys; open(sys.argv[1], "r+b")' "$B/suid-id" 2>&1)
if matches 'Read-only file system' "$err"; then
	pass "a write open through an --allow-other mount is refused (EROFS)"
else
	fail "a write open through an --allow-other mount: ${err:-it succeeded}"
fi

note "logs/mount.log is private (finding 13)"
expect_eq "mode of logs/mount.log" "$(stat -c %a "$STORE/logs/mount.log")" "600"
expect_eq "mode of logs/" "$(stat -c %a "$STORE/logs")" "700"

expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"

note "an older cbrfs left mount.log 0644: the next mount makes it 0600"
chmod 644 "$STORE/logs/mount.log"

note "--noexec"
expect_ok cbrfs mount "$MNT" --allow-other --noexec
wait_mounted "$MNT"
opts=$(mount_opts "$MNT")
has_opt "$opts" noexec && pass "--noexec mounts noexec ($opts)" || fail "--noexec: $opts"
has_opt "$opts" nosuid && has_opt "$opts" nodev && pass "--noexec keeps nosuid,nodev" || fail "--noexec: $opts"
out=$(as_user "$B/suid-id" 2>&1)
rc=$?
if [ "$rc" != 0 ] && matches 'Permission denied' "$out"; then
	pass "with --noexec a program in a backup cannot run at all: $out"
else
	fail "with --noexec the program ran (rc $rc): $out"
fi
out=$("$B/suid-id" 2>&1)
rc=$?
[ "$rc" != 0 ] && pass "with --noexec not even root runs it: $out" || fail "root ran a program from a noexec mount: $out"
expect_eq "mode of a mount.log found 0644" "$(stat -c %a "$STORE/logs/mount.log")" "600"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"
