#!/usr/bin/env bash
# A vault kept in an S3 bucket (issue 14), on a real 3-node SeaweedFS
# cluster (scripts/seaweed.sh, started here and stopped by PID on exit):
# - the location is checked (exit 2 naming the rule) and no secret is
#   written into the store;
# - a varied tree backed up, restored and compared, mounted and compared;
# - disaster recovery: the whole local store deleted, `vault attach` into a
#   new one, every backup restored and compared, the mount compared;
# - `kill -9` of a backup mid-upload: earlier backups restore exactly,
#   nothing half-made is listed, the next backup succeeds, prune reclaims;
# - the local cache deleted, then a byte flipped in a cached pack and in a
#   cached range: everything still restores exactly, never wrong bytes.
. "$(dirname "$0")/lib.sh"
. "$REPO/scripts/seaweed.sh"

seaweed_start || die "cannot start the SeaweedFS cluster"
on_exit seaweed_stop
EP=$SEAWEED_S3_ENDPOINT
URL=s3://$SEAWEED_BUCKET/host1/home-$$

# ---- the location is checked; no secret is kept ----
for bad in "http://$SEAWEED_BUCKET/x" "s3://No_Such_Bucket/x" "s3://$SEAWEED_BUCKET/a//b" "s3://$SEAWEED_BUCKET/../x"; do
	expect_exit 2 'storage location' -- cbrfs vault create bad --type filesystem --capacity 10GB --storage "$bad" --s3-endpoint "$EP"
done
expect_exit 2 'S3 endpoint' -- cbrfs vault create bad --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "ftp://127.0.0.1/"
expect_exit 2 'S3 endpoint' -- cbrfs vault create bad --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "http://user:pw@127.0.0.1:1"
expect_exit 2 'cache size' -- cbrfs vault create bad --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$EP" --cache-size 1MB
[ ! -e "$STORE/vaults/bad" ] && pass "a refused remote vault leaves nothing" || fail "a refused remote vault left $STORE/vaults/bad"

# ---- a varied tree ----
S=$T/src
mkdir -p "$S/empty-dir" "$S/dir with space" "$S/sub/a/b" "$S/many"
: >"$S/empty"
printf 'small\n' >"$S/small"
random_file "$S/big" $((40 << 20))
random_file "$S/sub/a/b/medium" $((3 << 20 | 12345))
for i in $(seq 1 200); do printf 'file %d\n' "$i" >"$S/many/f$i"; done
truncate -s 1G "$S/sparse-1G"
for off in 0 $((300 << 20)) $(((1 << 30) - 4096)); do
	head -c 4096 /dev/urandom | dd of="$S/sparse-1G" bs=4096 seek=$((off / 4096)) conv=notrunc status=none
done
ln -s small "$S/link-rel"
ln -s does/not/exist "$S/link-dangling"
printf 'linked\n' >"$S/hl-a"
ln "$S/hl-a" "$S/hl-b"
mkfifo "$S/fifo"
printf 'caf\n' >"$S/$(printf 'caf\351')"
printf 'newline\n' >"$S/$(printf 'new\nline')"
setfattr -n user.color -v blue "$S/small" || die "setfattr failed: user xattrs unsupported under $T"
setfacl -m u:nobody:r "$S/hl-a" || die "setfacl failed"
setfacl -d -m u:nobody:rx "$S/dir with space"
if is_root; then
	mknod "$S/dev-null" c 1 3
	chown 12345:54321 "$S/sub/a/b/medium"
fi
chmod 4755 "$S/small"
touch -h -d '2001-02-03 04:05:06.123456789' "$S/small" "$S/link-rel"
touch -d '1960-06-15 12:00:00.5' "$S/empty"

# ---- create, back up, restore, mount ----
# Remote vaults are encrypted by default (issue 15); this test is of the
# bucket layer, in the clear (tests/s3_encrypted.sh is the encrypted one).
expect_ok cbrfs vault create home --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$EP" --cache-size 64MB --no-encrypt
matches 'warning: vault home is not encrypted.*can read its backups' "$ERR" && pass "--no-encrypt warns that the bucket can read the backups" || fail "vault create --no-encrypt: stderr $ERR"
if grep -rqF -- "$AWS_SECRET_ACCESS_KEY" "$STORE"; then
	fail "the secret key is written in the store"
else
	pass "no secret in the store"
fi
expect_ok cbrfs vault show home --json
expect_eq "vault show names the bucket" "$(json_get "$T/.out" 'j["storage"]["url"]')" "$URL"
expect_eq "vault show names the endpoint" "$(json_get "$T/.out" 'j["storage"]["endpoint"]')" "$EP"
expect_exit 2 'already holds a vault.*vault attach' -- cbrfs vault create again --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$EP"
expect_ok cbrfs vault associate home --path "$S" --name src
expect_ok cbrfs backup create home --name b1
expect_ok cbrfs restore home b1 --to "$T/r1"
if out=$(treecmp "$S" "$T/r1"); then
	pass "restore of b1 from the bucket is the source: ${out##*$'\n'}"
else
	fail "treecmp source vs restore of b1: $out"
fi

printf 'more\n' >>"$S/many/f1"
random_file "$S/new-file" 100000
rm "$S/link-dangling"
expect_ok cbrfs backup create home --name b2
expect_ok cbrfs restore home b2 --to "$T/r2"
if out=$(treecmp "$S" "$T/r2"); then
	pass "restore of b2 (incremental) is the changed source"
else
	fail "treecmp source vs restore of b2: $out"
fi

MNT=$T/mnt
mkdir -p "$MNT"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"
expect_ok cbrfs mount "$MNT"
if out=$(treecmp "$S" "$MNT/home/b2/src"); then
	pass "the mount of b2 is the source"
else
	fail "treecmp source vs mount of b2: $out"
fi
"$CBRFS_BIN" umount "$MNT" >/dev/null 2>&1
wait_unmounted "$MNT"

# ---- disaster recovery: the store is gone; a new host attaches ----
OLD=$STORE
rm -rf "$OLD"
STORE=$T/store2
expect_ok cbrfs vault attach "$URL" --s3-endpoint "$EP"
matches 'attached vault home .*2 backups' "$OUT" && pass "attach finds both backups" || fail "attach said: $OUT"
expect_ok cbrfs backup list home
matches 'b1' "$OUT" && matches 'b2' "$OUT" && pass "backup list shows b1 and b2" || fail "backup list: $OUT"
expect_ok cbrfs restore home b1 --to "$T/d1"
if out=$(treecmp "$T/r1" "$T/d1"); then pass "b1 restored on the new host is b1"; else fail "b1 after attach: $out"; fi
expect_ok cbrfs restore home b2 --to "$T/d2"
if out=$(treecmp "$S" "$T/d2"); then pass "b2 restored on the new host is b2"; else fail "b2 after attach: $out"; fi
expect_ok cbrfs mount "$MNT"
if out=$(treecmp "$S" "$MNT/home/b2/src"); then pass "the mount on the new host shows b2"; else fail "mount after attach: $out"; fi
# Every command on a remote vault as on a local one: a backup by mkdir in
# the mount, check, tasks, vault show's use.
if mkdir "$MNT/home/bymkdir" && cp -a "$MNT/home/bymkdir/src/." "$T/m1"; then
	pass "mkdir in the mount backs up to the bucket and reads back"
else
	fail "mkdir backup in the mount of a remote vault"
fi
if out=$(treecmp "$S" "$T/m1"); then pass "the mkdir backup is the source"; else fail "mkdir backup: $out"; fi
expect_ok cbrfs check home
expect_ok cbrfs task list --json
matches 'bymkdir' "$OUT" && pass "the mkdir backup is a task" || fail "task list: $OUT"
expect_ok cbrfs vault show home --json
used=$(json_get "$T/.out" 'j["used_bytes"]')
[ "$used" -gt $((40 << 20)) ] && pass "vault show counts the bucket's packs: $used bytes" || fail "vault show used_bytes $used"
"$CBRFS_BIN" umount "$MNT" >/dev/null 2>&1
wait_unmounted "$MNT"
STORE3=$T/store3
expect_ok "$CBRFS_BIN" --store "$STORE3" vault attach "$URL" --s3-endpoint "$EP" --name renamed
expect_ok "$CBRFS_BIN" --store "$STORE3" restore renamed b1 --to "$T/n1"
if out=$(treecmp "$T/r1" "$T/n1"); then pass "attach --name: b1 restores under the new name"; else fail "attach --name: $out"; fi

# ---- kill -9 mid-upload ----
random_file "$S/huge" $((400 << 20))
# The binary itself in the background (not the `cbrfs` function, whose
# subshell would take the kill and leave the backup running).
"$CBRFS_BIN" --store "$STORE" backup create home --name killed >"$T/killed.out" 2>&1 &
KPID=$!
_BG_PIDS+=("$KPID")
status=$STORE/vaults/home/running/killed.json
wait_for 120 "the backup to read 150 MB" sh -c "[ \$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"bytes_read\"])' '$status' 2>/dev/null || echo 0) -gt $((150 << 20)) ]"
kill -9 "$KPID" 2>/dev/null
wait "$KPID" 2>/dev/null
expect_ok cbrfs backup list home
if matches 'killed' "$OUT"; then fail "the killed backup is listed: $OUT"; else pass "the killed backup is not listed"; fi
expect_ok cbrfs restore home b1 --to "$T/k1"
if out=$(treecmp "$T/r1" "$T/k1"); then pass "after the kill b1 restores exactly"; else fail "b1 after the kill: $out"; fi
expect_ok cbrfs backup create home --name b3
expect_ok cbrfs restore home b3 --to "$T/r3"
if out=$(treecmp "$S" "$T/r3"); then pass "the backup after the kill restores exactly"; else fail "b3: $out"; fi
rm -f "$S/huge"
expect_ok cbrfs backup delete home b3
expect_ok cbrfs prune home
matches '[1-9][0-9]* pack' "$OUT" && pass "prune removed packs: $(head -n 3 <<<"$OUT" | tr '\n' ' ')" || fail "prune said: $OUT"
expect_ok cbrfs check home --read-data
expect_ok cbrfs restore home b2 --to "$T/p2"
# b2 as restored before the kill ($T/r2): the source has changed since.
if out=$(treecmp "$T/r2" "$T/p2"); then pass "after prune b2 restores exactly"; else fail "b2 after prune: $out"; fi

# ---- the cache deleted, then damaged ----
V=$STORE/vaults/home
rm -rf "$V/cache" "$V/key" "$V/index" "$V/packs" "$V/backups"
expect_ok cbrfs restore home b2 --to "$T/c2"
if out=$(treecmp "$T/r2" "$T/c2"); then pass "with the cache deleted b2 restores exactly"; else fail "b2 after cache deletion: $out"; fi
flipped=0
for f in $(find "$V/packs" "$V/cache" -type f -name '*.pack*' | head -n 40); do
	size=$(stat -c %s "$f")
	[ "$size" -gt 100 ] || continue
	python3 - "$f" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, 'rb').read())
b[len(b) // 2] ^= 0x10
open(p, 'wb').write(b)
EOF
	flipped=$((flipped + 1))
done
[ "$flipped" -gt 0 ] && pass "flipped a byte in $flipped cached packs and ranges" || fail "found no cached pack to damage"
expect_ok cbrfs restore home b2 --to "$T/f2"
if out=$(treecmp "$T/r2" "$T/f2"); then pass "with damaged cache entries b2 restores exactly (refetched)"; else fail "b2 with a damaged cache: $out"; fi
