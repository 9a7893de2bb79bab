#!/usr/bin/env bash
# Encrypted vaults through the CLI and the mount (issue 15): create with
# --encrypt, passwords from --password-file and CBRFS_PASSWORD (wrong,
# missing and empty ones exit 2 naming the vault), key slots (add, list,
# remove, the last refused, a removed password no longer opens, kill -9
# during add/remove leaves the vault openable), vault/backup show say
# "encrypted", no marker in the store, restore and the mount give the
# source back (treecmp), a damaged pack is an error naming it, never
# wrong bytes. The settings naming data (resources, tags, description) are
# sealed: no marker of the contents, a file name or the backed-up path is
# anywhere in the store. A locked vault is listed locked and does not fail
# `backup list` or `metrics` over all vaults (exit 3, a partial result).
# Tampered key slots (flipped, truncated, swapped) are named and the
# others still open. The mount asks for passwords on a terminal (a pty).
# An encrypted disk vault's re-backup takes unchanged chunks' ids from
# the host's sealed fingerprint table; a damaged table is not used.
# The in-process tests are tests/encryption.rs.
. "$(dirname "$0")/lib.sh"

# Cheap argon2id for the test's slots (recorded in each slot).
export CBRFS_KDF_PARAMS=m=256,t=1,p=1
unset CBRFS_PASSWORD
PW=$T/pw
printf 'first password\n' >"$PW"
PW2=$T/pw2
printf 'second password\n' >"$PW2"
WRONG=$T/wrong
printf 'not the password\n' >"$WRONG"
EMPTY=$T/empty-pw
: >"$EMPTY"
chmod 600 "$PW" "$PW2" "$WRONG" "$EMPTY"

# The backed-up path carries a marker too: it is sealed in vault.json.
S=$T/PATHMARK-d00d/src
mkdir -p "$S/sub"
printf 'MARKER-c0ffee-ONCE\n' >"$S/SECRETNAME-once"
python3 -c 'import sys; sys.stdout.write("MARKER-c0ffee-REPEATED " * 50000)' >"$S/sub/SECRETNAME-repeated"
random_file "$S/random" $((5 << 20))
ln -s SECRETNAME-once "$S/link"
mkdir "$S/empty-dir"

note "create an encrypted vault, the password from a file"
expect_exit 2 'no terminal.*CBRFS_PASSWORD.*--password-file' -- cbrfs vault create ev --type filesystem --capacity 10GB --encrypt
expect_exit 2 'empty' -- cbrfs --password-file "$EMPTY" vault create ev --type filesystem --capacity 10GB --encrypt
expect_ok cbrfs --password-file "$PW" vault create ev --type filesystem --capacity 10GB --encrypt --description 'DESCMARK-77' --tag 'TAGMARK=TAGVALUEMARK'
# The resources are sealed: changing them needs the key.
expect_exit 2 'vault ev is encrypted and no terminal' -- cbrfs vault associate ev --path "$S" --name src
expect_ok cbrfs --password-file "$PW" vault associate ev --path "$S" --name src
expect_exit 2 'vault ev is encrypted and no terminal' -- cbrfs vault show ev
expect_ok cbrfs --password-file "$PW" vault show ev --json
expect_eq "vault show --json says encrypted" "$(json_get "$T/.out" 'j["encrypted"]')" True
expect_eq "vault show --json opens the sealed resources" "$(json_get "$T/.out" 'j["resources"][0]["path"]')" "$S"
expect_eq "vault show --json opens the sealed tags" "$(json_get "$T/.out" 'j["tags"][0]["key"]')" TAGMARK
expect_ok cbrfs --password-file "$PW" vault show ev
matches '^encrypted: +yes' "$OUT" && pass "vault show says encrypted: yes" || fail "vault show: $OUT"
# vault list needs no password: the vault is listed locked.
expect_ok cbrfs vault list
matches '^ev .*\(locked\)' "$OUT" && pass "vault list shows ev locked without a password" || fail "vault list: $OUT"
expect_ok cbrfs vault list --json
matches 'no password was given' "$(json_get "$T/.out" '[v["locked"] for v in j if v["name"] == "ev"][0]')" && pass "vault list --json says why ev is locked" || fail "vault list --json: $(cat "$T/.out")"
expect_ok cbrfs --password-file "$PW" vault list --json
expect_eq "vault list with the password: ev's resource" "$(json_get "$T/.out" '[len(v["resources"]) for v in j if v["name"] == "ev"][0]')" 1
expect_eq "vault list with the password: not locked" "$(json_get "$T/.out" '[v.get("locked") for v in j if v["name"] == "ev"][0]')" None

note "backups: wrong, missing and empty passwords exit 2 naming the vault"
expect_exit 2 'vault ev is encrypted and no terminal' -- cbrfs backup create ev --name b0
expect_exit 2 'wrong password for vault ev' -- cbrfs --password-file "$WRONG" backup create ev --name b0
expect_exit 2 'empty' -- cbrfs --password-file "$EMPTY" backup create ev --name b0
CBRFS_PASSWORD='first password' expect_ok cbrfs backup create ev --name b1
expect_ok cbrfs --password-file "$PW" backup create ev --name b2
expect_exit 2 'wrong password for vault ev' -- cbrfs --password-file "$WRONG" backup list ev
expect_exit 2 'vault ev is encrypted and no terminal' -- cbrfs backup list ev
expect_ok cbrfs --password-file "$PW" backup list ev
expect_ok cbrfs --password-file "$PW" backup show ev b2 --json
expect_eq "backup show --json says encrypted" "$(json_get "$T/.out" 'j["encrypted"]')" True
expect_exit 2 'wrong password for vault ev' -- cbrfs --password-file "$WRONG" restore ev b2 --to "$T/never"
expect_exit 2 'vault ev is encrypted and no terminal' -- cbrfs restore ev b2 --to "$T/never"
# Every other command that reads or changes the vault: missing, wrong and
# empty passwords (file and variable) are exit 2 naming the vault, and
# change nothing.
for cmd in "backup show ev b2" "backup delete ev b1" "check ev" "check ev --read-data" "prune ev" \
	"vault show ev" "vault update ev --description changed" "vault dissociate ev src" \
	"vault associate ev --path $T --name other"; do
	# shellcheck disable=SC2086 # the command's words
	expect_exit 2 'vault ev is encrypted and no terminal' -- cbrfs $cmd
	# shellcheck disable=SC2086
	expect_exit 2 'wrong password for vault ev' -- cbrfs --password-file "$WRONG" $cmd
	# shellcheck disable=SC2086
	expect_exit 2 'empty' -- cbrfs --password-file "$EMPTY" $cmd
	# shellcheck disable=SC2086
	CBRFS_PASSWORD= expect_exit 2 'empty' -- cbrfs $cmd
done
expect_ok cbrfs --password-file "$PW" backup list ev --json
expect_eq "no backup was deleted without the password" "$(json_get "$T/.out" '[b["name"] for b in j]')" '["b1", "b2"]'
expect_ok cbrfs --password-file "$PW" vault show ev --json
expect_eq "no resource changed without the password" "$(json_get "$T/.out" '[r["name"] for r in j["resources"]]')" '["src"]'

note "no plaintext in the store"
VD=$STORE/vaults/ev
# no_plaintext WHEN: no marker of the contents (once, and repeated so that
# it compresses), of a file name, of the backed-up path or of the sealed
# settings anywhere in the whole store (task log, status files, logs too).
no_plaintext() {
	local needle n
	for needle in MARKER-c0ffee SECRETNAME PATHMARK-d00d DESCMARK TAGMARK TAGVALUEMARK; do
		n=$(grep -rac -- "$needle" "$STORE" | awk -F: '{s += $NF} END {print s + 0}')
		expect_eq "occurrences of $needle in the store $1" "$n" 0
	done
}
no_plaintext "after two backups"
grep -q '"sealed"' "$VD/vault.json" && pass "vault.json holds the sealed settings" || fail "vault.json: $(cat "$VD/vault.json")"
[ ! -e "$VD/key" ] && pass "no clear key object" || fail "an encrypted vault has a clear key"

note "round trip through restore"
expect_ok cbrfs --password-file "$PW" restore ev b2 --to "$T/r"
if out=$(treecmp "$S" "$T/r"); then
	pass "treecmp: the restore of b2 is the source: ${out##*$'\n'}"
else
	fail "treecmp source vs restore: $out"
fi
expect_ok cbrfs --password-file "$PW" check ev --read-data

note "key slots"
expect_ok cbrfs vault key list ev --json
expect_eq "one slot at first" "$(json_get "$T/.out" 'len(j["slots"])')" 1
expect_exit 2 'wrong password for vault ev' -- cbrfs --password-file "$WRONG" vault key add ev --new-password-file "$PW2"
expect_exit 2 'new-password-file' -- cbrfs --password-file "$PW" vault key add ev
expect_ok cbrfs --password-file "$PW" vault key add ev --new-password-file "$PW2"
expect_ok cbrfs vault key list ev
matches '^1 +argon2id' "$OUT" && pass "slot 1 listed" || fail "key list: $OUT"
expect_ok cbrfs --password-file "$PW2" backup list ev
expect_ok cbrfs --password-file "$PW2" vault key remove ev 0
expect_exit 2 'wrong password for vault ev' -- cbrfs --password-file "$PW" backup list ev
expect_exit 2 'last working key slot' -- cbrfs --password-file "$PW2" vault key remove ev 1
expect_ok cbrfs --password-file "$PW2" backup list ev

note "kill -9 during key add and key remove leaves the vault openable"
# The kill points are states polled for, not delays: at once (start-up),
# once the process holds the vault's writer lock (it then unlocks the
# vault and derives the new slot's key: slow argon2id keeps it there), and
# once the new slot is published (read back, exit).
holds_lock() { ls -l "/proc/$1/fd" 2>/dev/null | grep -q 'backup\.lock'; }
# A quick process may end before it is seen holding the lock: then the kill
# lands after its end, which must leave the vault openable too.
exited() { ! grep -Eq '^State:[[:space:]]+[RSDT]' "/proc/$1/status" 2>/dev/null; }
lock_or_exited() { holds_lock "$1" || exited "$1"; }
slot_count() { find "$VD/keys" -name '*.slot' | wc -l; }
more_slots() { [ "$(slot_count)" -gt "$1" ]; }
for point in start lock published; do
	before=$(slot_count)
	CBRFS_KDF_PARAMS=m=65536,t=2,p=1 "$CBRFS_BIN" --store "$STORE" --password-file "$PW2" vault key add ev --new-password-file "$PW" >/dev/null 2>&1 &
	pid=$!
	case $point in
	lock) wait_for 30 "key add holds the writer lock" lock_or_exited "$pid" ;;
	published) wait_for 60 "key add publishes its slot" more_slots "$before" ;;
	esac
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	run cbrfs --password-file "$PW2" backup list ev
	expect_eq "vault opens with the old password after a kill of key add at $point" "$RC" 0
	run cbrfs vault key list ev --json
	# Every slot listed decodes: a kill leaves a slot absent or whole.
	expect_eq "no damaged slot after a kill of key add at $point" "$(json_get "$T/.out" 'sum(1 for s in j["slots"] if s["problem"])')" 0
	if [ "$point" = published ]; then
		run cbrfs --password-file "$PW" backup list ev
		expect_eq "a slot published before the kill opens with the new password" "$RC" 0
	fi
done
run cbrfs vault key list ev --json
point=start
for n in $(json_get "$T/.out" '" ".join(str(s["number"]) for s in j["slots"] if s["number"] != 1)'); do
	"$CBRFS_BIN" --store "$STORE" --password-file "$PW2" vault key remove ev "$n" >/dev/null 2>&1 &
	pid=$!
	[ "$point" = lock ] && wait_for 30 "key remove holds the writer lock" lock_or_exited "$pid"
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	expect_ok cbrfs --password-file "$PW2" backup list ev
	point=$([ "$point" = start ] && echo lock || echo start)
done

note "tampering with key slots: named, never a crash, the other slots still open"
run cbrfs vault key list ev --json
for n in $(json_get "$T/.out" '" ".join(str(s["number"]) for s in j["slots"] if s["number"] != 1)'); do
	expect_ok cbrfs --password-file "$PW2" vault key remove ev "$n"
done
expect_ok cbrfs --password-file "$PW2" vault key add ev --new-password-file "$PW"
N=$(sed -n 's/^added key slot \([0-9]*\) .*/\1/p' <<<"$OUT")
SN=$VD/keys/$N.slot
S1=$VD/keys/1.slot
cp "$SN" "$T/slot.good"
cp "$S1" "$T/slot1.good"
# flip_at FILE OFFSET: flip one bit of FILE's byte at OFFSET.
flip_at() {
	python3 - "$1" "$2" <<'PY'
import sys
p, i = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, 'rb').read())
b[i] ^= 0x01
open(p, 'wb').write(b)
PY
}
# 40: the salt (header, bound in the sealed key's associated data); 120:
# the sealed master key itself.
for off in 40 120; do
	flip_at "$SN" "$off"
	expect_exit 2 "wrong password for vault ev \\(tried key slots 1, $N\\)" -- cbrfs --password-file "$PW" backup list ev
	expect_ok cbrfs --password-file "$PW2" backup list ev
	cp "$T/slot.good" "$SN"
done
head -c 100 "$T/slot.good" >"$SN"
expect_exit 2 "wrong password for vault ev .*key slot $N" -- cbrfs --password-file "$PW" backup list ev
expect_ok cbrfs --password-file "$PW2" backup list ev
expect_ok cbrfs vault key list ev --json
matches "key slot $N" "$(json_get "$T/.out" "[s['problem'] for s in j['slots'] if s['number'] == $N][0]")" && pass "key list names the truncated slot" || fail "key list: $(cat "$T/.out")"
# Two slots swapped: each is bound to its number, so neither opens.
cp "$T/slot.good" "$S1"
cp "$T/slot1.good" "$SN"
expect_exit 2 "wrong password for vault ev \\(tried key slots 1, $N\\)" -- cbrfs --password-file "$PW" backup list ev
expect_exit 2 "wrong password for vault ev \\(tried key slots 1, $N\\)" -- cbrfs --password-file "$PW2" backup list ev
cp "$T/slot1.good" "$S1"
cp "$T/slot.good" "$SN"
expect_ok cbrfs --password-file "$PW" backup list ev
expect_ok cbrfs --password-file "$PW2" backup list ev

note "tampering: a flipped byte in a pack is an error naming it"
pack=$(find "$VD/packs" -name '*.pack' -size +1M | head -n 1)
id=$(basename "$pack" .pack)
cp "$pack" "$T/pack.good"
python3 - "$pack" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 3] ^= 0x01
open(p, 'wb').write(b)
PY
expect_exit 1 "$id" -- cbrfs --password-file "$PW2" restore ev b2 --to "$T/r-bad"
run cbrfs --password-file "$PW2" check ev --read-data
expect_eq "check --read-data of a damaged pack exits" "$RC" 1
matches "$id" "$OUT$ERR" && pass "check --read-data names the damaged pack" || fail "check --read-data: $OUT $ERR"
cp "$T/pack.good" "$pack"

note "the mount: the password from the variable; the tree is the source"
MNT=$T/mnt
mkdir -p "$MNT"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT' 2>/dev/null; fusermount3 -uz '$MNT' 2>/dev/null"
: >"$STORE/logs/mount.log" 2>/dev/null
CBRFS_PASSWORD='second password' expect_ok cbrfs mount "$MNT"
wait_mounted "$MNT"
# argon2id runs while the daemon starts, not at the first `ls` of the vault.
wait_for 20 "the daemon unlocks ev before any access to it" grep -q 'vault ev: unlocked ahead of its first use' "$STORE/logs/mount.log" &&
	pass "the mount daemon unlocked ev ahead, before any access to it"
if out=$(treecmp "$S" "$MNT/ev/b2/src" 2>&1); then
	pass "treecmp: b2 through the mount is the source"
else
	fail "treecmp source vs mount: $out"
fi
cmp -s "$S/random" "$MNT/ev/b2/src/random" && pass "cat through the mount" || fail "random differs through the mount"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"

note "the mount: a damaged or swapped pack gives EIO, never wrong bytes; the log names it"
# The damaged pack with each other pack in turn (tree, chunk-list or data
# pack): a swap damages both, and a message names whichever is read first.
cp "$pack" "$T/pack.good"
hows=flip
for other in $(find "$VD/packs" -name '*.pack' ! -name "$id.pack" | sort); do
	hows="$hows swap:$other"
done
for how in $hows; do
	other= oid=$id
	if [ "$how" != flip ]; then
		other=${how#swap:}
		how=swap
		oid=$(basename "$other" .pack)
		cp "$other" "$T/other.good"
	fi
	case $how in
	flip) python3 - "$pack" <<'PY' ;;
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 3] ^= 0x01
open(p, 'wb').write(b)
PY
	swap)
		cp "$T/other.good" "$pack"
		cp "$T/pack.good" "$other"
		;;
	esac
	: >"$STORE/logs/mount.log" 2>/dev/null
	expect_ok cbrfs --password-file "$PW2" mount "$MNT"
	wait_mounted "$MNT"
	if cat "$MNT/ev/b2/src/random" >"$T/read-bad" 2>"$T/read-bad.err"; then
		fail "$how: a read of a file in a damaged pack succeeded"
	else
		pass "$how: a read through the mount of a damaged pack fails: $(cat "$T/read-bad.err")"
	fi
	if cmp -s <(head -c "$(file_size "$T/read-bad")" "$S/random") "$T/read-bad"; then
		pass "$how: what the failed read gave before its error is the file's own bytes"
	else
		fail "$how: the failed read gave wrong bytes"
	fi
	expect_ok cbrfs umount "$MNT"
	wait_unmounted "$MNT"
	matches "$id|$oid" "$(cat "$STORE/logs/mount.log" 2>/dev/null)" && pass "$how: the mount's log names the pack" || fail "$how: mount.log: $(tail -5 "$STORE/logs/mount.log" 2>/dev/null)"
	if [ "$how" = swap ]; then
		expect_exit 1 "$id|$oid" -- cbrfs --password-file "$PW2" restore ev b2 --to "$T/r-swap"
		run cbrfs --password-file "$PW2" check ev --read-data
		expect_eq "swap: check --read-data exits" "$RC" 1
		matches "$id" "$OUT$ERR" && matches "$oid" "$OUT$ERR" && pass "swap: check --read-data names both packs" || fail "check --read-data: $OUT $ERR"
	fi
	cp "$T/pack.good" "$pack"
	[ -z "$other" ] || cp "$T/other.good" "$other"
done

note "the mount: two records or two indexes swapped give EIO, never another backup's tree; the log names them"
# A backup with new data, so that the vault has a second index.
random_file "$S/extra" $((1 << 20))
expect_ok cbrfs --password-file "$PW2" backup create ev --name b3
for kind in backups index; do
	# shellcheck disable=SC2046 # ids and names: no spaces
	set -- $(find "$VD/$kind" -type f ! -name '.*' | sort | head -n 2)
	if [ $# -lt 2 ]; then
		skip "$kind: fewer than two to swap"
		continue
	fi
	a=$1 b=$2
	cp "$a" "$T/a.good"
	cp "$b" "$T/b.good"
	cp "$T/b.good" "$a"
	cp "$T/a.good" "$b"
	: >"$STORE/logs/mount.log" 2>/dev/null
	expect_ok cbrfs --password-file "$PW2" mount "$MNT"
	wait_mounted "$MNT"
	if cmp -s "$S/random" "$MNT/ev/b1/src/random" 2>/dev/null && cmp -s "$S/random" "$MNT/ev/b2/src/random" 2>/dev/null; then
		fail "$kind swapped: both backups read through the mount"
	else
		pass "$kind swapped: a read through the mount fails"
	fi
	# Never another backup's or a wrong file's bytes: what reads is right.
	for bk in b1 b2; do
		if cat "$MNT/ev/$bk/src/random" >"$T/read-swap" 2>/dev/null; then
			cmp -s "$S/random" "$T/read-swap" && pass "$kind swapped: $bk, where it reads, is right" || fail "$kind swapped: $bk read wrong bytes"
		fi
	done
	expect_ok cbrfs umount "$MNT"
	wait_unmounted "$MNT"
	na=$(basename "$a"); na=${na%.*}
	nb=$(basename "$b"); nb=${nb%.*}
	matches "$na|$nb" "$(cat "$STORE/logs/mount.log" 2>/dev/null)" && pass "$kind swapped: the mount's log names the object" || fail "$kind swapped: mount.log: $(tail -5 "$STORE/logs/mount.log" 2>/dev/null)"
	cp "$T/a.good" "$a"
	cp "$T/b.good" "$b"
done

note "the mount with a wrong or an empty password: the vault is shown locked"
for pwf in "$WRONG" "$EMPTY"; do
	expect_ok cbrfs --password-file "$pwf" mount "$MNT"
	wait_mounted "$MNT"
	n=$(ls -A "$MNT/ev" 2>/dev/null | wc -l)
	expect_eq "with $(basename "$pwf"): the locked vault lists nothing" "$n" 0
	st=$(getfattr --only-values -n user.cbrfs.status "$MNT/ev" 2>/dev/null)
	matches 'locked: .*(wrong password for vault ev|empty)' "$st" && pass "with $(basename "$pwf"): user.cbrfs.status says why: $st" || fail "status with $(basename "$pwf"): '$st'"
	expect_ok cbrfs umount "$MNT"
	wait_unmounted "$MNT"
done

note "the mount without the password: the vault is shown locked, others work"
expect_ok cbrfs vault create plain --type filesystem --capacity 10GB
mkdir -p "$T/plain-src"
cp "$S/random" "$T/plain-src/random"
expect_ok cbrfs vault associate plain --path "$T/plain-src" --name src
expect_ok cbrfs backup create plain --name p1
expect_exit 2 'not encrypted' -- cbrfs vault key list plain
: >"$STORE/logs/mount.log" 2>/dev/null
expect_ok cbrfs mount "$MNT"
wait_mounted "$MNT"
n=$(ls -A "$MNT/ev" 2>/dev/null | wc -l)
expect_eq "a locked vault lists nothing" "$n" 0
st=$(getfattr --only-values -n user.cbrfs.status "$MNT/ev" 2>/dev/null)
matches 'locked' "$st" && pass "user.cbrfs.status says locked: $st" || fail "user.cbrfs.status of a locked vault: '$st'"
cmp -s "$T/plain-src/random" "$MNT/plain/p1/src/random" && pass "the unencrypted vault works beside it" || fail "plain vault through the mount"
! grep -q 'unlocked ahead' "$STORE/logs/mount.log" 2>/dev/null && pass "without a password nothing is unlocked ahead" || fail "unlocked ahead without a password: $(grep 'unlocked ahead' "$STORE/logs/mount.log")"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"

note "one locked vault does not fail listings over all vaults (exit 3: partial)"
run cbrfs backup list
expect_eq "backup list of every vault, ev locked, exits 3" "$RC" 3
matches '^p1 +plain ' "$OUT" && pass "backup list still lists the unencrypted vault's backup" || fail "backup list: $OUT"
matches 'skipped a locked vault: vault ev is encrypted and no password' "$ERR" && pass "backup list says which vault is locked and why" || fail "backup list stderr: $ERR"
run cbrfs --password-file "$WRONG" backup list --json
expect_eq "backup list --json with a wrong password exits 3" "$RC" 3
expect_eq "backup list --json lists the others" "$(json_get "$T/.out" '[b["name"] for b in j]')" '["p1"]'
matches 'wrong password for vault ev' "$ERR" && pass "a wrong password is said, naming the vault" || fail "stderr: $ERR"
run cbrfs --password-file "$PW2" backup list
expect_eq "backup list with the password exits 0" "$RC" 0
matches '^b2 +ev ' "$OUT" && pass "with the password ev's backups are listed too" || fail "backup list: $OUT"
run cbrfs metrics
expect_eq "metrics with ev locked exits 3" "$RC" 3
matches '^cbrfs_backups\{vault="plain"\} 1$' "$OUT" && pass "metrics of the unencrypted vault are there" || fail "metrics: $OUT"
matches '^cbrfs_vault_locked\{vault="ev"\} 1$' "$OUT" && pass "metrics say ev is locked" || fail "metrics: $OUT"
matches 'skipped a locked vault: vault ev' "$ERR" && pass "metrics say which vault was skipped" || fail "metrics stderr: $ERR"
run cbrfs --password-file "$PW2" metrics
expect_eq "metrics with the password exit 0" "$RC" 0
matches '^cbrfs_vault_locked\{vault="ev"\} 0$' "$OUT" && pass "metrics: ev is open with the password" || fail "metrics: $OUT"

note "the mount asks once for each encrypted vault's password on a terminal"
cat >"$T/pty_run.py" <<'PY'
# pty_run.py ANSWER CMD...: run CMD on a new pseudo-terminal (its
# controlling terminal), type ANSWER and Enter at each password prompt,
# print what the terminal showed, exit with CMD's status.
import os, pty, select, sys, termios, time
answer, argv = sys.argv[1].encode(), sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out, answered, deadline = b"", 0, time.time() + 120
while time.time() < deadline:
    r, _, _ = select.select([fd], [], [], 0.2)
    if not r:
        continue
    try:
        chunk = os.read(fd, 4096)
    except OSError:  # EIO: the child closed the terminal
        break
    if not chunk:
        break
    out += chunk
    if out.count(b"enter password for vault") > answered:
        answered += 1
        # Type as a person would, once the prompt has turned echo off
        # (the prompt is written first): type-ahead would be echoed.
        for _ in range(500):
            if not termios.tcgetattr(fd)[3] & termios.ECHO:
                break
            time.sleep(0.01)
        os.write(fd, answer + b"\n")
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
PY
run python3 "$T/pty_run.py" 'second password' "$CBRFS_BIN" --store "$STORE" mount "$MNT"
expect_eq "mount on a terminal exits 0" "$RC" 0
expect_eq "one prompt, for the one encrypted vault" "$(grep -c 'enter password for vault ev: ' <<<"$OUT")" 1
! matches 'second password' "$OUT" && pass "the password typed is not echoed" || fail "the terminal showed: $OUT"
wait_mounted "$MNT"
cmp -s "$S/random" "$MNT/ev/b2/src/random" && pass "the vault opened at the prompt reads through the mount" || fail "ev through the mount after the prompt"
st=$(getfattr --only-values -n user.cbrfs.status "$MNT/ev" 2>/dev/null)
! matches 'locked' "$st" && pass "the vault opened at the prompt is not locked" || fail "status: $st"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"
run python3 "$T/pty_run.py" 'not the password' "$CBRFS_BIN" --store "$STORE" mount "$MNT"
expect_eq "mount with a wrong password typed still mounts" "$RC" 0
matches 'vault ev stays locked in the mount: wrong password for vault ev' "$OUT" && pass "a wrong password typed is said" || fail "the terminal showed: $OUT"
wait_mounted "$MNT"
st=$(getfattr --only-values -n user.cbrfs.status "$MNT/ev" 2>/dev/null)
matches 'locked: wrong password' "$st" && pass "after a wrong password the vault is locked: $st" || fail "status: '$st'"
cmp -s "$T/plain-src/random" "$MNT/plain/p1/src/random" && pass "the other vault works" || fail "plain vault through the mount"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"
# Enter alone: that vault stays locked, as someone who does not want it.
run python3 "$T/pty_run.py" '' "$CBRFS_BIN" --store "$STORE" mount "$MNT"
expect_eq "mount with an empty answer still mounts" "$RC" 0
matches 'vault ev stays locked in the mount: .*empty' "$OUT" && pass "an empty answer is said" || fail "the terminal showed: $OUT"
wait_mounted "$MNT"
st=$(getfattr --only-values -n user.cbrfs.status "$MNT/ev" 2>/dev/null)
matches 'locked: .*empty' "$st" && pass "after an empty answer the vault is locked: $st" || fail "status: '$st'"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"
no_plaintext "after the mounts and listings"

note "key files: a key-file slot opens every command and the mount, without argon2id"
KF=$T/ev.key
head -c 64 /dev/urandom >"$KF"
KF_OTHER=$T/other.key
head -c 64 /dev/urandom >"$KF_OTHER"
KF_SHORT=$T/short.key
printf 'hunter2\n' >"$KF_SHORT"
chmod 600 "$KF" "$KF_OTHER" "$KF_SHORT"
expect_exit 2 'wrong password for vault ev' -- cbrfs --password-file "$WRONG" vault key add ev --new-key-file "$KF"
expect_exit 2 "new-key-file $KF_SHORT: a key file has 32 to" -- cbrfs --password-file "$PW2" vault key add ev --new-key-file "$KF_SHORT"
expect_exit 2 'cannot be used with' -- cbrfs --password-file "$PW2" vault key add ev --new-key-file "$KF" --new-password-file "$PW"
expect_exit 2 'no such file' -- cbrfs --password-file "$PW2" vault key add ev --new-key-file "$T/absent.key"
expect_ok cbrfs --password-file "$PW2" vault key add ev --new-key-file "$KF"
K=$(sed -n 's/^added key slot \([0-9]*\) .*/\1/p' <<<"$OUT")
expect_ok cbrfs vault key list ev
matches "^$K +key file" "$OUT" && pass "key list shows slot $K as a key file" || fail "key list: $OUT"
# Every command that unlocks the vault takes --key-file, with no password
# anywhere (no variable, no terminal).
for cmd in "vault show ev" "backup list ev" "backup show ev b2" "ls ev b2" "diff ev b1 b2" "check ev --read-data" \
	"vault update ev --description keyfile" "backup create ev --name kf1" "prune ev" "vault key add ev --new-password-file $PW"; do
	# shellcheck disable=SC2086 # the command's words
	expect_ok cbrfs --key-file "$KF" $cmd
done
expect_ok cbrfs --key-file "$KF" restore ev kf1 --to "$T/r-kf"
if out=$(treecmp "$S" "$T/r-kf"); then
	pass "treecmp: a restore opened by the key file is the source"
else
	fail "treecmp source vs restore with --key-file: $out"
fi
# The key file wins over the variable (an option says more than the
# environment); beside --password-file it is refused.
CBRFS_PASSWORD='not the password' expect_ok cbrfs --key-file "$KF" backup list ev
expect_exit 2 'cannot be used with' -- cbrfs --key-file "$KF" --password-file "$PW2" backup list ev
# Wrong, short and missing key files: exit 2 naming the vault or the file;
# only key-file slots are tried.
expect_exit 2 "wrong key file for vault ev \\(tried key slots $K\\)" -- cbrfs --key-file "$KF_OTHER" backup list ev
expect_exit 2 "key-file $KF_SHORT: a key file has 32 to" -- cbrfs --key-file "$KF_SHORT" backup list ev
expect_exit 2 "key-file $T/absent.key: no such file" -- cbrfs --key-file "$T/absent.key" backup list ev
expect_exit 2 'wrong key file for vault ev' -- cbrfs --key-file "$KF_OTHER" vault key remove ev "$K"
# Through the mount: the daemon gets the key file and unlocks ahead.
: >"$STORE/logs/mount.log" 2>/dev/null
expect_ok cbrfs --key-file "$KF" mount "$MNT"
wait_mounted "$MNT"
wait_for 20 "the daemon unlocks ev with the key file ahead" grep -q 'vault ev: unlocked ahead of its first use' "$STORE/logs/mount.log" &&
	pass "the mount daemon unlocked ev ahead with the key file"
cmp -s "$S/random" "$MNT/ev/kf1/src/random" && pass "cat through a mount opened by the key file" || fail "random differs through the key-file mount"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"
expect_ok cbrfs --key-file "$KF_OTHER" mount "$MNT"
wait_mounted "$MNT"
st=$(getfattr --only-values -n user.cbrfs.status "$MNT/ev" 2>/dev/null)
matches 'locked: wrong key file for vault ev' "$st" && pass "with another key file the vault is locked: $st" || fail "status with another key file: '$st'"
cmp -s "$T/plain-src/random" "$MNT/plain/p1/src/random" && pass "the unencrypted vault works beside it" || fail "plain vault through the mount"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"
# A vault created with --key-file: slot 0 is the key file's; a password
# slot added later costs argon2id's memory, the key file's unlock does not
# (peak RSS of the process, m = 64 MiB for this slot).
expect_ok cbrfs --key-file "$KF" vault create kv --type filesystem --capacity 10GB --encrypt
expect_ok cbrfs vault key list kv
matches '^0 +key file' "$OUT" && pass "vault create --encrypt --key-file: slot 0 is a key file" || fail "key list kv: $OUT"
expect_exit 2 'vault kv has no password key slot: give its key file' -- cbrfs --password-file "$PW" vault show kv
mkdir -p "$T/kv-src"
cp "$S/random" "$T/kv-src/random"
expect_ok cbrfs --key-file "$KF" vault associate kv --path "$T/kv-src" --name src
CBRFS_KDF_PARAMS=m=65536,t=1,p=1 expect_ok cbrfs --key-file "$KF" vault key add kv --new-password-file "$PW"
# peak_kib CMD...: the peak RSS in KiB of CMD (and its children), which
# must succeed.
peak_kib() {
	python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
}
if pw_kib=$(peak_kib "$CBRFS_BIN" --store "$STORE" --password-file "$PW" backup create kv --name k1) &&
	kf_kib=$(peak_kib "$CBRFS_BIN" --store "$STORE" --key-file "$KF" backup create kv --name k2); then
	[ "$pw_kib" -ge 65536 ] && pass "a backup opened by the password peaks at $pw_kib KiB (argon2id's 64 MiB)" || fail "password backup peak $pw_kib KiB, below argon2id's 65536"
	[ "$kf_kib" -lt 49152 ] && pass "a backup opened by the key file peaks at $kf_kib KiB (no argon2id)" || fail "key-file backup peak $kf_kib KiB: argon2id ran?"
else
	fail "backups of kv with the password and the key file"
fi
no_plaintext "with key-file slots"
# Neither the key file's bytes nor their hex are anywhere in the store.
if python3 - "$KF" "$STORE" <<'PY'; then
import os, sys
key = open(sys.argv[1], 'rb').read()
needles = [key[:24], key[:24].hex().encode()]
for d, _, files in os.walk(sys.argv[2]):
    for f in files:
        p = os.path.join(d, f)
        if os.path.isfile(p) and not os.path.islink(p):
            data = open(p, 'rb').read()
            if any(n in data for n in needles):
                print(p)
                sys.exit(1)
PY
	pass "the key file's bytes are nowhere in the store"
else
	fail "the key file's bytes are in the store"
fi

note "a disk with a LUKS header is reported as encrypted at the source"
expect_ok cbrfs vault create dv --type disk --capacity 10GB
python3 -c '
import sys
with open(sys.argv[1], "wb") as f:
    f.write(b"LUKS\xba\xbe\x00\x02" + bytes(4 << 20))
' "$T/luks.img"
random_file "$T/plain.img" $((4 << 20))
expect_ok cbrfs vault associate dv --disk "$T/luks.img" --name luks
expect_ok cbrfs vault associate dv --disk "$T/plain.img" --name plain
expect_ok cbrfs vault show dv --json
expect_eq "vault show: the LUKS disk is encrypted at the source" "$(json_get "$T/.out" '[r["encrypted_at_source"] for r in j["resources"] if r["name"] == "luks"][0]')" True
expect_eq "vault show: the other disk is not" "$(json_get "$T/.out" '[r["encrypted_at_source"] for r in j["resources"] if r["name"] == "plain"][0]')" False
expect_ok cbrfs backup create dv --name d1
# What the backup holds, not what the disk is now.
printf 'XXXX' | dd of="$T/luks.img" conv=notrunc status=none
expect_ok cbrfs backup show dv d1 --json
expect_eq "backup show: the LUKS disk's backup is encrypted at the source" "$(json_get "$T/.out" '[r["encrypted_at_source"] for r in j["resources"] if r["name"] == "luks"][0]')" True
expect_eq "backup show: the other disk's is not" "$(json_get "$T/.out" '[r["encrypted_at_source"] for r in j["resources"] if r["name"] == "plain"][0]')" False
expect_ok cbrfs backup show dv d1
matches 'encrypted at the source \(LUKS\)' "$OUT" && pass "backup show's table says it" || fail "backup show: $OUT"

note "an encrypted disk vault: a re-backup takes unchanged chunks' ids from the host's sealed fingerprint table"
# 256 chunks of 16 KiB, none all zero: random, with the marker once and a
# chunk of it repeated.
python3 -c '
import os, sys
b = bytearray(os.urandom(4 << 20))
b[5 * 16384 + 100:5 * 16384 + 118] = b"MARKER-c0ffee-ONCE"
b[9 * 16384:10 * 16384] = (b"MARKER-c0ffee-REPEATED " * 1000)[:16384]
open(sys.argv[1], "wb").write(b)
' "$T/edisk.img"
expect_ok cbrfs --password-file "$PW" vault create edv --type disk --capacity 10GB --encrypt
expect_ok cbrfs --password-file "$PW" vault associate edv --disk "$T/edisk.img" --name d
RUST_LOG=cbrfs=info expect_exit 0 'disk .*edisk.img: 0 of 256 chunks recognised by their fingerprints \(0 in the table\)' -- cbrfs --password-file "$PW" backup create edv --name e1
FPD=$STORE/vaults/edv/fingerprints
expect_eq "one fingerprint table, mode 600 in a 700 directory" "$(stat -c %a "$FPD") $(find "$FPD" -type f -printf '%m\n' | tr '\n' ' ')" "700 600 "
# Two chunks changed: the other 254 are recognised, and the restore is the
# disk as it is now.
printf 'CHANGED' | dd of="$T/edisk.img" bs=1 seek=$((3 * 16384 + 7)) conv=notrunc status=none
printf 'CHANGED' | dd of="$T/edisk.img" bs=1 seek=$((200 * 16384)) conv=notrunc status=none
RUST_LOG=cbrfs=info expect_exit 0 'edisk.img: 254 of 256 chunks recognised by their fingerprints \(256 in the table\)' -- cbrfs --password-file "$PW" backup create edv --name e2
expect_ok cbrfs --password-file "$PW" restore edv e2 --to "$T/e2.img"
cmp -s "$T/e2.img" "$T/edisk.img" && pass "restore of e2 is the changed disk" || fail "restore of e2 differs from the disk"
# --full hashes every chunk.
touch "$T/edisk.img"
RUST_LOG=cbrfs=info expect_exit 0 'edisk.img: 0 of 256 chunks recognised' -- cbrfs --password-file "$PW" backup create edv --name e3 --full
# A damaged table is not used (a warning says so), and costs nothing but
# the hashing: a third change is backed up and restored exactly.
tbl=$(find "$FPD" -type f)
flip_at "$tbl" 100
printf 'AGAIN' | dd of="$T/edisk.img" bs=1 seek=$((100 * 16384)) conv=notrunc status=none
RUST_LOG=cbrfs=info expect_exit 0 'fingerprint table .* of disk .*edisk.img: .*every chunk is hashed' -- cbrfs --password-file "$PW" backup create edv --name e4
matches 'edisk.img: 0 of 256 chunks recognised' "$ERR" && pass "the damaged table recognised nothing" || fail "e4: $ERR"
expect_ok cbrfs --password-file "$PW" restore edv e4 --to "$T/e4.img"
cmp -s "$T/e4.img" "$T/edisk.img" && pass "restore of e4 is the disk" || fail "restore of e4 differs from the disk"
expect_ok cbrfs --password-file "$PW" check edv --read-data
no_plaintext "with an encrypted disk's fingerprint table"

note "the whole round-trip suite (tests/roundtrip.sh) on an encrypted vault"
if CBRFS_PASSWORD='roundtrip password' CBRFS_TEST_VAULT_OPTS=--encrypt bash "$TESTS/roundtrip.sh" >"$T/roundtrip.log" 2>&1 &&
	! grep -q '^FAIL' "$T/roundtrip.log" && grep -q 'is encrypted = True' "$T/roundtrip.log"; then
	pass "roundtrip.sh on an encrypted vault: $(grep -c '^PASS' "$T/roundtrip.log") checks pass"
else
	fail "roundtrip.sh on an encrypted vault: $(grep -E '^FAIL' "$T/roundtrip.log" | head -5)"
fi
