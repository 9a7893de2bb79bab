#!/usr/bin/env bash
# scripts/bench-million.sh: one directory of a million entries, through
# every path that lists or walks it: the backup (walk, one tree blob of a
# million nodes), an unchanged re-backup, the mount (`ls | wc -l`,
# `find | wc -l`, `stat` of one name), and the restore. Checks that every
# count matches and prints each step's figures.
#
# A benchmark, not a test: CI does not run it and no time is asserted; a
# count that does not match, or a step that fails, ends it with exit 1.
# Needs /dev/fuse and fusermount3 (root, or a user allowed to mount), about
# 2.2 million free inodes and a few GB in BENCH_MILLION_DIR. The page cache
# is not dropped (the host is shared): every step after the first runs
# with the entries' metadata cached, as right after a busy day.
#
# Settings (environment):
#   BENCH_MILLION_N=1000000     entries in the directory
#   BENCH_MILLION_DIR=/var/tmp/cbrfs-million   work directory (removed at
#                               the end unless BENCH_MILLION_KEEP=1)
#   CBRFS_BIN                   the binary [default target/release/cbrfs]
#
# Every timed step: wall, user and system seconds and peak RSS from
# `/usr/bin/time -f "%e %U %S %M"`; for the mount, the daemon's RSS and peak
# (VmRSS, VmHWM) after the listings.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${BENCH_MILLION_N:-1000000}
W=${BENCH_MILLION_DIR:-/var/tmp/cbrfs-million}
BIN=${CBRFS_BIN:-$REPO/target/release/cbrfs}
[ -x "$BIN" ] || { echo "bench-million: $BIN not found: cargo build --release" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-million: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

S=$W/src
STORE=$W/store
MNT=$W/mnt
R=$W/restore
cbrfs() { "$BIN" --store "$STORE" "$@"; }
cleanup() {
	"$BIN" --store "$STORE" umount "$MNT" >/dev/null 2>&1 || fusermount3 -uz "$MNT" >/dev/null 2>&1 || true
	if [ "${BENCH_MILLION_KEEP:-0}" != 1 ]; then
		rm -rf "$W"
	fi
}
trap cleanup EXIT
rm -rf "$W"
mkdir -p "$S/big" "$MNT"

ROWS=()
# timed NAME cmd...: run cmd under /usr/bin/time; keep "wall user sys rss".
timed() {
	local name=$1
	shift
	/usr/bin/time -o "$W/.time" -f "%e %U %S %M" "$@"
	read -r wall user sys rss <"$W/.time"
	ROWS+=("$name"$'\x1f'"$wall"$'\x1f'"$user"$'\x1f'"$sys"$'\x1f'"$rss")
	printf '%-40s %8ss wall %8ss user %8ss sys %9s KiB peak RSS\n' "$name" "$wall" "$user" "$sys" "$rss"
}
die() {
	echo "bench-million: $*" >&2
	exit 1
}

echo "== $N entries in $S/big (every 10th holds 8 bytes, the rest empty)"
start=$SECONDS
python3 - "$S/big" "$N" <<'EOF'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    fd = os.open(f"{d}/f{i:07d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    if i % 10 == 0:
        os.write(fd, b"%07d\n" % i)
    os.close(fd)
EOF
echo "made in $((SECONDS - start)) s"
want_bytes=$(((N + 9) / 10 * 8))

cbrfs vault create m --type filesystem --capacity 100GB >/dev/null
cbrfs vault associate m --path "$S" --name src >/dev/null

echo "== backup"
timed "backup create (first, full)" "$BIN" --store "$STORE" backup create m --name b1
cbrfs backup show m b1 --json >"$W/b1.json"
got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stats"]; print(s["files_new"], s["bytes_total"], s["errors"])' "$W/b1.json")
[ "$got" = "$N $want_bytes 0" ] || die "b1 counts files_new, bytes_total, errors = $got, expected $N $want_bytes 0"
echo "b1: $N files, $want_bytes bytes, no errors"
timed "backup create (unchanged, incremental)" "$BIN" --store "$STORE" backup create m --name b2
cbrfs backup show m b2 --json >"$W/b2.json"
got=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["stats"]; print(s["files_unchanged"], s["bytes_read"])' "$W/b2.json")
[ "$got" = "$N 0" ] || die "b2 files_unchanged, bytes_read = $got, expected $N 0"
store_bytes=$(du -sb "$STORE" | cut -f1)
echo "store: $store_bytes bytes"

echo "== mount"
timed "mount (until ready)" "$BIN" --store "$STORE" mount "$MNT"
pid=$(pgrep -f -- "mount $MNT --foreground" | head -n 1 || true)
[ -n "$pid" ] || die "no mount daemon found"
timed "ls MNT/m/b1/src/big | wc -l" sh -c "ls '$MNT/m/b1/src/big' | wc -l >'$W/ls.count'"
[ "$(cat "$W/ls.count")" = "$N" ] || die "ls counted $(cat "$W/ls.count"), expected $N"
timed "ls again (kernel caches warm)" sh -c "ls '$MNT/m/b1/src/big' | wc -l >'$W/ls.count'"
[ "$(cat "$W/ls.count")" = "$N" ] || die "ls again counted $(cat "$W/ls.count")"
timed "find MNT/m/b2/src | wc -l" sh -c "find '$MNT/m/b2/src' | wc -l >'$W/find.count'"
[ "$(cat "$W/find.count")" = "$((N + 2))" ] || die "find counted $(cat "$W/find.count"), expected $((N + 2))"
mid=$(printf 'f%07d' $((N / 2)))
timed "stat of one name ($mid)" stat "$MNT/m/b1/src/big/$mid"
[ "$(stat -c %s "$MNT/m/b1/src/big/$mid")" = "$(stat -c %s "$S/big/$mid")" ] || die "$mid: size differs"
timed "cat of one small file" cat "$MNT/m/b1/src/big/f0000010"
read -r rss hwm < <(awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {print r, h}' "/proc/$pid/status")
echo "mount daemon: VmRSS $rss KiB, VmHWM $hwm KiB after the listings"
ROWS+=("mount daemon after ls, ls, find, stat (VmRSS, VmHWM)"$'\x1f'$'\x1f'$'\x1f'$'\x1f'"$rss (peak $hwm)")
cbrfs umount "$MNT"

echo "== restore"
timed "restore b1" "$BIN" --store "$STORE" restore m b1 --to "$R"
got=$(find "$R/big" -mindepth 1 | wc -l)
[ "$got" = "$N" ] || die "restore made $got entries, expected $N"
diff <(cd "$S/big" && find . -type f -printf '%p %s\n' | sort) <(cd "$R/big" && find . -type f -printf '%p %s\n' | sort) >/dev/null ||
	die "restored names or sizes differ from the source"
cmp "$S/big/$mid" "$R/big/$mid" || die "$mid differs"
echo "restore: $N entries, names and sizes equal to the source"

echo
echo "| step | wall s | user s | sys s | peak RSS KiB |"
echo "|---|---|---|---|---|"
for row in "${ROWS[@]}"; do
	IFS=$'\x1f' read -r name wall user sys rss <<<"$row"
	echo "| ${name//|/\\|} | $wall | $user | $sys | $rss |"
done
echo
echo "entries $N; store $store_bytes bytes; host $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
