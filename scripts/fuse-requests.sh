#!/usr/bin/env bash
# scripts/fuse-requests.sh: what `cp -a` of a tree out of the mount costs
# in FUSE requests, per opcode (exact: counted from fuser's debug log, so
# robust on a loaded host), and in wall time beside a native `cp -a` of
# the same tree (indicative only unless the host is idle). Issue 17's
# measure for the small-files row: every round trip the kernel lets the
# mount remove is one fewer wake-up per file.
#
# Usage: scripts/fuse-requests.sh DIR
#   DIR is backed up into a fresh store; `cp -a` copies it out of a fresh
#   mount twice (cold: the kernel knows nothing; warm: the same mount
#   again), counting requests; then, for each worker-thread count, one
#   round trip's latency and FUSE_REQ_RUNS timed copies from a mount
#   without the debug log, each after a native `cp -a` of DIR.
#
# Settings (environment):
#   CBRFS_BIN               the binary [default target/release/cbrfs]
#   FUSE_REQ_DIR            work directory [/var/tmp/cbrfs-fusereq]
#   FUSE_REQ_RUNS=3         timed runs per thread count (0: counts only)
#   FUSE_REQ_THREADS="1 2 4"  the mount's worker threads in the timed runs
#                           (CBRFS_MOUNT_THREADS), each measured also by
#                           one round trip's latency (LISTXATTR of a file)
#   CBRFS_MOUNT_THREADS     the threads of the counting mount [default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:?usage: scripts/fuse-requests.sh DIR}
SRC=$(cd "$SRC" && pwd)
BIN=${CBRFS_BIN:-$PWD/target/release/cbrfs}
W=${FUSE_REQ_DIR:-/var/tmp/cbrfs-fusereq}
RUNS=${FUSE_REQ_RUNS:-3}
THREADS=${FUSE_REQ_THREADS:-1 2 4}
[ -x "$BIN" ] || { echo "fuse-requests: $BIN not found: cargo build --release" >&2; exit 1; }
STORE=$W/store
MNT=$W/mnt
cbrfs() { "$BIN" --store "$STORE" "$@"; }
cleanup() {
	"$BIN" --store "$STORE" umount "$MNT" >/dev/null 2>&1 || fusermount3 -uz "$MNT" >/dev/null 2>&1 || true
	rm -rf "$W"
}
trap cleanup EXIT
rm -rf "$W"
mkdir -p "$MNT"

cbrfs vault create v --type filesystem --capacity 100GB >/dev/null
cbrfs vault associate v --path "$SRC" --name src >/dev/null
cbrfs backup create v --name b1 >/dev/null
entries=$(find "$SRC" | wc -l)
files=$(find "$SRC" -type f | wc -l)
echo "tree $SRC: $entries entries, $files files; threads ${CBRFS_MOUNT_THREADS:-default}"

# count LOG FROM: requests per opcode in mount.log from byte FROM on.
count() {
	tail -c +"$(($2 + 1))" "$1" | grep -oE 'ino 0x[0-9a-f]+ [A-Z_]+' | awk '{print $3}' | sort | uniq -c |
		awk '{printf "%s=%s ", $2, $1; t += $1} END {printf "TOTAL=%s\n", t}'
}
LOG=$STORE/logs/mount.log
RUST_LOG=info,fuser=debug cbrfs mount "$MNT" >/dev/null
for pass in cold warm; do
	from=$(stat -c %s "$LOG")
	cp -a "$MNT/v/b1/src" "$W/out"
	rm -rf "$W/out"
	# The forgets and releases of the copy arrive after it: wait until the
	# log stops growing.
	prev=-1
	while [ "$(stat -c %s "$LOG")" != "$prev" ]; do
		prev=$(stat -c %s "$LOG")
		sleep 0.5
	done
	line=$(count "$LOG" "$from")
	total=${line##*TOTAL=}
	echo "requests, cp -a $pass: $line"
	echo "  per file: $(python3 -c 'import sys; print(round(int(sys.argv[1]) / int(sys.argv[2]), 2))' "$total" "$files")"
done
cbrfs umount "$MNT"

[ "$RUNS" -gt 0 ] || exit 0
t() {
	local s e
	s=$(date +%s%N)
	"$@"
	e=$(date +%s%N)
	python3 -c 'import sys; print("%.2f" % ((int(sys.argv[2]) - int(sys.argv[1])) / 1e9))' "$s" "$e"
}
# The daemon's CPU ticks and its threads' wake-ups (voluntary context
# switches, summed over its threads) so far.
usage() {
	local ticks=0 sw=0 t
	for t in /proc/"$pid"/task/*; do
		ticks=$((ticks + $(awk '{print $14 + $15}' "$t/stat")))
		sw=$((sw + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")))
	done
	echo "$ticks $sw"
}
for th in $THREADS; do
	CBRFS_MOUNT_THREADS=$th cbrfs mount "$MNT" >/dev/null
	pid=$(pgrep -f -- "mount $MNT --foreground" | head -n 1 || true)
	[ -n "$pid" ] || { echo "fuse-requests: no mount daemon found" >&2; exit 1; }
	# One round trip's latency: LISTXATTR of one file (answered from
	# memory, never cached by the kernel), median of five runs of 5000.
	# -quit, not a pipe into head: under pipefail find's SIGPIPE ended the script.
	one=$(find "$MNT/v/b1/src" -type f -print -quit)
	rt=$(python3 - "$one" <<'EOF2'
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
for _ in range(200):
    os.listxattr(fd)
runs = []
for _ in range(5):
    t = time.perf_counter()
    for _ in range(5000):
        os.listxattr(fd)
    runs.append((time.perf_counter() - t) / 5000 * 1e6)
print("%.1f" % sorted(runs)[2])
EOF2
)
	echo "threads $th ($(ls /proc/"$pid"/task | wc -l) in the daemon): one round trip ${rt} us"
	for r in $(seq 1 "$RUNS"); do
		nat=$(t cp -a "$SRC" "$W/out")
		rm -rf "$W/out"
		read -r t0 w0 < <(usage)
		mnt=$(t cp -a "$MNT/v/b1/src" "$W/out")
		read -r t1 w1 < <(usage)
		rm -rf "$W/out"
		echo "  run $r: native cp -a ${nat}s, from the mount ${mnt}s, ratio $(python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) / float(sys.argv[1])))' "$nat" "$mnt"); daemon CPU $(python3 -c 'import os, sys; print("%.2f" % (int(sys.argv[1]) / os.sysconf("SC_CLK_TCK")))' $((t1 - t0)))s, wake-ups $((w1 - w0))"
	done
	cbrfs umount "$MNT" >/dev/null
done
