#!/usr/bin/env bash
# Encrypted vaults through the CLI and the mount (issue 15): create with
# --encrypt, passwords from --password-file and CBRFS_PASSWORD (wrong,
# missing and empty ones exit 2 naming the vault), key slots (add, list,
# remove, the last refused, a removed password no longer opens, kill -9
# during add/remove leaves the vault openable), vault/backup show say
# "encrypted", no marker in the store, restore and the mount give the
# source back (treecmp), a damaged pack is an error naming it, never
# wrong bytes. The in-process tests are tests/encryption.rs.
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

S=$T/src
mkdir -p "$S/sub"
printf 'MARKER-c0ffee-ONCE\n' >"$S/SECRETNAME-once"
python3 -c 'import sys; sys.stdout.write("MARKER-c0ffee-REPEATED " * 50000)' >"$S/sub/SECRETNAME-repeated"
random_file "$S/random" $((5 << 20))
ln -s SECRETNAME-once "$S/link"
mkdir "$S/empty-dir"

note "create an encrypted vault, the password from a file"
expect_exit 2 'no terminal.*CBRFS_PASSWORD.*--password-file' -- cbrfs vault create ev --type filesystem --capacity 10GB --encrypt
expect_exit 2 'empty' -- cbrfs --password-file "$EMPTY" vault create ev --type filesystem --capacity 10GB --encrypt
expect_ok cbrfs --password-file "$PW" vault create ev --type filesystem --capacity 10GB --encrypt
expect_ok cbrfs vault associate ev --path "$S" --name src
expect_ok cbrfs vault show ev --json
expect_eq "vault show --json says encrypted" "$(json_get "$T/.out" 'j["encrypted"]')" True
expect_ok cbrfs vault show ev
matches '^encrypted: +yes' "$OUT" && pass "vault show says encrypted: yes" || fail "vault show: $OUT"
# vault list needs no password (used bytes come from a listing).
expect_ok cbrfs vault list

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

note "no plaintext in the store"
VD=$STORE/vaults/ev
for needle in MARKER-c0ffee SECRETNAME; do
	n=$(grep -rac -- "$needle" "$VD" | awk -F: '{s += $NF} END {print s + 0}')
	expect_eq "occurrences of $needle in the vault's files" "$n" 0
done
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
# Slow argon2id so that the kill lands inside the work, at varying points.
for delay in 0.00 0.02 0.05 0.1 0.2 0.3; do
	CBRFS_KDF_PARAMS=m=65536,t=2,p=1 "$CBRFS_BIN" --store "$STORE" --password-file "$PW2" vault key add ev --new-password-file "$PW" >/dev/null 2>&1 &
	pid=$!
	sleep "$delay"  # the kill point itself, not a wait for a state
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	run cbrfs --password-file "$PW2" backup list ev
	expect_eq "vault opens with the old password after a kill at +${delay}s of key add" "$RC" 0
	run cbrfs vault key list ev --json
	# Every slot listed decodes: a kill leaves a slot absent or whole.
	expect_eq "no damaged slot after a kill at +${delay}s" "$(json_get "$T/.out" 'sum(1 for s in j["slots"] if s["problem"])')" 0
done
run cbrfs vault key list ev --json
for n in $(json_get "$T/.out" '" ".join(str(s["number"]) for s in j["slots"] if s["number"] != 1)'); do
	"$CBRFS_BIN" --store "$STORE" --password-file "$PW2" vault key remove ev "$n" >/dev/null 2>&1 &
	pid=$!
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	expect_ok cbrfs --password-file "$PW2" backup list ev
done

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
CBRFS_PASSWORD='second password' expect_ok cbrfs mount "$MNT"
wait_mounted "$MNT"
if out=$(treecmp "$S" "$MNT/ev/b2/src" 2>&1); then
	pass "treecmp: b2 through the mount is the source"
else
	fail "treecmp source vs mount: $out"
fi
cmp -s "$S/random" "$MNT/ev/b2/src/random" && pass "cat through the mount" || fail "random differs through the mount"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"

note "the mount: a damaged pack gives EIO, never wrong bytes"
cp "$pack" "$T/pack.good"
python3 - "$pack" <<'PY'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 3] ^= 0x01
open(p, 'wb').write(b)
PY
expect_ok cbrfs --password-file "$PW2" mount "$MNT"
wait_mounted "$MNT"
if cat "$MNT/ev/b2/src/random" >"$T/read-bad" 2>"$T/read-bad.err"; then
	fail "a read of a file in a damaged pack succeeded"
else
	pass "a read through the mount of a damaged pack fails: $(cat "$T/read-bad.err")"
fi
if cmp -s <(head -c "$(file_size "$T/read-bad")" "$S/random") "$T/read-bad"; then
	pass "what the failed read gave before its error is the file's own bytes"
else
	fail "the failed read gave wrong bytes"
fi
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"
cp "$T/pack.good" "$pack"

note "the mount without the password: the vault is shown locked, others work"
expect_ok cbrfs vault create plain --type filesystem --capacity 10GB
mkdir -p "$T/plain-src"
cp "$S/random" "$T/plain-src/random"
expect_ok cbrfs vault associate plain --path "$T/plain-src" --name src
expect_ok cbrfs backup create plain --name p1
expect_exit 2 'not encrypted' -- cbrfs vault key list plain
expect_ok cbrfs mount "$MNT"
wait_mounted "$MNT"
n=$(ls -A "$MNT/ev" 2>/dev/null | wc -l)
expect_eq "a locked vault lists nothing" "$n" 0
st=$(getfattr --only-values -n user.cbrfs.status "$MNT/ev" 2>/dev/null)
matches 'locked' "$st" && pass "user.cbrfs.status says locked: $st" || fail "user.cbrfs.status of a locked vault: '$st'"
cmp -s "$T/plain-src/random" "$MNT/plain/p1/src/random" && pass "the unencrypted vault works beside it" || fail "plain vault through the mount"
expect_ok cbrfs umount "$MNT"
wait_unmounted "$MNT"

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

note "the whole round-trip suite (tests/roundtrip.sh) on an encrypted vault"
if CBRFS_PASSWORD='roundtrip password' CBRFS_TEST_VAULT_OPTS=--encrypt bash "$TESTS/roundtrip.sh" >"$T/roundtrip.log" 2>&1 &&
	! grep -q '^FAIL' "$T/roundtrip.log" && grep -q 'is encrypted = True' "$T/roundtrip.log"; then
	pass "roundtrip.sh on an encrypted vault: $(grep -c '^PASS' "$T/roundtrip.log") checks pass"
else
	fail "roundtrip.sh on an encrypted vault: $(grep -E '^FAIL' "$T/roundtrip.log" | head -5)"
fi
