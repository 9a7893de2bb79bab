#!/usr/bin/env bash
# tests/disk.sh: disk vaults. A real ext4 image (mke2fs -d of real files)
# is backed up, read in place through the mount (e2fsck, debugfs), restored
# by the CLI and by cp, all with the source's sha256; 1 % of its blocks
# change and the incremental stores a small multiple of that; a 10 GiB
# sparse image with 20 MiB of data stays small; restore refuses a target
# that is too small and the original without --in-place.
. "$(dirname "$0")/lib.sh"

MNT=$T/mnt
mkdir -p "$MNT" "$T/files"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"

note "an ext4 image of real files"
cp -a "$REPO/src" "$REPO/tests" "$T/files/" 2>/dev/null
# Real files up to about 60 MB, whatever the machine has installed: the
# image is 128 MiB (the block-device checks below rely on that size).
mkdir -p "$T/files/doc"
total=0
while read -r mb dir; do
	[ $((total + mb)) -gt 60 ] && continue
	cp -a "$dir" "$T/files/doc/" 2>/dev/null && total=$((total + mb))
done < <(du -sm /usr/share/doc/* 2>/dev/null)
mke2fs -q -F -t ext4 -d "$T/files" "$T/disk.img" 128M || die "mke2fs"
sum() { sha256sum "$1" | cut -d' ' -f1; }
SUM0=$(sum "$T/disk.img")

cbrfs vault create d --type disk --capacity 10GB >/dev/null || die "vault d"
expect_exit 2 'BackupService.6102' -- cbrfs vault associate d --path "$T/files"
cbrfs vault create f --type filesystem --capacity 10GB >/dev/null
expect_exit 2 'BackupService.6102' -- cbrfs vault associate f --disk "$T/disk.img"
expect_ok cbrfs vault associate d --disk "$T/disk.img" --name root
expect_ok cbrfs backup create d --name full
expect_ok cbrfs mount "$MNT"
expect_eq "the mount shows the disk as root.img" "$(ls "$MNT/d/full")" "root.img"
expect_eq "root.img has the disk's exact size" "$(stat -c %s "$MNT/d/full/root.img")" "$(stat -c %s "$T/disk.img")"
expect_eq "sha256 through the mount" "$(sum "$MNT/d/full/root.img")" "$SUM0"
check "e2fsck -fn on the mounted image" e2fsck -fn "$MNT/d/full/root.img"
out=$(debugfs -R 'ls -l /' "$MNT/d/full/root.img" 2>/dev/null)
printf '%s' "$out" | grep -q ' src' && pass "debugfs -R 'ls -l /' reads the image in place" || fail "debugfs: $out"
cp "$MNT/d/full/root.img" "$T/cp.img"
expect_eq "sha256 of cp from the mount" "$(sum "$T/cp.img")" "$SUM0"
expect_ok cbrfs restore d full --resource root --to "$T/restored.img"
expect_eq "sha256 of the CLI restore" "$(sum "$T/restored.img")" "$SUM0"

note "1 % of the 4 KiB blocks overwritten (seed 1)"
changed=$(python3 "$TESTS/overwrite.py" "$T/disk.img" 1 1 | tail -1)
SUM1=$(sum "$T/disk.img")
run cbrfs backup create d --name incr --json
printf '%s' "$OUT" >"$T/incr.json"
added=$(json_get "$T/incr.json" 'j["stats"]["bytes_added"]')
ratio=$(python3 -c "print(round($added / $changed, 2))")
note "changed $changed bytes; the incremental added $added bytes (${ratio}x)"
python3 -c "import sys; sys.exit(0 if $added <= 4 * $changed else 1)" &&
	pass "the vault grew by ${ratio}x the changed bytes (at most 4x), not by the image" ||
	fail "the incremental added $added bytes for $changed changed (${ratio}x)"
wait_for 3 "incr in the mount" test -e "$MNT/d/incr/root.img"
expect_eq "sha256 of the changed disk through the mount" "$(sum "$MNT/d/incr/root.img")" "$SUM1"
expect_eq "the full backup still reads as before" "$(sum "$MNT/d/full/root.img")" "$SUM0"

note "a 10 GiB sparse image holding 20 MiB of data"
truncate -s 10G "$T/sparse.img"
for i in $(seq 0 19); do
	head -c 1048576 /dev/urandom | dd of="$T/sparse.img" bs=1M seek=$((i * 500)) conv=notrunc status=none
done
cbrfs vault create s --type disk --capacity 20GB >/dev/null
cbrfs vault associate s --disk "$T/sparse.img" --name big >/dev/null
t0=$(date +%s%N)
run cbrfs backup create s --name b --json
ms=$((($(date +%s%N) - t0) / 1000000))
printf '%s' "$OUT" >"$T/s.json"
read_b=$(json_get "$T/s.json" 'j["stats"]["bytes_read"]')
added=$(json_get "$T/s.json" 'j["stats"]["bytes_added"]')
note "backup of the sparse image: ${ms} ms, read $read_b bytes, added $added bytes"
[ "$read_b" -le $((24 << 20)) ] && pass "only the data extents were read ($read_b bytes)" || fail "read $read_b bytes of a 20 MiB image"
[ "$added" -ge $((20 << 20)) ] && [ "$added" -le $((22 << 20)) ] && pass "about 20 MiB stored ($added bytes)" || fail "stored $added bytes"
wait_for 3 "s/b in the mount" test -e "$MNT/s/b/big.img"
cp --sparse=always "$MNT/s/b/big.img" "$T/sparse-copy.img"
used=$(du -k "$T/sparse-copy.img" | cut -f1)
[ "$used" -le $((22 * 1024)) ] && pass "cp --sparse=always gives a file using ${used} KiB" || fail "the copy uses ${used} KiB"
expect_eq "the sparse copy reads as the source" "$(sum "$T/sparse-copy.img")" "$(sum "$T/sparse.img")"

note "restore targets"
expect_exit 2 'needs --in-place' -- cbrfs restore d full --resource root --to "$T/disk.img"
expect_exit 2 'exists' -- cbrfs restore d full --resource root --to "$T/restored.img"
if is_root && command -v losetup >/dev/null; then
	truncate -s 64M "$T/small.img"
	if LOOP=$(losetup -f --show "$T/small.img" 2>/dev/null); then
		on_exit "losetup -d '$LOOP'"
		expect_exit 2 'holds 67108864 bytes, less than the disk.s 134217728 bytes' -- cbrfs restore d full --resource root --to "$LOOP"
		truncate -s 128M "$T/fit.img"
		LOOP2=$(losetup -f --show "$T/fit.img")
		on_exit "losetup -d '$LOOP2'"
		expect_ok cbrfs restore d full --resource root --to "$LOOP2"
		expect_eq "sha256 of the block-device restore" "$(sum "$LOOP2")" "$SUM0"
	else
		skip "loop devices: losetup failed"
	fi
else
	skip "restore to a block device: needs root and losetup"
fi
expect_ok cbrfs restore d full --resource root --to "$T/disk.img" --in-place
expect_eq "in-place restore brings the original back" "$(sum "$T/disk.img")" "$SUM0"
expect_ok cbrfs check --read-data
expect_ok cbrfs umount "$MNT"
