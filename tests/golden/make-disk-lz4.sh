#!/usr/bin/env bash
# Make tests/golden/disk-lz4: a store with one disk vault whose backup holds
# data chunks of every disk codec (zstd frames, LZ4 blocks, raw), written by
# the built binary; tests/golden_lz4.rs reads the committed result.
# ONLY run it into a new directory: never regenerate a golden store (see
# make.sh beside it).
#
# Usage: tests/golden/make-disk-lz4.sh OUT_DIR   (CBRFS=path/to/cbrfs)
set -euo pipefail
OUT=${1:?usage: tests/golden/make-disk-lz4.sh OUT_DIR}
CBRFS=$(realpath "${CBRFS:?set CBRFS to the binary}")
[ ! -e "$OUT" ] || { echo "make-disk-lz4.sh: $OUT exists: golden stores are never regenerated" >&2; exit 2; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cbrfs-golden-lz4.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# 24 chunks of 16 KiB, deterministic: 8 of C-like text (zstd), 8 like
# machine code (half table words, half random: LZ4 after the first), 4 of
# zeros (not stored), 2 random (raw), 2 of text (zstd again).
python3 - "$WORK/disk.img" <<'PY'
import random, sys
r = random.Random(17)
words = [b"static ", b"int ", b"return ", b"struct ", b"(void)", b";\n", b"{\n", b"}\n", b"unsigned long ", b"if (x) "]
def text():
    b = bytearray()
    while len(b) < 16384:
        b += r.choice(words)
    return bytes(b[:16384])
table = [r.getrandbits(64).to_bytes(8, "little") for _ in range(256)]
def code():
    b = bytearray()
    while len(b) < 16384:
        b += r.choice(table) if r.random() < 0.5 else r.getrandbits(64).to_bytes(8, "little")
    return bytes(b[:16384])
out = b"".join([text() for _ in range(8)] + [code() for _ in range(8)] + [bytes(16384)] * 4
               + [r.getrandbits(8 * 16384).to_bytes(16384, "little") for _ in range(2)] + [text() for _ in range(2)])
open(sys.argv[1], "wb").write(out)
PY
S="$OUT/store"
mkdir -p "$OUT"
"$CBRFS" --store "$S" vault create golden --type disk --capacity 10 >/dev/null
"$CBRFS" --store "$S" vault associate golden --disk "$WORK/disk.img" --name disk >/dev/null
"$CBRFS" --store "$S" backup create golden --name b1 >/dev/null
sha256sum <"$WORK/disk.img" | cut -d' ' -f1 >"$OUT/disk.img.sha256"
rm -rf "$S/logs"
echo "made $OUT"
