#!/usr/bin/env bash
# An encrypted vault kept in an S3 bucket (issues 14 and 15 together), on
# the SeaweedFS cluster of scripts/seaweed.sh: created with --storage, which
# encrypts by default (--encrypt --no-encrypt together is exit 2), vault
# show reports both; a backup restores exactly; neither the local store nor
# the cluster's data directories hold a marker of the contents, a file
# name or the backed-up path, nor a clear key; a new host attaches the
# vault from the bucket alone and needs the password (none, a wrong one:
# exit 2), then restores exactly and the mount shows the backup.
. "$(dirname "$0")/lib.sh"
. "$REPO/scripts/seaweed.sh"

export CBRFS_KDF_PARAMS=m=256,t=1,p=1
unset CBRFS_PASSWORD
PW=$T/pw
printf 'bucket password\n' >"$PW"
WRONG=$T/wrong
printf 'not it\n' >"$WRONG"
chmod 600 "$PW" "$WRONG"

seaweed_start || die "cannot start the SeaweedFS cluster"
on_exit seaweed_stop
EP=$SEAWEED_S3_ENDPOINT
URL=s3://$SEAWEED_BUCKET/host1/enc-$$

# The backed-up path carries a marker: it is sealed in vault.json.
S=$T/PATHMARK-d00d/src
mkdir -p "$S/sub"
printf 'MARKER-c0ffee-ONCE\n' >"$S/SECRETNAME-once"
python3 -c 'import sys; sys.stdout.write("MARKER-c0ffee-REPEATED " * 50000)' >"$S/sub/SECRETNAME-repeated"
random_file "$S/big" $((20 << 20))
ln -s SECRETNAME-once "$S/link"

note "create (encrypted by default), back up, restore"
expect_exit 2 'cannot be used with' -- cbrfs vault create ev --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$EP" --encrypt --no-encrypt
# Without --encrypt: a remote vault is encrypted, so it needs a password.
expect_exit 2 'no terminal.*CBRFS_PASSWORD.*--password-file' -- cbrfs vault create ev --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$EP"
[ ! -e "$STORE/vaults/ev/vault.json" ] && pass "a refused create leaves no vault" || fail "a refused create left a vault"
expect_ok cbrfs --password-file "$PW" vault create ev --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$EP" --cache-size 64MB
matches 'encrypted' "$OUT" && pass "vault create says encrypted" || fail "vault create said: $OUT"
expect_ok cbrfs --password-file "$PW" vault show ev --json
expect_eq "vault show --json says encrypted" "$(json_get "$T/.out" 'j["encrypted"]')" True
expect_eq "vault show --json names the bucket" "$(json_get "$T/.out" 'j["storage"]["url"]')" "$URL"
expect_ok cbrfs --password-file "$PW" vault associate ev --path "$S" --name src
expect_exit 2 'vault ev is encrypted and no terminal' -- cbrfs backup create ev --name b0
expect_ok cbrfs --password-file "$PW" backup create ev --name b1
expect_ok cbrfs --password-file "$PW" restore ev b1 --to "$T/r1"
if out=$(treecmp "$S" "$T/r1"); then pass "restore of b1 from the bucket is the source"; else fail "treecmp b1: $out"; fi
expect_ok cbrfs --password-file "$PW" check ev --read-data

# The writer lease names its holder's host: a backup from a host of a
# name of its own (a UTS namespace), whose lease is read from the bucket
# (through the filer, as stored) while the backup holds it: from its write
# through the settle wait, 3 s here, and the backup. (SeaweedFS stores
# small compressible objects gzipped, so the search of its data
# directories below cannot be relied on for the lease.)
LEASEHOST=
if is_root && unshare --uts true 2>/dev/null; then
	LEASEHOST=LEASEHOST-f00d
	lease_url="http://127.0.0.1:$SEAWEED_FILER_PORT/buckets/${URL#s3://}/lease"
	lease_got() { curl -sf -o "$T/lease.got" "$lease_url"; }
	bg env CBRFS_LEASE_SETTLE_MS=3000 unshare --uts sh -c 'hostname "$0" && exec "$@"' "$LEASEHOST" \
		"$CBRFS_BIN" --store "$STORE" --password-file "$PW" backup create ev --name b2 >"$T/b2.out" 2>&1
	wait_for 60 "the writer lease in the bucket" lease_got
	wait "$BG_PID" && pass "a backup from host $LEASEHOST" || fail "the backup from host $LEASEHOST failed: $(cat "$T/b2.out")"
	if grep -q -- "$LEASEHOST" "$T/lease.got"; then
		fail "the lease in the bucket names its host in the clear: $(head -c 300 "$T/lease.got")"
	elif grep -q '"host":"(sealed)"' "$T/lease.got"; then
		pass "the lease in the bucket seals its holder: $(head -c 100 "$T/lease.got")..."
	else
		fail "what was read from the bucket is no sealed lease: $(head -c 300 "$T/lease.got")"
	fi
else
	note "not root or no unshare: the lease's host name is not searched for"
fi

note "nothing in the clear on this host nor in the cluster's data"
for needle in MARKER-c0ffee SECRETNAME PATHMARK-d00d $LEASEHOST; do
	n=$(grep -rac -- "$needle" "$STORE" | awk -F: '{s += $NF} END {print s + 0}')
	expect_eq "occurrences of $needle in the whole local store" "$n" 0
	n=$(grep -rac -- "$needle" "$SEAWEED_DIR" | awk -F: '{s += $NF} END {print s + 0}')
	expect_eq "occurrences of $needle in the SeaweedFS data directories" "$n" 0
done
[ -z "$(find "$STORE/vaults/ev" -name key -type f)" ] && pass "no clear key object" || fail "a clear key in the cache"
# b2 was for the lease's host name: the new host below finds b1 alone.
[ -z "$LEASEHOST" ] || expect_ok cbrfs --password-file "$PW" backup delete ev b2

note "a new host attaches the vault from the bucket"
STORE=$T/store2
expect_exit 2 'vault ev is encrypted and no terminal' -- cbrfs vault attach "$URL" --s3-endpoint "$EP"
expect_exit 2 'wrong password for vault ev' -- cbrfs --password-file "$WRONG" vault attach "$URL" --s3-endpoint "$EP"
expect_ok cbrfs --password-file "$PW" vault attach "$URL" --s3-endpoint "$EP"
matches 'attached vault ev .*1 backup' "$OUT" && pass "attach finds the backup" || fail "attach said: $OUT"
expect_ok cbrfs --password-file "$PW" vault show ev --json
expect_eq "the attached vault is encrypted" "$(json_get "$T/.out" 'j["encrypted"]')" True
expect_eq "its sealed resources open on the new host" "$(json_get "$T/.out" 'j["resources"][0]["path"]')" "$S"
expect_exit 2 'vault ev is encrypted and no terminal' -- cbrfs restore ev b1 --to "$T/never"
expect_ok cbrfs --password-file "$PW" restore ev b1 --to "$T/d1"
if out=$(treecmp "$S" "$T/d1"); then pass "b1 restored on the new host is the source"; else fail "treecmp after attach: $out"; fi
MNT=$T/mnt
mkdir -p "$MNT"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT' 2>/dev/null; fusermount3 -uz '$MNT' 2>/dev/null"
expect_ok cbrfs --password-file "$PW" mount "$MNT"
wait_mounted "$MNT"
if out=$(treecmp "$S" "$MNT/ev/b1/src" 2>&1); then pass "the mount on the new host shows b1"; else fail "mount after attach: $out"; fi
"$CBRFS_BIN" umount "$MNT" >/dev/null 2>&1
wait_unmounted "$MNT"
