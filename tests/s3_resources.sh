#!/usr/bin/env bash
# tests/s3_resources.sh: disk and server vaults kept in an S3 bucket (issue
# 14), on the real 3-node SeaweedFS cluster of scripts/seaweed.sh:
# - a disk vault: an ext4 image backed up, restored from the bucket with an
#   empty cache and read through the mount, both with the image's sha256;
#   1 % of its blocks changed, the incremental stores a small multiple of
#   that and reads back exactly; e2fsck passes on the mounted image;
# - a server vault (two directories and a disk image): backed up, restored
#   from the bucket and compared, mounted and compared; a member added and
#   a file changed, the incremental adds little and reads back exactly;
# - a new host attaches both vaults from the bucket alone and restores.
# tests/disk.sh and tests/server.sh test the same resources on local vaults.
. "$(dirname "$0")/lib.sh"
. "$REPO/scripts/seaweed.sh"

# Encrypted, as S3 vaults are by default (issue 15); a cheap KDF for tests.
export CBRFS_KDF_PARAMS=m=256,t=1,p=1
unset CBRFS_PASSWORD
PW=$T/pw
printf 'resources password\n' >"$PW"
chmod 600 "$PW"
ENC=(--encrypt)
if "$CBRFS_BIN" vault create --help 2>&1 | grep -q -- '--no-encrypt'; then
	ENC=()
fi
cb() {
	cbrfs --password-file "$PW" "$@"
}
sum() { sha256sum "$1" | cut -d' ' -f1; }

seaweed_start || die "cannot start the SeaweedFS cluster"
on_exit seaweed_stop
EP=$SEAWEED_S3_ENDPOINT
BASE=s3://$SEAWEED_BUCKET/resources-$$

# wipe_cache VAULT: delete the vault's local cache, so that what follows
# reads the bucket.
wipe_cache() {
	local v=$STORE/vaults/$1
	rm -rf "$v/cache" "$v/key" "$v/index" "$v/packs" "$v/backups"
}

MNT=$T/mnt
mkdir -p "$MNT"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT' 2>/dev/null; fusermount3 -uz '$MNT' 2>/dev/null"

# ---- a disk vault on S3 ----
note "a disk vault on S3: an ext4 image of real files"
mkdir -p "$T/files"
cp -a "$REPO/src" "$T/files/"
random_file "$T/files/random" $((3 << 20))
mke2fs -q -F -t ext4 -d "$T/files" "$T/disk.img" 32M >/dev/null || die "mke2fs"
SUM0=$(sum "$T/disk.img")
expect_ok cb vault create d --type disk --capacity 10GB --storage "$BASE/disk" --s3-endpoint "$EP" --cache-size 64MB "${ENC[@]}"
expect_ok cb vault associate d --disk "$T/disk.img" --name root
expect_ok cb backup create d --name full
wipe_cache d
expect_ok cb restore d full --resource root --to "$T/full.img"
expect_eq "sha256 of the disk restored from the bucket" "$(sum "$T/full.img")" "$SUM0"

note "1 % of the 4 KiB blocks overwritten: an incremental backup"
changed=$(python3 "$TESTS/overwrite.py" "$T/disk.img" 1 7 | tail -1)
SUM1=$(sum "$T/disk.img")
expect_ok cb backup create d --name incr --json
printf '%s' "$OUT" >"$T/incr.json"
added=$(json_get "$T/incr.json" 'j["stats"]["bytes_added"]')
note "changed $changed bytes; the incremental added $added bytes"
python3 -c "import sys; sys.exit(0 if $added <= 4 * $changed else 1)" &&
	pass "the incremental to the bucket added $added bytes for $changed changed (at most 4x), not the image" ||
	fail "the incremental added $added bytes for $changed changed"
wipe_cache d
expect_ok cb restore d incr --resource root --to "$T/incr.img"
expect_eq "sha256 of the incremental restored from the bucket" "$(sum "$T/incr.img")" "$SUM1"

# ---- a server vault on S3 ----
note "a server vault on S3: two directories and a disk image"
mkdir -p "$T/etc/conf.d" "$T/data/db" "$T/later"
printf 'conf\n' >"$T/etc/app.conf"
printf 'x=1\n' >"$T/etc/conf.d/x.conf"
ln -s app.conf "$T/etc/current"
random_file "$T/data/db/table" 3000000
printf 'late\n' >"$T/later/file"
truncate -s 32M "$T/vol.img"
head -c 1048576 /dev/urandom | dd of="$T/vol.img" bs=1M seek=10 conv=notrunc status=none
expect_ok cb server define app --path "$T/etc" --path "$T/data" --disk "$T/vol.img"
expect_ok cb vault create sv --type server --capacity 10GB --storage "$BASE/server" --s3-endpoint "$EP" --cache-size 64MB "${ENC[@]}"
expect_ok cb vault associate sv --server app
expect_ok cb backup create sv --name b1
wipe_cache sv
expect_ok cb restore sv b1 --resource app --to "$T/s1"
# cmp_server ROOT WHAT: ROOT holds the server's members as they are now.
cmp_server() {
	local out
	if out=$(treecmp "$T/etc" "$1/etc" 2>&1) && out=$(treecmp "$T/data" "$1/data" 2>&1); then
		pass "$2: the directory members are the sources"
	else
		fail "$2: $out"
	fi
	cmp -s "$T/vol.img" "$1/vol.img" && pass "$2: the disk member is the image" || fail "$2: vol.img differs"
}
cmp_server "$T/s1" "b1 restored from the bucket"

note "a member added and a file changed: an incremental backup"
expect_ok cb server update app --add-path "$T/later"
printf 'x=2\n' >"$T/etc/conf.d/x.conf"
expect_ok cb backup create sv --name b2 --json
printf '%s' "$OUT" >"$T/b2.json"
added=$(json_get "$T/b2.json" 'j["stats"]["bytes_added"]')
[ "$added" -lt $((1 << 20)) ] && pass "the server's incremental added $added bytes (the unchanged table and image not again)" ||
	fail "the server's incremental added $added bytes"
wipe_cache sv
expect_ok cb restore sv b2 --resource app --to "$T/s2"
cmp_server "$T/s2" "b2 restored from the bucket"
if out=$(treecmp "$T/later" "$T/s2/later" 2>&1); then pass "b2 holds the added member"; else fail "the added member: $out"; fi

# ---- both through the mount, with empty caches ----
note "the mount reads both vaults from the bucket"
wipe_cache d
wipe_cache sv
expect_ok cb mount "$MNT"
wait_mounted "$MNT"
expect_eq "the mount shows the disk as root.img" "$(ls "$MNT/d/full" 2>&1)" "root.img"
expect_eq "sha256 of the full disk through the mount" "$(sum "$MNT/d/full/root.img")" "$SUM0"
expect_eq "sha256 of the incremental disk through the mount" "$(sum "$MNT/d/incr/root.img")" "$SUM1"
check "e2fsck -fn on the mounted full image" e2fsck -fn "$MNT/d/full/root.img"
expect_eq "members of b2 in the mount" "$(ls "$MNT/sv/b2/app" 2>&1 | tr '\n' ' ')" "data etc later vol.img "
cmp_server "$MNT/sv/b2/app" "the mount of b2"
if out=$(treecmp "$T/s1/etc" "$MNT/sv/b1/app/etc" 2>&1); then pass "the mount of b1 shows b1's etc"; else fail "the mount of b1: $out"; fi
"$CBRFS_BIN" umount "$MNT" >/dev/null 2>&1
wait_unmounted "$MNT"

# ---- a new host: both vaults from the bucket alone ----
note "a new host attaches both vaults from the bucket"
STORE=$T/store2
expect_ok cb vault attach "$BASE/disk" --s3-endpoint "$EP"
expect_ok cb vault attach "$BASE/server" --s3-endpoint "$EP"
expect_ok cb restore d incr --resource root --to "$T/n-incr.img"
expect_eq "sha256 of the incremental restored on the new host" "$(sum "$T/n-incr.img")" "$SUM1"
expect_ok cb restore sv b2 --resource app --to "$T/n2"
cmp_server "$T/n2" "b2 restored on the new host"
expect_ok cb check --read-data
