#!/usr/bin/env python3
"""randread.py A B [N] [SEED]: N reads at random offsets and lengths of file A
and file B (pread); exits 1 at the first difference. For reads through the
mount against the source.

randread.py --bench FILE [N] [LEN] [SEED]: time N reads of LEN bytes (4096)
at random LEN-aligned offsets of FILE (issue 17's random-read row: through
the mount against the source, or one binary against another); prints the
seconds."""
import os
import random
import sys
import time

if sys.argv[1:2] == ["--bench"]:
    path = sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 3000
    ln = int(sys.argv[4]) if len(sys.argv) > 4 else 4096
    rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 7)
    fd = os.open(path, os.O_RDONLY)
    slots = max(os.fstat(fd).st_size // ln, 1)
    t = time.monotonic()
    for _ in range(n):
        os.pread(fd, ln, rng.randrange(0, slots) * ln)
    print(f"{n} reads of {ln} bytes: {time.monotonic() - t:.3f} s")
    sys.exit(0)

a, b = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 500
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
size = os.path.getsize(a)
if os.path.getsize(b) != size:
    print(f"sizes differ: {size} vs {os.path.getsize(b)}")
    sys.exit(1)
fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
for i in range(n):
    off = rng.randrange(0, size + 4096) if size else 0
    ln = rng.choice([1, 17, 4096, 65536, 131072, 1 << 20, 3 << 20])
    x, y = os.pread(fa, ln, off), os.pread(fb, ln, off)
    if x != y:
        print(f"read {i}: {ln} bytes at {off} differ")
        sys.exit(1)
print(f"{n} random reads of {size} bytes match")
