#!/usr/bin/env python3
"""Files that change while a backup reads them (tests/reliability/changing.sh).

    churn.py setup DIR SEED          make the churned files
    churn.py run DIR SEED STATS      change them until SIGTERM; write the
                                     counts of each change to STATS (JSON)
    churn.py verify DIR [WARNINGS SRC]
                                     check a restored copy of DIR: every
                                     file must be a state it could have had;
                                     with the backup's stderr and DIR's
                                     source path, every file missing from a
                                     restored d-* directory must be named by a
                                     warning (it or a directory above it)

Files, and the states each may be restored in:
  grow-K            appended to and truncated: a prefix of PATTERN
  re-K              deleted, absent a while, re-created: a prefix of PATTERN
  rw-K              rewritten in place, size RW_SIZE: every byte the
                    generation byte of some rewrite (never 0)
  d-K/ or d-K.moved a directory renamed back and forth, holding files
                    f-J and sub/f-J: prefixes of PATTERN
  tmp-K/            made with files and removed again: prefixes of PATTERN
  flip-K/ or flip-K.x
                    like d-K, but renamed back and forth without a pause
                    (a thread of its own), so that a directory listed by
                    its parent is often gone when the backup opens it
  swap-K            a regular file (a prefix of PATTERN) and a FIFO in
                    turn, each put in place by rename: a backup that listed
                    a file and opens a FIFO must not wait for a writer
PATTERN is a fixed sequence of non-zero bytes, so a hole, a zero tail or
bytes of another offset or file never pass.
"""

import json
import os
import random
import shutil
import signal
import stat
import threading
import sys
import time

P = 4093
_rng = random.Random(20261124)
PATTERN = bytes(_rng.randrange(1, 256) for _ in range(P))
RW_SIZE = 1 << 20
GROW, RE, RW, DIRS, SWAP, FLIP = 8, 8, 6, 6, 3, 2
GROW_MAX = 8 << 20


def pattern(start, n):
    """PATTERN repeated, bytes [start, start + n)."""
    if n <= 0:
        return b""
    reps = (start % P + n) // P + 2
    s = start % P
    return (PATTERN * reps)[s : s + n]


def write_pattern(path, n):
    with open(path, "wb") as f:
        pos = 0
        while pos < n:
            k = min(1 << 20, n - pos)
            f.write(pattern(pos, k))
            pos += k


def setup(d, seed):
    rng = random.Random(seed)
    os.makedirs(d, exist_ok=True)
    for k in range(GROW):
        write_pattern(os.path.join(d, f"grow-{k}"), rng.randrange(1, GROW_MAX))
    for k in range(RE):
        write_pattern(os.path.join(d, f"re-{k}"), rng.randrange(0, 2 << 20))
    for k in range(RW):
        with open(os.path.join(d, f"rw-{k}"), "wb") as f:
            f.write(bytes([1 + k]) * RW_SIZE)
    for k in range(DIRS):
        make_dir(os.path.join(d, f"d-{k}"), rng)
    for k in range(FLIP):
        make_dir(os.path.join(d, f"flip-{k}"), rng)
    for k in range(SWAP):
        write_pattern(os.path.join(d, f"swap-{k}"), rng.randrange(1, 200000))


def make_dir(path, rng):
    os.makedirs(os.path.join(path, "sub"), exist_ok=True)
    for j in range(20):
        write_pattern(os.path.join(path, f"f-{j}"), rng.randrange(0, 20000))
        write_pattern(os.path.join(path, "sub", f"f-{j}"), rng.randrange(0, 5000))


def run(d, seed, stats_path):
    rng = random.Random(seed * 7919 + 1)
    counts = {}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))

    def count(what):
        counts[what] = counts.get(what, 0) + 1

    def dump(stopped):
        tmp = stats_path + ".tmp"
        with open(tmp, "w") as f:
            ops = dict(counts, **{"rename directory (no pause)": flips[0]})
            json.dump({"ops": ops, "stopped": stopped}, f, sort_keys=True)
        os.replace(tmp, stats_path)

    flips = [0]

    def flipper():
        k = 0
        while not stop:
            k = (k + 1) % FLIP
            a, b = os.path.join(d, f"flip-{k}"), os.path.join(d, f"flip-{k}.x")
            try:
                if os.path.exists(a):
                    os.rename(a, b)
                else:
                    os.rename(b, a)
                flips[0] += 1
            except FileNotFoundError:
                pass

    threading.Thread(target=flipper, daemon=True).start()
    dump(False)
    last = time.monotonic()
    gen = 1
    while not stop:
        op = rng.randrange(100)
        try:
            if op < 25:
                p = os.path.join(d, f"grow-{rng.randrange(GROW)}")
                n = os.path.getsize(p)
                if n > GROW_MAX:
                    os.truncate(p, rng.randrange(0, n))
                    count("truncate (file too long)")
                else:
                    k = rng.randrange(1, 1 << 20)
                    with open(p, "ab") as f:
                        f.write(pattern(n, k))
                    count("append")
            elif op < 55:
                p = os.path.join(d, f"grow-{rng.randrange(GROW)}")
                n = os.path.getsize(p)
                os.truncate(p, rng.randrange(0, n + 1))
                count("truncate")
            elif op < 65:
                p = os.path.join(d, f"rw-{rng.randrange(RW)}")
                gen = gen % 255 + 1
                with open(p, "r+b") as f:
                    for off in range(0, RW_SIZE, 256 << 10):
                        f.write(bytes([gen]) * (256 << 10))
                count("rewrite in place")
            elif op < 77:
                p = os.path.join(d, f"re-{rng.randrange(RE)}")
                if os.path.exists(p):
                    os.unlink(p)
                    count("delete")
                else:
                    write_pattern(p, rng.randrange(0, 2 << 20))
                    count("re-create")
            elif op < 84:
                k = rng.randrange(DIRS)
                a, b = os.path.join(d, f"d-{k}"), os.path.join(d, f"d-{k}.moved")
                if os.path.exists(a):
                    os.rename(a, b)
                else:
                    os.rename(b, a)
                count("rename directory")
            elif op < 89:
                p = os.path.join(d, f"swap-{rng.randrange(SWAP)}")
                new = p + ".new"
                if stat.S_ISFIFO(os.lstat(p).st_mode):
                    write_pattern(new, rng.randrange(1, 200000))
                    count("FIFO replaced by a file")
                else:
                    os.mkfifo(new)
                    count("file replaced by a FIFO")
                os.replace(new, p)
            else:
                p = os.path.join(d, f"tmp-{rng.randrange(3)}")
                if os.path.exists(p):
                    shutil.rmtree(p)
                    count("remove directory tree")
                else:
                    make_dir(p, rng)
                    count("make directory tree")
        except FileNotFoundError:
            count("raced with itself")
        time.sleep(0.002)
        if time.monotonic() - last > 0.5:
            dump(False)
            last = time.monotonic()
    dump(True)


def verify(d, warnings_file=None, src=None):
    """Print a summary and exit 0 if every file under d is a valid state
    and, given the backup's warnings and the churned directory's source
    path, every file missing from a restored d-* directory is named (or an
    ancestor is) by a warning."""
    bad = []
    files = 0
    nbytes = 0
    if warnings_file:
        named = set()
        prefix = "warning: resource src: " + src.rstrip("/") + "/"
        with open(warnings_file, errors="replace") as f:
            for line in f:
                if line.startswith(prefix):
                    named.add(line[len(prefix) :].split(":", 1)[0])
        for top in sorted(os.listdir(d)):
            # tmp-* trees are made and removed a file at a time: a listing
            # taken meanwhile sees them half made or half removed, and a
            # file missing from it was missing from the directory then.
            # d-* trees only move (one atomic rename), so a file missing
            # from a d-* directory that was listed must have been reported.
            if not top.startswith(("d-", "flip-")):
                continue
            for j in range(20):
                for rel in (f"{top}/f-{j}", f"{top}/sub/f-{j}"):
                    parts = rel.split("/")
                    ancestors = {"/".join(parts[:i]) for i in range(1, len(parts) + 1)}
                    if not os.path.lexists(os.path.join(d, rel)) and not ancestors & named:
                        bad.append(f"{rel}: missing from the backup, and no warning names it")
    for root, dirs, names in os.walk(d):
        for n in names:
            p = os.path.join(root, n)
            rel = os.path.relpath(p, d)
            if rel.startswith("swap-") and stat.S_ISFIFO(os.lstat(p).st_mode):
                continue
            if os.path.islink(p) or not os.path.isfile(p):
                bad.append(f"{rel}: not a regular file")
                continue
            with open(p, "rb") as f:
                data = f.read()
            files += 1
            nbytes += len(data)
            top = rel.split("/")[0]
            if top.startswith("rw-"):
                if len(data) != RW_SIZE:
                    bad.append(f"{rel}: {len(data)} bytes, always {RW_SIZE}")
                elif b"\0" in data:
                    bad.append(f"{rel}: zero byte at {data.index(0)} (a hole where data was)")
            elif top.startswith(("grow-", "re-", "d-", "flip-", "tmp-", "swap-")):
                want = pattern(0, len(data))
                if data != want:
                    at = next(i for i in range(len(data)) if data[i] != want[i])
                    bad.append(
                        f"{rel}: {len(data)} bytes, byte {at} is {data[at]}, "
                        f"expected {want[at]} (not a state the file had)"
                    )
            else:
                bad.append(f"{rel}: unexpected file")
    for b in bad[:20]:
        print(b)
    if bad:
        print(f"{len(bad)} of {files} files are wrong")
        sys.exit(1)
    print(f"{files} files, {nbytes} bytes")


def main():
    cmd = sys.argv[1]
    if cmd == "setup":
        setup(sys.argv[2], int(sys.argv[3]))
    elif cmd == "run":
        run(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif cmd == "verify":
        verify(*sys.argv[2:5])
    else:
        sys.exit(f"churn.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
