#!/usr/bin/env bash
# Encrypted vs unencrypted vault on the same data (issue 15): first backup,
# re-backup (nothing changed), restore, and `cat` of the file through the
# mount, each with the page cache dropped before it; RUNS runs, the median
# of each. Needs root (drop_caches, the mount).
#
#   CBRFS_BIN=target/release/cbrfs scripts/bench_encryption.sh [SIZE_MIB] [RUNS]
set -u
BIN=${CBRFS_BIN:-target/release/cbrfs}
SIZE_MIB=${1:-1024}
RUNS=${2:-3}
W=$(mktemp -d "${TMPDIR:-/tmp}/cbrfs-bench-enc.XXXXXX")
MNT=$W/mnt
trap '"$BIN" umount --lazy "$MNT" >/dev/null 2>&1; rm -rf "$W"' EXIT
mkdir -p "$W/src" "$MNT"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$W/src/big"
printf 'bench password\n' >"$W/pw"
chmod 600 "$W/pw"
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
secs() { # secs CMD...: wall seconds of CMD (its output discarded)
	local t0 t1
	t0=$(date +%s.%N)
	"$@" >/dev/null 2>"$W/err" || { echo "failed: $* $(cat "$W/err")" >&2; exit 1; }
	t1=$(date +%s.%N)
	echo "$t1 - $t0" | bc
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for kind in plain encrypted; do
	declare -a first=() again=() restore=() cat=()
	for r in $(seq 1 "$RUNS"); do
		S=$W/store-$kind-$r
		c() { "$BIN" --store "$S" --password-file "$W/pw" "$@"; }
		opt=; [ "$kind" = encrypted ] && opt=--encrypt
		c vault create v --type filesystem --capacity 100GB $opt >/dev/null || exit 1
		c vault associate v --path "$W/src" --name src >/dev/null || exit 1
		drop; first+=("$(secs c backup create v --name b1)")
		drop; again+=("$(secs c backup create v --name b2)")
		drop; restore+=("$(secs c restore v b1 --to "$W/out-$kind-$r")")
		rm -rf "$W/out-$kind-$r"
		c mount "$MNT" >/dev/null || exit 1
		drop; cat+=("$(secs cat "$MNT/v/b1/src/big")")
		"$BIN" umount "$MNT" >/dev/null
		rm -rf "$S"
	done
	printf '%-9s first %6.2f s  re-backup %6.2f s  restore %6.2f s  cat-mount %6.2f s  (runs: first %s; again %s; restore %s; cat %s)\n' \
		"$kind" "$(median "${first[@]}")" "$(median "${again[@]}")" "$(median "${restore[@]}")" "$(median "${cat[@]}")" \
		"${first[*]}" "${again[*]}" "${restore[*]}" "${cat[*]}"
	unset first again restore cat
done
