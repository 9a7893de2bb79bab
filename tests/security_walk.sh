#!/usr/bin/env bash
# tests/security_walk.sh: a root backup records, for every entry, metadata
# and bytes of the same inode (issue #12, finding 1), and does not cross
# into file systems it should not.
#
# - The race: an unprivileged user made by the test owns `home` inside the
#   backed-up tree and swaps (renameat2 RENAME_EXCHANGE, in a tight loop)
#   a directory of theirs with a symlink to a root-owned directory of the
#   same tree that holds setuid-root programs and root-only secrets under
#   the same names, and a file of theirs with a symlink to a secret, while
#   root takes ROUNDS backups. After each, the backup is restored as root
#   and every restored regular file's (uid, mode, bytes) must be a triple
#   that exists at the source: no root-owned setuid file with the user's
#   bytes, no user-owned file with root's secret.
# - A symlink swapped in on a directory or disk resource's path: refused.
# - 1,000 nested directories back up under a soft limit of 256 open files.
# - --one-file-system: a tmpfs mounted inside the tree is an empty directory
#   in the backup with the flag, and is backed up without it.
# - A FUSE file system mounted by a user inside the tree (a cbrfs mount of
#   the user's own store, with allow_other) is not descended into; needs
#   `user_allow_other` in /etc/fuse.conf, which the test adds and removes.
. "$(dirname "$0")/lib.sh"

ROUNDS=${ROUNDS:-30}
is_root || {
	skip "needs root (unprivileged user, setpriv, mounts)"
	exit 0
}
command -v setpriv >/dev/null || {
	skip "needs setpriv"
	exit 0
}

# The attacking user: made here if missing, removed on exit if made here.
ATK=cbrfs-atk
if ! id -u "$ATK" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$ATK" || die "useradd $ATK"
	on_exit "userdel '$ATK'"
fi
AU=$(id -u "$ATK")
AG=$(id -g "$ATK")
as_atk() { setpriv --reuid="$AU" --regid="$AG" --clear-groups "$@"; }
# The user must reach its directory inside the test's.
chmod 711 "$T"

SRC=$T/src
mkdir -p "$SRC/sys" "$SRC/home"
chmod 755 "$SRC" "$SRC/sys"
N=40
for i in $(seq 0 $((N - 1))); do
	# Root's: setuid programs and secrets, under names the user's
	# directory also has.
	printf 'ROOT-PROG-%d' "$i" >"$SRC/sys/prog$i" && chmod 4755 "$SRC/sys/prog$i"
	printf 'ROOT-SECRET-%d' "$i" >"$SRC/sys/secret$i" && chmod 600 "$SRC/sys/secret$i"
done
H=$SRC/home
chown "$AU:$AG" "$H"
as_atk sh -c '
	cd "$1" && mkdir d && ln -s ../sys d.swap && printf ATK-FILE >f && ln -s ../sys/secret0 f.swap || exit 1
	i=0
	while [ "$i" -lt "$2" ]; do
		printf "ATK-PROG-%d" "$i" >"d/prog$i" && chmod 755 "d/prog$i" || exit 1
		printf "ATK-SECRET-%d" "$i" >"d/secret$i" && chmod 644 "d/secret$i" || exit 1
		i=$((i + 1))
	done' sh "$H" "$N" || die "the user's files"

# Every (uid, mode, bytes) of a regular file at the source: the swaps only
# rename, so this set holds throughout.
triples() {
	python3 -c '
import os, stat, sys
for root, dirs, files in os.walk(sys.argv[1]):
    for f in files:
        p = os.path.join(root, f)
        st = os.lstat(p)
        if stat.S_ISREG(st.st_mode):
            print(st.st_uid, oct(st.st_mode & 0o7777), open(p, "rb").read().decode("latin-1"))
' "$1" | sort -u
}
triples "$SRC" >"$T/source.triples"
expect_eq "regular files at the source" "$(wc -l <"$T/source.triples")" "$((2 * N + 2 * N + 1))"

cbrfs vault create v --type filesystem --capacity 10GB >/dev/null || die "vault v"
cbrfs vault associate v --path "$SRC" --name src >/dev/null || die "associate"

note "the user swaps home/d with a symlink to ../sys, home/f with one to a secret, during $ROUNDS backups"
# shellcheck disable=SC2016
# The system's python: a per-user one (pyenv under /root) is not the user's.
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
bg setpriv --reuid="$AU" --regid="$AG" --clear-groups "$PY" -c '
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
AT, EXCHANGE = -100, 2
while True:
    libc.renameat2(AT, b"d", AT, b"d.swap", EXCHANGE)
    libc.renameat2(AT, b"f", AT, b"f.swap", EXCHANGE)
' "$H"
SWAPPER=$BG_PID
bad=0 mixed_rounds=0 checked=0 atk_seen=0 root_seen=0
for r in $(seq 1 "$ROUNDS"); do
	# Exit 3: made, with entries that changed while read (a renamed
	# file's ctime moves) or vanished for an instant: both expected here.
	out=$(cbrfs backup create v --name "b$r" 2>&1)
	rc=$?
	if [ "$rc" != 0 ] && [ "$rc" != 3 ]; then
		fail "backup b$r under the race exited $rc: $out"
		bad=$((bad + 1))
		continue
	fi
	rm -rf "$T/out"
	if ! out=$(cbrfs restore v "b$r" --to "$T/out" 2>&1); then
		fail "restore of b$r: $out"
		bad=$((bad + 1))
		continue
	fi
	triples "$T/out" >"$T/restored.triples"
	checked=$((checked + $(wc -l <"$T/restored.triples")))
	atk_seen=$((atk_seen + $(grep -c "^$AU .* ATK-" "$T/restored.triples")))
	root_seen=$((root_seen + $(grep -c '^0 .* ROOT-' "$T/restored.triples")))
	foreign=$(comm -23 "$T/restored.triples" "$T/source.triples")
	if [ -n "$foreign" ]; then
		mixed_rounds=$((mixed_rounds + 1))
		fail "b$r holds files whose metadata and bytes never went together at the source: $(printf '%s' "$foreign" | head -5 | tr '\n' ';')"
	fi
done
kill "$SWAPPER" 2>/dev/null
wait "$SWAPPER" 2>/dev/null
# The check must have seen both kinds of file, or it proves nothing.
[ "$atk_seen" -gt 0 ] && [ "$root_seen" -gt 0 ] &&
	pass "restored files checked: $checked ($atk_seen the user's, $root_seen root's)" ||
	fail "the restores did not hold both the user's and root's files ($atk_seen, $root_seen)"
expect_eq "backups under the race with a file whose bytes are another inode's" "$mixed_rounds" "0"
expect_eq "backups or restores that failed under the race" "$bad" "0"

note "1,000 nested directories under a soft limit of 256 open files"
# The walk holds a descriptor per level (and one per file read out): the
# soft limit is raised to the hard one at start.
S1=$T/deep
mkdir -p "$S1"
python3 -c '
import os, sys
os.chdir(sys.argv[1])
for i in range(1000):
    os.mkdir("d"); os.chdir("d")
open("leaf", "w").write("bottom")
' "$S1"
cbrfs vault create deep --type filesystem --capacity 10GB >/dev/null || die "vault deep"
cbrfs vault associate deep --path "$S1" --name deep >/dev/null || die "associate deep"
out=$(ulimit -S -n 256 && cbrfs backup create deep --name a 2>&1) && pass "backup of 1,000 levels under 'ulimit -S -n 256'" || fail "backup under a low fd limit: $out"
expect_ok cbrfs restore deep a --to "$T/deep-out"
expect_eq "the leaf 1,000 levels down" "$(find "$T/deep-out" -name leaf -exec cat {} \;)" "bottom"

note "a resource path (directory or disk) with a component swapped for a symlink"
# Paths are stored resolved; a symlink on the way now is someone's doing:
# the backup refuses it, naming the component, and reads nothing there.
mkdir -p "$T/rp/real/data" "$T/rp/other/data" "$T/dp/real" "$T/dp/other"
printf 'resource bytes' >"$T/rp/real/data/f"
printf 'OTHER' >"$T/rp/other/data/f"
cbrfs vault create rp --type filesystem --capacity 10GB >/dev/null || die "vault rp"
cbrfs vault associate rp --path "$T/rp/real/data" --name data >/dev/null || die "associate rp"
head -c 1048576 /dev/zero | tr '\0' 'D' >"$T/dp/real/disk.img"
head -c 1048576 /dev/zero | tr '\0' 'X' >"$T/dp/other/disk.img"
cbrfs vault create dk --type disk --capacity 10GB >/dev/null || die "vault dk"
cbrfs vault associate dk --disk "$T/dp/real/disk.img" --name img >/dev/null || die "associate dk"
mv "$T/rp/real" "$T/rp/real.moved" && ln -s other "$T/rp/real"
mv "$T/dp/real" "$T/dp/real.moved" && ln -s other "$T/dp/real"
expect_exit 1 "$T/rp/real is a symbolic link" -- cbrfs backup create rp --name a
expect_exit 1 "$T/dp/real is a symbolic link" -- cbrfs backup create dk --name a

note "--one-file-system: a tmpfs inside the tree"
# Two alike trees (a directory is in one vault at a time), each with a
# tmpfs mounted inside: one backed up with the flag, one without.
for w in one all; do
	mkdir -p "$T/fs-$w/mnt" && printf 'on the root fs' >"$T/fs-$w/here"
	mount -t tmpfs -o size=1m cbrfs-test "$T/fs-$w/mnt" || die "mount tmpfs"
	on_exit "umount -l '$T/fs-$w/mnt'"
	printf 'on the tmpfs' >"$T/fs-$w/mnt/there"
	cbrfs vault create "$w" --type filesystem --capacity 10GB >/dev/null || die "vault $w"
done
expect_ok cbrfs vault associate one --path "$T/fs-one" --name fs --one-file-system
expect_ok cbrfs vault associate all --path "$T/fs-all" --name fs
expect_eq "vault show says so" "$(cbrfs vault show one | grep -c 'one file system')" "1"
expect_eq "vault show --json says so" "$(cbrfs vault show one --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["resources"][0]["one_file_system"])')" "True"
expect_ok cbrfs backup create one --name a
expect_ok cbrfs restore one a --to "$T/one"
got=$(cd "$T/one" && find . | sort | tr '\n' ' ')
expect_eq "with --one-file-system: the mount point is kept, empty" "$got" ". ./here ./mnt "
expect_ok cbrfs backup create all --name a
expect_ok cbrfs restore all a --to "$T/all"
expect_eq "without it: the tmpfs's file is backed up" "$(cat "$T/all/mnt/there" 2>&1)" "on the tmpfs"

note "--one-file-system for a server: each directory member stays on its file system"
mkdir -p "$T/srv-m/mnt" && printf 'member root fs' >"$T/srv-m/here"
mount -t tmpfs -o size=1m cbrfs-test "$T/srv-m/mnt" || die "mount tmpfs"
on_exit "umount -l '$T/srv-m/mnt'"
printf 'on the tmpfs' >"$T/srv-m/mnt/there"
expect_ok cbrfs server define web --path "$T/srv-m"
cbrfs vault create sv --type server --capacity 10GB >/dev/null || die "vault sv"
expect_exit 2 "cannot be used with" -- cbrfs vault associate sv --disk /dev/null --one-file-system
expect_ok cbrfs vault associate sv --server web --one-file-system
expect_ok cbrfs backup create sv --name a
expect_ok cbrfs restore sv a --to "$T/sv"
got=$(cd "$T/sv" && find . | sort | tr '\n' ' ')
expect_eq "server member with --one-file-system: the mount point is kept, empty" "$got" ". ./srv-m ./srv-m/here ./srv-m/mnt "

note "a FUSE file system a user mounted inside the tree"
# A user's FUSE mount needs /dev/fuse open to users (0666 on most systems,
# 0600 in some containers) and, for root to see into it, allow_other, which
# fusermount3 grants users only with `user_allow_other` in /etc/fuse.conf.
# Both are set for the instant of the mount and put back at once (and on
# exit).
CONF=/etc/fuse.conf
FUSE_MODE=$(stat -c %a /dev/fuse)
cp -p "$CONF" "$T/fuse.conf.orig" 2>/dev/null || : >"$T/fuse.conf.orig"
put_back() {
	chmod "$FUSE_MODE" /dev/fuse
	cp "$T/fuse.conf.orig" "$CONF"
}
on_exit put_back
S3=$T/fusetree
mkdir -p "$S3/u/mnt" "$T/ustore"
chown -R "$AU:$AG" "$S3/u" "$T/ustore"
printf 'root file' >"$S3/rootfile"
# The user's own store and mount: its backups' files claim whatever owner
# and mode were recorded, and the user chose what that was.
as_atk mkdir "$T/ustore/s" "$T/ustore/data"
printf 'USER-BYTES' | as_atk tee "$T/ustore/data/x" >/dev/null
UCB() { as_atk env HOME="$T/ustore" "$CBRFS_BIN" --store "$T/ustore/s" "$@"; }
mounted=0
if UCB vault create uv --type filesystem --capacity 10GB >"$T/umount.log" 2>&1 &&
	UCB vault associate uv --path "$T/ustore/data" --name d >>"$T/umount.log" 2>&1 &&
	UCB backup create uv --name ub >>"$T/umount.log" 2>&1; then
	chmod 666 /dev/fuse
	grep -q '^user_allow_other' "$CONF" || echo user_allow_other >>"$CONF"
	UCB mount --allow-other "$S3/u/mnt" >>"$T/umount.log" 2>&1 && mounted=1
	put_back
fi
if [ "$mounted" = 1 ]; then
	on_exit "fusermount3 -uz '$S3/u/mnt'"
	user_mount() { grep " $S3/u/mnt " /proc/self/mountinfo | grep -q "user_id=$AU,"; }
	for _ in $(seq 100); do
		user_mount && break
		sleep 0.1
	done
	if user_mount; then
		expect_eq "root sees into the user's mount (allow_other)" "$(cat "$S3/u/mnt/uv/ub/d/x")" "USER-BYTES"
		cbrfs vault create fu --type filesystem --capacity 10GB >/dev/null || die "vault fu"
		expect_ok cbrfs vault associate fu --path "$S3" --name t
		run cbrfs backup create fu --name a
		expect_eq "the backup beside a user's FUSE mount: exit (3: with a warning)" "$RC" "3"
		if matches 'FUSE file system .* mounted by user' "$OUT$ERR"; then
			pass "the backup says it did not descend into the user's FUSE mount"
		else
			fail "no warning about the user's FUSE mount: $OUT $ERR"
		fi
		expect_ok cbrfs restore fu a --to "$T/fu"
		got=$(cd "$T/fu" && find . | sort | tr '\n' ' ')
		expect_eq "the user's FUSE mount is an empty directory in the backup" "$got" ". ./rootfile ./u ./u/mnt "
	else
		fail "the user's cbrfs mount is not a FUSE mount of user $AU: $(grep " $S3/u/mnt " /proc/self/mountinfo); $(cat "$T/umount.log")"
	fi
else
	skip "the user could not mount a cbrfs store of their own: $(cat "$T/umount.log" 2>/dev/null)"
fi
