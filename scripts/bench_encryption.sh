#!/usr/bin/env bash
# Encrypted vs unencrypted vault on the same data (issue 15): first backup,
# unchanged and changed re-backup, restore, `cat` of the large file and
# `cp -a` of a small tree through the mount, and `vault show` (what one
# command's unlock costs: argon2id with the slot's parameters). Each is
# measured in wall seconds and CPU seconds (user + sys; for the mount rows
# the daemon's CPU is added to the command's), the page cache dropped
# before each. The two kinds alternate within every run (odd runs plain
# first, even runs encrypted first), so that a machine loaded by others
# weighs on both alike; RUNS runs, the median of each. Needs root
# (drop_caches, the mount).
#
#   CBRFS_BIN=target/release/cbrfs scripts/bench_encryption.sh [SIZE_MIB] [RUNS]
#
# SIZE_MIB (default 1024) is the size of the large file: half of it from
# the machine's own binaries (/usr/lib, /usr/bin: compresses as programs
# do), half random (does not compress). BENCH_ENC_SRC=FILE takes that file
# instead (e.g. scripts/bench.sh's binaries image). The tree for `cp -a` is
# 2000 files of 1-16 KiB.
set -u
BIN=${CBRFS_BIN:-target/release/cbrfs}
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
[ "$(id -u)" = 0 ] || { echo "bench_encryption.sh needs root (drop_caches, the mount)" >&2; exit 1; }
W=$(mktemp -d "${TMPDIR:-/tmp}/cbrfs-bench-enc.XXXXXX")
MNT=$W/mnt
trap '"$BIN" umount --lazy "$MNT" >/dev/null 2>&1; rm -rf "$W"' EXIT
mkdir -p "$W/src/tree" "$MNT"
if [ -n "${BENCH_ENC_SRC:-}" ]; then
	cp --sparse=never "$BENCH_ENC_SRC" "$W/src/big" || exit 1
else
	half=$((SIZE_MIB << 19))
	find /usr/lib /usr/bin -type f -size +64k -print0 2>/dev/null | sort -z |
		xargs -0 cat 2>/dev/null | head -c "$half" >"$W/src/big"
	head -c $(((SIZE_MIB << 20) - $(stat -c %s "$W/src/big"))) /dev/urandom >>"$W/src/big"
fi
python3 - "$W/src/tree" <<'EOF'
import os, random, sys
rng = random.Random(15)
words = [b'alpha', b'beta', b'gamma', b'delta', b'kernel', b'vault', b'chunk', b'seal']
for d in range(40):
    p = os.path.join(sys.argv[1], 'd%02d' % d)
    os.mkdir(p)
    for f in range(50):
        n = rng.randint(1024, 16384)
        data = b' '.join(rng.choice(words) for _ in range(n // 5))[:n]
        with open(os.path.join(p, 'f%02d.c' % f), 'wb') as fh:
            fh.write(data)
EOF
printf 'bench password\n' >"$W/pw"
chmod 600 "$W/pw"
SIZE=$(stat -c %s "$W/src/big")
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# measure ROW KIND CMD...: run CMD (output discarded), record wall and
# CPU seconds (user + sys, and the mount daemon's when DAEMON is set).
declare -A WALL CPU
measure() {
	local row=$1 kind=$2 d0=0 d1=0
	shift 2
	drop
	[ -n "${DAEMON:-}" ] && d0=$(daemon_ticks)
	/usr/bin/time -f '%e %U %S' -o "$W/time" "$@" >/dev/null 2>"$W/err" ||
		{ echo "failed: $* $(cat "$W/err")" >&2; exit 1; }
	[ -n "${DAEMON:-}" ] && d1=$(daemon_ticks)
	read -r e u s <"$W/time"
	WALL[$row.$kind]+="$e "
	CPU[$row.$kind]+="$(echo "$u + $s + ($d1 - $d0) / $(getconf CLK_TCK)" | bc -l) "
}
# utime + stime of the mount daemon, in clock ticks.
daemon_ticks() { awk '{print $14 + $15}' "/proc/$DAEMON/stat"; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {printf "%.3f", a[int((NR + 1) / 2)]}'; }
one() { # one KIND RUN
	local kind=$1 r=$2 S=$W/store-$1 opt=
	[ "$kind" = encrypted ] && opt=--encrypt
	local c=("$BIN" --store "$S" --password-file "$W/pw")
	cp --reflink=auto "$W/src/big" "$W/src/big.orig" || exit 1
	"${c[@]}" vault create v --type filesystem --capacity 100GB $opt >/dev/null || exit 1
	"${c[@]}" vault associate v --path "$W/src" --name src >/dev/null || exit 1
	measure show "$kind" "${c[@]}" vault show v
	measure first "$kind" "${c[@]}" backup create v --name b1
	measure unchanged "$kind" "${c[@]}" backup create v --name b2
	# 1 % of the large file overwritten, at the same places for both kinds.
	python3 - "$W/src/big" "$SIZE" "$r" <<'EOF'
import os, random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
with open(path, 'r+b') as f:
    for _ in range(max(1, size // 100 // 65536)):
        f.seek(rng.randrange(0, max(1, size - 65536)))
        f.write(rng.randbytes(65536))
EOF
	measure changed "$kind" "${c[@]}" backup create v --name b3
	measure restore "$kind" "${c[@]}" restore v b1 --to "$W/out"
	rm -rf "$W/out"
	DAEMON=$("${c[@]}" mount "$MNT" | sed -n 's/.*daemon pid \([0-9]*\).*/\1/p')
	[ -n "$DAEMON" ] || { echo "mount: no daemon pid" >&2; exit 1; }
	# The daemon unlocks a vault at its first use: done here, so that the
	# read rows measure reading (the unlock is the `show` row's cost).
	stat "$MNT/v/b1/src/big" >/dev/null || exit 1
	measure cat "$kind" cat "$MNT/v/b1/src/big"
	measure cp "$kind" cp -a "$MNT/v/b1/src/tree" "$W/cp-out"
	DAEMON=
	rm -rf "$W/cp-out"
	"$BIN" umount "$MNT" >/dev/null
	rm -rf "$S"
	mv "$W/src/big.orig" "$W/src/big"
}
for r in $(seq 1 "$RUNS"); do
	if [ $((r % 2)) = 1 ]; then order="plain encrypted"; else order="encrypted plain"; fi
	for kind in $order; do one "$kind" "$r"; done
done
printf 'large file %s bytes, %s runs, load average now %s\n' "$SIZE" "$RUNS" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-10s %10s %10s %7s   %10s %10s %7s\n' row 'plain s' 'enc s' ratio 'plain cpu' 'enc cpu' ratio
for row in show first unchanged changed restore cat cp; do
	pw=$(median ${WALL[$row.plain]}) ew=$(median ${WALL[$row.encrypted]})
	pc=$(median ${CPU[$row.plain]}) ec=$(median ${CPU[$row.encrypted]})
	printf '%-10s %10s %10s %7s   %10s %10s %7s\n' "$row" "$pw" "$ew" \
		"$(echo "if ($pw > 0) $ew / $pw else 0" | bc -l | xargs printf '%.2f')" "$pc" "$ec" \
		"$(echo "if ($pc > 0) $ec / $pc else 0" | bc -l | xargs printf '%.2f')"
done
echo "runs (wall s, each row plain then encrypted):"
for row in show first unchanged changed restore cat cp; do
	echo "  $row: ${WALL[$row.plain]}| ${WALL[$row.encrypted]}"
done
