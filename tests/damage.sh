#!/usr/bin/env bash
# Damage: one flipped byte in a pack is found by `check --read-data`, which
# names the backup and the file it hits and no other backup; restore of
# that backup fails naming the file and never writes wrong bytes; the older
# backup restores intact. A truncated or missing pack is found as well.
. "$(dirname "$0")/lib.sh"

S=$T/src
V=dmg
mkdir -p "$S/d/e"
random_file "$S/base.bin" $((2 << 20))
random_file "$S/d/e/deep.bin" 300000
printf 'small\n' >"$S/d/small"
ln -s base.bin "$S/link"

expect_ok cbrfs vault create $V --type filesystem --capacity 10
expect_ok cbrfs vault associate $V --path "$S" --name src
expect_ok cbrfs backup create $V --name b1
expect_ok cbrfs restore $V b1 --to "$T/r1-ref"
if out=$(treecmp "$S" "$T/r1-ref"); then pass "b1 restores as the source"; else fail "b1 before damage: $out"; fi

note "b2 adds unique.bin (3 MB of new random bytes): its data lands in a data pack of b2's"
random_file "$S/unique.bin" $((3 << 20))
PACKS=$STORE/vaults/$V/packs
find "$PACKS" -name '*.pack' | sort >"$T/packs.b1"
expect_ok cbrfs backup create $V --name b2
find "$PACKS" -name '*.pack' | sort >"$T/packs.b2"
# b2 wrote a data pack and a metadata pack (trees, chunk lists): the one
# that holds unique.bin's bytes is the one to damage.
PACK=
for p in $(comm -13 "$T/packs.b1" "$T/packs.b2"); do
	if python3 -c 'import sys; sys.exit(0 if open(sys.argv[2],"rb").read()[1500000:1500064] in open(sys.argv[1],"rb").read() else 1)' "$p" "$S/unique.bin"; then
		PACK=$p
	fi
done
[ -f "$PACK" ] || die "no pack of b2 under $PACKS holds unique.bin's bytes"
note "b2's data pack: ${PACK#"$STORE"/}"
cp -p "$PACK" "$T/pack.orig"

# Where the file's bytes sit in the pack: random data does not compress, so
# it is stored as is; find a 64-byte run from the middle of the file.
OFF=$(python3 - "$PACK" "$S/unique.bin" <<'EOF'
import sys
pack = open(sys.argv[1], "rb").read()
data = open(sys.argv[2], "rb").read()
needle = data[1500000:1500064]
at = pack.find(needle)
print(at)
EOF
)
PACK_SIZE=$(file_size "$PACK")
if [ "$OFF" -gt 16 ] && [ "$OFF" -lt $((PACK_SIZE - 32 - 36)) ]; then
	pass "unique.bin's bytes are in the newest pack at offset $OFF of $PACK_SIZE (inside the blob area)"
else
	die "unique.bin's bytes not found inside the newest pack's blob area (offset $OFF, size $PACK_SIZE)"
fi

# flip FILE OFFSET: invert one byte in place.
flip() {
	python3 - "$1" "$2" <<'EOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(int(sys.argv[2]))
    b = f.read(1)
    f.seek(int(sys.argv[2]))
    f.write(bytes([b[0] ^ 0xFF]))
EOF
}

note "flipping the byte at offset $OFF of the pack"
flip "$PACK" "$OFF"

# ---- check ----
expect_exit 1 '' -- cbrfs check $V --read-data
all="$OUT
$ERR"
if matches 'backup b2.*unique\.bin' "$all"; then
	pass "check --read-data names backup b2 and unique.bin"
else
	fail "check --read-data does not name b2's unique.bin: $all"
fi
if matches 'damaged backup: b2$' "$all"; then
	pass "check --read-data lists b2 as damaged"
else
	fail "check --read-data does not list b2 as damaged: $all"
fi
if matches 'backup b1\b|damaged backup: b1$' "$all"; then
	fail "check --read-data blames b1, which does not use the damaged blob: $all"
else
	pass "check --read-data does not blame b1"
fi
expect_exit 1 '' -- cbrfs check --read-data --json
if python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
v = [x for x in r if x["vault"] == "dmg"][0]
sys.exit(0 if v["damaged_backups"] == ["b2"] and v["problems"] else 1)' "$T/.out"; then
	pass "check --json lists exactly b2 as damaged"
else
	fail "check --json: $OUT"
fi

# ---- restore of the damaged backup ----
expect_exit 1 'unique\.bin' -- cbrfs restore $V b2 --to "$T/r2"
if [ ! -e "$T/r2/unique.bin" ]; then
	pass "restore of b2 left no unique.bin with wrong bytes (it is absent)"
elif python3 - "$T/r2/unique.bin" "$S/unique.bin" <<'EOF'; then
import sys
got = open(sys.argv[1], "rb").read()
want = open(sys.argv[2], "rb").read()
sys.exit(0 if want.startswith(got) else 1)
EOF
	pass "restore of b2 wrote only correct bytes to unique.bin ($(file_size "$T/r2/unique.bin") of $(file_size "$S/unique.bin"))"
else
	fail "restore of b2 wrote wrong bytes to unique.bin: $(cmp "$T/r2/unique.bin" "$S/unique.bin" 2>&1 | head -1)"
fi
if out=$(treecmp "$S" "$T/r2" --exclude unique.bin --ignore-root-mtime); then
	pass "restore of b2 restored every undamaged entry"
else
	fail "restore of b2, undamaged entries: $out"
fi

# ---- the older backup is untouched ----
expect_ok cbrfs restore $V b1 --to "$T/r1"
if out=$(treecmp "$T/r1-ref" "$T/r1"); then pass "b1 still restores intact"; else fail "b1 after damage: $out"; fi

# ---- repair: the original pack makes everything good again ----
cp -p "$T/pack.orig" "$PACK"
expect_ok cbrfs check $V --read-data
expect_ok cbrfs restore $V b2 --to "$T/r2-good"
if out=$(treecmp "$S" "$T/r2-good"); then pass "with the pack put back b2 restores whole"; else fail "b2 with the pack put back: $out"; fi

# ---- truncated and missing packs ----
# expect_damaged_b2 WHAT: check (structure only) and check --read-data fail
# naming b2 and not b1; restore of b2 fails; b1 restores intact.
expect_damaged_b2() {
	local what=$1 mode
	for mode in "" --read-data; do
		expect_exit 1 '' -- cbrfs check $V $mode
		local all="$OUT
$ERR"
		if matches 'damaged backup: b2$' "$all" &&
			! matches 'damaged backup: b1$|backup b1\b' "$all"; then
			pass "check $mode finds $what and blames b2 only"
		else
			fail "check $mode with $what: $all"
		fi
	done
	rm -rf "$T/r2-bad" "$T/r1-bad"
	expect_exit 1 'b2|unique\.bin' -- cbrfs restore $V b2 --to "$T/r2-bad"
	if [ -e "$T/r2-bad/unique.bin" ] && ! cmp -s "$T/r2-bad/unique.bin" "$S/unique.bin"; then
		python3 -c 'import sys; a=open(sys.argv[1],"rb").read(); b=open(sys.argv[2],"rb").read(); sys.exit(0 if b.startswith(a) else 1)' \
			"$T/r2-bad/unique.bin" "$S/unique.bin" ||
			fail "restore of b2 with $what wrote wrong bytes to unique.bin"
	fi
	expect_ok cbrfs restore $V b1 --to "$T/r1-bad"
	if out=$(treecmp "$T/r1-ref" "$T/r1-bad"); then pass "b1 restores intact with $what"; else fail "b1 with $what: $out"; fi
}

note "truncating the pack by 100 bytes (into its trailer)"
truncate -s $((PACK_SIZE - 100)) "$PACK"
expect_damaged_b2 "a pack short of 100 bytes"

note "truncating the pack to half its size"
cp -p "$T/pack.orig" "$PACK"
truncate -s $((PACK_SIZE / 2)) "$PACK"
expect_damaged_b2 "a pack cut in half"

note "removing the pack"
rm -f "$PACK"
expect_damaged_b2 "a missing pack"

cp -p "$T/pack.orig" "$PACK"
expect_ok cbrfs check --read-data

# ---- a damaged index ----
# shellcheck disable=SC2012 # index names are hex
IDX=$(ls -t "$STORE/vaults/$V/index/"*.idx | head -n 1)
note "flipping bytes in, then truncating, the newest index ${IDX#"$STORE"/} (b2's)"
cp -p "$IDX" "$T/idx.orig"
IDX_SIZE=$(file_size "$IDX")
for off in 20 $((IDX_SIZE / 2)) $((IDX_SIZE - 12)) truncated; do
	cp -p "$T/idx.orig" "$IDX"
	if [ "$off" = truncated ]; then
		truncate -s 10 "$IDX"
	else
		flip "$IDX" "$off"
	fi
	expect_exit 1 '' -- cbrfs check $V
	rm -rf "$T/r2-idx" "$T/r1-idx"
	run cbrfs restore $V b2 --to "$T/r2-idx"
	if [ "$RC" = 0 ]; then
		if out=$(treecmp "$S" "$T/r2-idx"); then
			pass "index damaged ($off): restore of b2 succeeded with the right bytes"
		else
			fail "index damaged ($off): restore of b2 exited 0 with a wrong tree: $out"
		fi
	elif [ -e "$T/r2-idx/unique.bin" ] && ! cmp -s "$T/r2-idx/unique.bin" "$S/unique.bin"; then
		fail "index damaged ($off): restore of b2 failed and left a wrong unique.bin"
	else
		pass "index damaged ($off): restore of b2 failed (exit $RC) without wrong bytes"
	fi
	run cbrfs restore $V b1 --to "$T/r1-idx"
	if [ "$RC" = 0 ] && out=$(treecmp "$T/r1-ref" "$T/r1-idx"); then
		pass "index damaged ($off): b1 restores intact"
	else
		fail "index damaged ($off): b1: exit $RC: $ERR ${out:-}"
	fi
done
note "a backup taken while b2's index is unreadable stores again what it needs"
truncate -s 10 "$IDX"
expect_ok cbrfs backup create $V --name b3
expect_ok cbrfs restore $V b3 --to "$T/r3-idx"
if out=$(treecmp "$S" "$T/r3-idx"); then pass "b3, taken beside a damaged index, restores whole"; else fail "b3 beside a damaged index: $out"; fi
cp -p "$T/idx.orig" "$IDX"
expect_ok cbrfs backup delete $V b3
expect_ok cbrfs check --read-data

# ---- a damaged backup record ----
note "overwriting b2's record with garbage"
REC=$STORE/vaults/$V/backups/b2.bk
cp -p "$REC" "$T/b2.bk.orig"
printf 'garbage' >"$REC"
expect_exit 1 '' -- cbrfs check $V
all="$OUT
$ERR"
if matches 'backup b2' "$all" && matches 'damaged backup: b2$' "$all"; then
	pass "check names b2's damaged record and lists b2 as damaged"
else
	fail "check with b2's record damaged: $all"
fi
expect_exit 1 'backup b2' -- cbrfs backup list $V
if matches '^b1 ' "$OUT"; then
	pass "backup list still lists b1 beside the damaged b2"
else
	fail "backup list with b2 damaged: $OUT"
fi
expect_exit 1 'backup b2' -- cbrfs restore $V b2 --to "$T/r2-rec"
expect_ok cbrfs restore $V b1 --to "$T/r1-rec"
if out=$(treecmp "$T/r1-ref" "$T/r1-rec"); then pass "b1 restores intact beside a damaged record"; else fail "b1 beside a damaged record: $out"; fi
cp -p "$T/b2.bk.orig" "$REC"
expect_ok cbrfs check --read-data

# ---- a damaged vault record ----
note "a second vault whose vault.json is damaged"
expect_ok cbrfs vault create other --type filesystem --capacity 10
cp -p "$STORE/vaults/other/vault.json" "$T/other-vault.json"
printf '{bad' >"$STORE/vaults/other/vault.json"
expect_exit 1 '' -- cbrfs check
if matches 'vault other.*vault.json is damaged' "$OUT
$ERR"; then
	pass "check names the vault whose record is damaged"
else
	fail "check with other's vault.json damaged: $OUT $ERR"
fi
if matches "^vault $V: ok" "$OUT"; then
	pass "check still finds vault $V ok"
else
	fail "check of $V beside a damaged vault: $OUT"
fi
expect_exit 1 'vault other.*vault.json is damaged' -- cbrfs vault show other
expect_ok cbrfs restore $V b1 --to "$T/r1-vj"
cp -p "$T/other-vault.json" "$STORE/vaults/other/vault.json"

# ---- prune never deletes data a live backup needs because an index is damaged ----
note "prune with an unreadable index: a live backup whose data is indexed only there"
P=$T/prune-src
mkdir -p "$P"
random_file "$P/x" $((2 << 20))
expect_ok cbrfs vault create pv --type filesystem --capacity 10
expect_ok cbrfs vault associate pv --path "$P"
expect_ok cbrfs backup create pv --name pa
# shellcheck disable=SC2012 # index names are hex
IDX_A=$(ls -t "$STORE/vaults/pv/index/"*.idx | head -n 1)
random_file "$P/y" 100000
expect_ok cbrfs backup create pv --name pb
expect_ok cbrfs restore pv pb --to "$T/pb-ref"
# pb's trees are in its own index; x's data only in pa's index.
expect_ok cbrfs backup delete pv pa
cp -p "$IDX_A" "$T/idx-a.orig"
packs_before=$(find "$STORE/vaults/pv/packs" -name '*.pack' | sort)
for damage in truncated removed; do
	if [ "$damage" = truncated ]; then truncate -s 10 "$IDX_A"; else rm -f "$IDX_A"; fi
	run cbrfs prune pv
	packs_after=$(find "$STORE/vaults/pv/packs" -name '*.pack' | sort)
	if [ "$packs_after" = "$packs_before" ]; then
		pass "prune with pa's index $damage removed no pack (exit $RC)"
	else
		fail "prune with pa's index $damage removed packs that pb needs: exit $RC; $OUT $ERR"
	fi
	if [ "$RC" != 0 ]; then
		pass "prune with pa's index $damage refused (exit $RC): $(grep -m1 "^cbrfs: error" <<<"$ERR")"
	else
		fail "prune with pa's index $damage exited 0: $OUT"
	fi
	cp -p "$T/idx-a.orig" "$IDX_A"
done
expect_ok cbrfs check pv --read-data
expect_ok cbrfs prune pv
expect_ok cbrfs restore pv pb --to "$T/pb-after"
if out=$(treecmp "$T/pb-ref" "$T/pb-after"); then pass "pb restores whole after the index is put back and prune ran"; else fail "pb after prune: $out"; fi

# ---- reads through the mount: a damaged blob is EIO, never wrong bytes ----
# A small file (read whole when opened and handed to the page cache) and a
# large one (read in requests), each with one flipped byte.
if [ ! -e /dev/fuse ] || ! command -v fusermount3 >/dev/null; then
	skip "reads of damaged blobs through the mount: no /dev/fuse or fusermount3"
else
	M=$T/msrc
	mkdir -p "$M"
	random_file "$M/small.bin" 100000
	random_file "$M/big.bin" $((3 << 20))
	printf 'intact\n' >"$M/ok.txt"
	expect_ok cbrfs vault create mv --type filesystem --capacity 10
	expect_ok cbrfs vault associate mv --path "$M" --name src
	expect_ok cbrfs backup create mv --name mb
	for f in small.bin big.bin; do
		read -r P O < <(python3 - "$STORE/vaults/mv/packs" "$M/$f" <<'PY'
import glob, sys
data = open(sys.argv[2], "rb").read()
needle = data[len(data) // 2:len(data) // 2 + 64]
for p in glob.glob(sys.argv[1] + "/*/*.pack"):
    at = open(p, "rb").read().find(needle)
    if at >= 0:
        print(p, at)
        break
PY
		)
		[ -n "${O:-}" ] || die "$f's bytes not found in any pack of vault mv"
		flip "$P" "$O"
	done
	MNT=$T/mnt
	mkdir -p "$MNT"
	on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"
	expect_ok cbrfs mount "$MNT"
	for f in small.bin big.bin; do
		for try in 1 2; do
			if err=$(cat "$MNT/mv/mb/src/$f" 2>&1 >"$T/got"); then
				fail "cat of damaged $f through the mount (try $try) succeeded"
			elif ! matches 'Input/output error' "$err"; then
				fail "cat of damaged $f through the mount (try $try): expected EIO, got: $err"
			elif python3 -c 'import sys; g=open(sys.argv[1],"rb").read(); sys.exit(0 if open(sys.argv[2],"rb").read().startswith(g) else 1)' "$T/got" "$M/$f"; then
				pass "cat of damaged $f through the mount (try $try): EIO after $(file_size "$T/got") correct bytes"
			else
				fail "cat of damaged $f through the mount (try $try) gave wrong bytes"
			fi
		done
	done
	if cmp -s "$MNT/mv/mb/src/ok.txt" "$M/ok.txt"; then pass "an undamaged file beside them reads right"; else fail "ok.txt through the mount differs"; fi
	expect_ok cbrfs umount "$MNT"
fi
