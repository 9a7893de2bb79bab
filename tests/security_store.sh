#!/usr/bin/env bash
# tests/security_store.sh: a store is input (issue #12).
# Finding 11: FIFOs and symlinks planted in the store as an index, a pack, a
# backup record or vault.json neither hang nor are followed: check, restore,
# backup list/show, vault list and `ls` in the mount each finish within
# `timeout 20` (a FIFO used to hang them, immune to SIGTERM) with an error
# or warning naming the object.
# Finding 12: a `vault delete` killed after its rename leaves
# vaults/.deleting-*; the next command that opens the store removes it.
. "$(dirname "$0")/lib.sh"

SRC=$T/src
MNT=$T/mnt
mkdir -p "$SRC/d" "$MNT"
random_file "$SRC/f" 300000
printf 'hello\n' >"$SRC/d/g"
printf 'secret outside the store\n' >"$T/outside"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"

expect_ok cbrfs vault create v --type filesystem --capacity 10GB
expect_ok cbrfs vault associate v --path "$SRC" --name src
expect_ok cbrfs backup create v --name b1
cp -a "$STORE" "$T/good-store"
V=vaults/v

# fresh: a copy of the good store as $STORE.
fresh() {
	rm -rf "$STORE"
	cp -a "$T/good-store" "$STORE"
}

# bounded WHAT PATTERN WANT_RC -- ARGS...: `cbrfs ARGS` finishes within 20 s
# (killed otherwise), does not panic, exits WANT_RC ("nonzero" for any
# failure, "any" for either) and its stderr (or stdout) matches PATTERN.
bounded() {
	local what=$1 pattern=$2 want=$3
	shift 4
	local t0=$SECONDS
	run timeout -s KILL 20 "$CBRFS_BIN" --store "$STORE" "$@"
	local took=$((SECONDS - t0)) why=
	case $RC in
	124 | 137) why="did not finish within 20 s (killed)" ;;
	esac
	if [ -z "$why" ]; then
		case $want in
		nonzero) [ "$RC" != 0 ] || why="exit 0, expected a failure" ;;
		any) ;;
		*) [ "$RC" = "$want" ] || why="exit $RC, expected $want" ;;
		esac
		matches "$pattern" "$ERR
$OUT" || why="${why:+$why; }output does not match /$pattern/"
		matches 'panicked' "$ERR" && why="${why:+$why; }it panicked"
	fi
	if [ -z "$why" ]; then
		pass "$what: finished in ${took}s (exit $RC), names /$pattern/"
	else
		fail "$what: $why; stderr: $(printf '%s' "$ERR" | head -c 400)"
	fi
}

# in_mount WHAT PATTERN cmd...: mount the store, run cmd (with `timeout 20`)
# on it, unmount. PASS if cmd finishes (it may fail) and its error or the
# mount's log matches PATTERN.
in_mount() {
	local what=$1 pattern=$2
	shift 2
	[ -f "$STORE/logs/mount.log" ] && : >"$STORE/logs/mount.log"
	local daemon
	daemon=$(cbrfs mount "$MNT" 2>&1) || {
		fail "$what: mount failed: $daemon"
		return
	}
	# "mounted ... (daemon pid N); ...": the daemon this test started.
	daemon=$(sed -n 's/.*daemon pid \([0-9]*\).*/\1/p' <<<"$daemon")
	wait_mounted "$MNT"
	run timeout -s KILL 20 "$@"
	local rc=$RC err=$ERR
	# Stop the mount even if the command was killed on a hung request; a
	# daemon stuck on a FIFO (the bug) ignores SIGTERM: kill it by its pid.
	"$CBRFS_BIN" umount --lazy "$MNT" >/dev/null 2>&1 || fusermount3 -uz "$MNT"
	wait_unmounted "$MNT"
	if [ -n "$daemon" ] && ! wait_for 5 "mount daemon $daemon to exit" pid_gone "$daemon"; then
		kill -KILL "$daemon" 2>/dev/null
	fi
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		fail "$what: '$*' in the mount did not finish within 20 s"
	elif matches "$pattern" "$err
$(cat "$STORE/logs/mount.log" 2>/dev/null)"; then
		pass "$what: '$*' in the mount finished (exit $rc) and the error or log names /$pattern/"
	else
		fail "$what: '$*' exit $rc: $err; log: $(tail -c 400 "$STORE/logs/mount.log" 2>/dev/null)"
	fi
}

IDX=$(ls "$STORE/$V/index" | head -n 1)
PACK=$(cd "$STORE/$V" && find packs -name '*.pack' | head -n 1)

note "a FIFO as an extra index, index/zz.idx"
fresh
mkfifo "$STORE/$V/index/zz.idx"
bounded "check" 'zz\.idx.*FIFO' nonzero -- check
bounded "restore" 'zz\.idx.*FIFO' any -- restore v b1 --to "$T/r-fifo-idx"
bounded "backup list" '' 0 -- backup list
in_mount "FIFO index" 'zz\.idx.*FIFO' ls -lR "$MNT/v/b1/src"

note "a FIFO in place of the vault's only index"
fresh
rm "$STORE/$V/index/$IDX"
mkfifo "$STORE/$V/index/$IDX"
bounded "check" "$IDX.*FIFO" nonzero -- check
bounded "restore" "$IDX.*FIFO" nonzero -- restore v b1 --to "$T/r-fifo-idx2"
in_mount "FIFO in place of the index" "$IDX.*FIFO" ls -lR "$MNT/v/b1/src"

note "a symlink as index/zz.idx, to the real index kept outside the store"
fresh
cp "$STORE/$V/index/$IDX" "$T/outside.idx"
ln -s "$T/outside.idx" "$STORE/$V/index/zz.idx"
bounded "check" 'zz\.idx.*symbolic link' nonzero -- check

note "a FIFO in place of a pack"
fresh
rm "$STORE/$V/$PACK"
mkfifo "$STORE/$V/$PACK"
bounded "check --read-data" "$(basename "$PACK").*FIFO" nonzero -- check --read-data
bounded "restore" "$(basename "$PACK").*FIFO" nonzero -- restore v b1 --to "$T/r-fifo-pack"
in_mount "FIFO pack" "$(basename "$PACK").*FIFO" cat "$MNT/v/b1/src/f"

note "a symlink in place of a pack, to a copy outside the store"
fresh
mv "$STORE/$V/$PACK" "$T/outside.pack"
ln -s "$T/outside.pack" "$STORE/$V/$PACK"
bounded "restore" "$(basename "$PACK").*symbolic link" nonzero -- restore v b1 --to "$T/r-link-pack"

note "a FIFO and a symlink as backup records"
fresh
mv "$STORE/$V/backups/b1.bk" "$T/outside.bk"
mkfifo "$STORE/$V/backups/b1.bk"
ln -s "$T/outside.bk" "$STORE/$V/backups/b2.bk"
bounded "backup show of a FIFO record" 'b1\.bk.*FIFO' nonzero -- backup show v b1
bounded "backup show of a symlinked record" 'b2\.bk.*symbolic link' nonzero -- backup show v b2
bounded "backup list" 'b1\.bk.*FIFO' any -- backup list v
bounded "check" 'b1\.bk' nonzero -- check
in_mount "FIFO record" 'b1\.bk.*FIFO' ls -l "$MNT/v" "$MNT/v/b1"

note "a FIFO and a symlink as vault.json"
fresh
mv "$STORE/$V/vault.json" "$T/outside.json"
mkfifo "$STORE/$V/vault.json"
bounded "vault list with a FIFO vault.json" 'vault\.json.*FIFO' nonzero -- vault list
bounded "backup list with a FIFO vault.json" 'vault\.json.*FIFO' nonzero -- backup list v
in_mount "FIFO vault.json" 'vault\.json.*FIFO' ls -l "$MNT" "$MNT/v"
fresh
mv "$STORE/$V/vault.json" "$T/outside.json"
ln -s "$T/outside.json" "$STORE/$V/vault.json"
bounded "vault show with a symlinked vault.json" 'vault\.json.*symbolic link' nonzero -- vault show v

note "a symlink in place of the vault's index directory"
fresh
mv "$STORE/$V/index" "$T/outside-index"
ln -s "$T/outside-index" "$STORE/$V/index"
bounded "check" 'index.*symbolic link' nonzero -- check

note "a symlink in place of the vault's backups directory"
fresh
mv "$STORE/$V/backups" "$T/outside-backups"
ln -s "$T/outside-backups" "$STORE/$V/backups"
bounded "backup list" 'backups.*symbolic link' nonzero -- backup list v

note "finding 12: a vault delete killed after its rename"
fresh
expect_ok cbrfs vault create big --type filesystem --capacity 10GB
random_file "$STORE/vaults/big/packs/filler" 20000000
mv "$STORE/vaults/big" "$STORE/vaults/.deleting-big-abc123"
mkdir -p "$T/elsewhere"
printf 'keep\n' >"$T/elsewhere/keep"
# A trash entry that is a symlink: removed itself, what it names is kept.
ln -s "$T/elsewhere" "$STORE/vaults/.deleting-link-xyz"
before=$(du -sk "$STORE" | cut -f1)
expect_ok cbrfs vault list
after=$(du -sk "$STORE" | cut -f1)
if [ ! -e "$STORE/vaults/.deleting-big-abc123" ] && [ $((before - after)) -ge 19000 ]; then
	pass "the interrupted deletion is finished by the next command: ${before}K -> ${after}K"
else
	fail "vaults/.deleting-big-abc123 left or space not freed: ${before}K -> ${after}K: $(ls -a "$STORE/vaults")"
fi
[ ! -L "$STORE/vaults/.deleting-link-xyz" ] && [ -f "$T/elsewhere/keep" ] &&
	pass "a symlinked .deleting-* is removed, not followed" ||
	fail "symlinked trash: $(ls -la "$STORE/vaults") / $(ls "$T/elsewhere")"
expect_ok cbrfs backup list v
