#!/usr/bin/env python3
"""overwrite.py IMAGE PERCENT SEED: overwrite PERCENT % of IMAGE's 4 KiB blocks
with random bytes, blocks chosen at random from SEED; prints the bytes
changed (last line, a number)."""
import os
import random
import sys

path, pct, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
blocks = os.path.getsize(path) // 4096
rng = random.Random(seed)
n = int(blocks * pct / 100)
fd = os.open(path, os.O_WRONLY)
for b in rng.sample(range(blocks), n):
    os.pwrite(fd, rng.randbytes(4096), b * 4096)
os.fsync(fd)
os.close(fd)
print(n * 4096)
