#!/usr/bin/env bash
# tests/s3_faults.sh: an S3 vault under network and cluster faults (issue
# 14), on the real 3-node SeaweedFS cluster of scripts/seaweed.sh with the
# fault proxy of tests/common/faultproxy.py in front of its gateway. The
# vault's endpoint is the proxy; the proxy is restarted on the same port
# in another mode for each part, so one vault sees every fault:
# - random faults (503s, connections reset, answers cut halfway): backup,
#   restore with an empty cache and a mount read exact bytes through the
#   retries;
# - every request failing: backup create, restore, backup list and check
#   end in bounded time (measured) with an error naming the endpoint, the
#   bucket and the object, exit non-zero; once the proxy is healthy again
#   nothing half-made is listed and the backups restore exactly;
# - a stalled connection (the proxy reads and never answers) times out;
# - one volume server killed during a backup: it succeeds or fails cleanly,
#   every backup restores exactly and `check --read-data` passes with the
#   server down; once it is back, the next backup succeeds.
# (`kill -9` of a backup mid-upload is tests/s3_vault.sh's.)
. "$(dirname "$0")/lib.sh"
. "$REPO/scripts/seaweed.sh"

# A plain vault: an encrypted one reads its key slots from the bucket
# first thing, and an outage would end every command there; a plain one
# lets a restore reach the walk over cached metadata, where each file's
# data is one more request (tests/s3_encrypted.sh has encrypted vaults).
ENC=()
if "$CBRFS_BIN" vault create --help 2>&1 | grep -q -- '--no-encrypt'; then
	ENC=(--no-encrypt)
fi
cb() {
	cbrfs "$@"
}
# The writer lease runs with its default settle time (500 ms): a retried
# lease request that makes an attempt slower than that, or fail, starts a
# fresh attempt (src/store/lease.rs) instead of failing the backup.
# The generous bound on a command facing a dead or stalled gateway: its
# retries take about 25 s per request (tests/s3_storage.rs measures the
# policy), so this catches a command that retries request after request.
BOUND=120

seaweed_start || die "cannot start the SeaweedFS cluster"
on_exit seaweed_stop
EP=$SEAWEED_S3_ENDPOINT
BK=$SEAWEED_BUCKET
PFX=faults-$$
URL=s3://$BK/$PFX

# ---- the fault proxy, restarted on one port in each mode ----
PROXY_PORT=0
PROXY_PID=
# proxy MODE [ARGS...]: (re)start the proxy in MODE on $PROXY_PORT (a free
# port the first time); its endpoint in $PROXY.
proxy() {
	proxy_stop
	local out=$T/proxy.port
	rm -f "$out"
	python3 "$TESTS/common/faultproxy.py" --upstream "${EP#http://}" --port "$PROXY_PORT" \
		--mode "$@" >"$out" 2>>"$T/proxy.err" &
	PROXY_PID=$!
	wait_for 10 "the fault proxy ($*) to listen" test -s "$out" || die "the fault proxy did not start: $(tail -n 5 "$T/proxy.err")"
	PROXY_PORT=$(head -n 1 "$out")
	PROXY=http://127.0.0.1:$PROXY_PORT
}
proxy_stop() {
	[ -n "$PROXY_PID" ] || return 0
	kill "$PROXY_PID" 2>/dev/null
	wait "$PROXY_PID" 2>/dev/null
	PROXY_PID=
}
on_exit proxy_stop
healthy() {
	proxy random --p 0
}

V=$STORE/vaults/home
# wipe_cache [data]: delete the vault's local cache (all of it, or only the
# data ranges), so that what follows reads the bucket.
wipe_cache() {
	if [ "${1:-}" = data ]; then
		rm -rf "$V/cache"
	else
		rm -rf "$V/cache" "$V/key" "$V/index" "$V/packs" "$V/backups"
	fi
}

# timed LIMIT cmd...: run the command (as `run`) under a hard limit of
# LIMIT seconds; its duration in $TOOK (seconds, one decimal).
timed() {
	local limit=$1
	shift
	local t0
	t0=$(date +%s%N)
	run timeout -k 10 "$limit" "$@"
	TOOK=$(python3 -c "print(round(($(date +%s%N) - $t0) / 1e9, 1))")
}

# names_object ERR ENDPOINT: the message names an object of the vault in
# the bucket and the endpoint.
names_object() {
	matches "s3://$BK/$PFX/[^ ]* at $2" "$1"
}

# ---- a small varied tree ----
S=$T/src
mkdir -p "$S/dir/sub" "$S/many" "$S/empty-dir"
printf 'small\n' >"$S/small"
: >"$S/empty"
random_file "$S/dir/sub/medium" $((2 << 20 | 4321))
random_file "$S/dir/one-mb" $((1 << 20))
for i in $(seq 1 60); do printf 'file %d\n' "$i" >"$S/many/f$i"; done
truncate -s 64M "$S/sparse"
head -c 65536 /dev/urandom | dd of="$S/sparse" bs=65536 seek=300 conv=notrunc status=none
ln -s small "$S/link"
printf 'linked\n' >"$S/hl-a"
ln "$S/hl-a" "$S/hl-b"
setfattr -n user.color -v blue "$S/small" 2>/dev/null || true

# ---- (b) random faults: 503s, resets, answers cut halfway ----
SEED=$((RANDOM % 1000))
note "random faults (p 0.2, seed $SEED): create, back up, restore, mount"
proxy random --p 0.2 --seed "$SEED"
expect_ok cb vault create home --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$PROXY" --cache-size 64MB "${ENC[@]}"
expect_ok cb vault associate home --path "$S" --name src
expect_ok cb backup create home --name b1
wipe_cache
expect_ok cb restore home b1 --to "$T/r1"
if out=$(treecmp "$S" "$T/r1"); then
	pass "through random faults b1 restores exactly with an empty cache"
else
	fail "treecmp source vs restore of b1 through faults: $out"
fi
printf 'changed\n' >>"$S/many/f1"
random_file "$S/dir/new" 300000
rm "$S/hl-b"
expect_ok cb backup create home --name b2
wipe_cache
expect_ok cb restore home b2 --to "$T/r2"
if out=$(treecmp "$S" "$T/r2"); then
	pass "through random faults the incremental b2 restores exactly"
else
	fail "treecmp source vs restore of b2 through faults: $out"
fi
wipe_cache
MNT=$T/mnt
mkdir -p "$MNT"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT' 2>/dev/null; fusermount3 -uz '$MNT' 2>/dev/null"
expect_ok cb mount "$MNT"
wait_mounted "$MNT"
if out=$(treecmp "$S" "$MNT/home/b2/src" 2>&1); then
	pass "through random faults the mount of b2 reads exact bytes (empty cache)"
else
	fail "treecmp source vs the mount of b2 through faults: $out"
fi
if out=$(treecmp "$T/r1" "$MNT/home/b1/src" 2>&1); then
	pass "through random faults the mount of b1 reads exact bytes"
else
	fail "treecmp b1 vs the mount of b1 through faults: $out"
fi
"$CBRFS_BIN" umount "$MNT" >/dev/null 2>&1
wait_unmounted "$MNT"

# ---- (c) every request failing ----
note "every request failing (503): each command ends within ${BOUND}s naming endpoint, bucket and object"
proxy fail
# dead WHAT cmd...: the command fails in bounded time with a clear error.
dead() {
	local what=$1
	shift
	timed $((BOUND + 60)) "$CBRFS_BIN" --store "$STORE" "$@"
	if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
		fail "$what with requests failing still ran after $((BOUND + 60))s"
		return
	fi
	note "$what: exit $RC after ${TOOK}s: $(head -c 400 <<<"$ERR$OUT")"
	[ "$RC" != 0 ] && pass "$what with requests failing exits $RC" ||
		fail "$what with requests failing exits 0: $OUT"
	python3 -c "import sys; sys.exit(0 if $TOOK <= $BOUND else 1)" &&
		pass "$what with requests failing ends in ${TOOK}s (bound ${BOUND}s)" ||
		fail "$what with requests failing took ${TOOK}s (bound ${BOUND}s)"
	# On stderr, or in a report on stdout (check lists what it found).
	names_object "$OUT
$ERR" "$PROXY" && pass "$what's error names the endpoint, bucket and object" ||
		fail "$what's error does not name s3://$BK/$PFX/<object> at $PROXY: $OUT $ERR"
	matches 'panicked' "$OUT$ERR" && fail "$what panicked: $ERR"
}
printf 'more\n' >"$S/during-outage"
dead "backup create" backup create home --name dead
# Metadata cached, data not: the restore walks the tree and must stop at
# the first object it cannot fetch rather than retry every file's.
wipe_cache data
dead "restore (data not cached)" restore home b1 --to "$T/dead1"
wipe_cache
dead "restore (nothing cached)" restore home b2 --to "$T/dead2"
dead "backup list" backup list home
dead "check" check home

note "the proxy healthy again: nothing half-made, everything restores"
healthy
expect_ok cb backup list home
if matches 'dead' "$OUT"; then fail "the failed backup is listed: $OUT"; else pass "the backup made during the outage is not listed"; fi
matches 'b1' "$OUT" && matches 'b2' "$OUT" && pass "b1 and b2 are listed" || fail "backup list: $OUT"
expect_ok cb check home --read-data
expect_ok cb restore home b1 --to "$T/h1"
if out=$(treecmp "$T/r1" "$T/h1"); then pass "after the outage b1 restores exactly"; else fail "b1 after the outage: $out"; fi

note "data unreachable, metadata cached: a restore and reads in the mount end, not once per file"
# Only data packs fail (metadata packs are cached whole): the restore walks
# the tree and each file's data is one more request; without the client's
# hold after a give-up each would spend the whole retry policy.
proxy random --p 0 --fail-path /packs/
wipe_cache data
dead "restore (data unreachable)" restore home b1 --to "$T/dead3"
expect_ok cb mount "$MNT"
wait_mounted "$MNT"
timed $((BOUND + 60)) sh -c "cat '$MNT'/home/b1/src/many/* >/dev/null"
if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
	fail "reading 60 files through the mount with data unreachable still ran after $((BOUND + 60))s"
else
	[ "$RC" != 0 ] && pass "reading through the mount with data unreachable fails (exit $RC)" || fail "reading through the mount with data unreachable succeeded"
	python3 -c "import sys; sys.exit(0 if $TOOK <= $BOUND else 1)" &&
		pass "reading 60 files through the mount with data unreachable ends in ${TOOK}s" ||
		fail "reading 60 files through the mount with data unreachable took ${TOOK}s"
fi
# The client fails at once for 30 s after a give-up, then tries again: the
# same mount reads exact bytes once the data is reachable.
healthy
t0=$SECONDS
if wait_for 90 "the mount to read again once the data is reachable" cmp -s "$T/r1/dir/one-mb" "$MNT/home/b1/src/dir/one-mb"; then
	pass "the mount reads exact bytes again $((SECONDS - t0))s after the data is reachable"
fi
"$CBRFS_BIN" umount "$MNT" >/dev/null 2>&1
wait_unmounted "$MNT"

# ---- (d) a stalled connection ----
note "a stalled gateway (requests read, never answered): commands time out"
proxy stall
wipe_cache
export CBRFS_S3_TIMEOUT=2
timed $((BOUND + 60)) "$CBRFS_BIN" --store "$STORE" backup list home
if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
	fail "backup list against a stalled gateway still ran after $((BOUND + 60))s"
else
	note "backup list, stalled: exit $RC after ${TOOK}s: $(head -c 400 <<<"$ERR")"
	[ "$RC" != 0 ] && pass "backup list against a stalled gateway exits $RC" || fail "backup list against a stalled gateway exits 0"
	python3 -c "import sys; sys.exit(0 if $TOOK <= $BOUND else 1)" &&
		pass "backup list against a stalled gateway ends in ${TOOK}s" ||
		fail "backup list against a stalled gateway took ${TOOK}s"
	matches 'timed out' "$ERR" && names_object "$ERR" "$PROXY" &&
		pass "the stalled request's error says it timed out and names the object" ||
		fail "the stalled request's error: $ERR"
fi
unset CBRFS_S3_TIMEOUT
expect_exit 2 'CBRFS_S3_TIMEOUT' -- env CBRFS_S3_TIMEOUT=0 "$CBRFS_BIN" --store "$STORE" backup list home
expect_exit 2 'CBRFS_S3_TIMEOUT' -- env CBRFS_S3_TIMEOUT=soon "$CBRFS_BIN" --store "$STORE" backup list home

# ---- (a) one volume server killed during a backup ----
note "one volume server killed during a backup"
healthy
expect_ok cb backup list home
for i in 1 2 3; do random_file "$S/big$i" $((12 << 20)); done
"$CBRFS_BIN" --store "$STORE" backup create home --name b3 >"$T/b3.out" 2>"$T/b3.err" &
BPID=$!
_BG_PIDS+=("$BPID")
status=$V/running/b3.json
read_past() {
	[ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_read"])' "$status" 2>/dev/null || echo 0)" -gt $((8 << 20)) ]
}
# b3 has ended (a child not yet reaped is a zombie, which kill -0 finds).
b3_ended() {
	! kill -0 "$BPID" 2>/dev/null || [ "$(cut -d' ' -f3 "/proc/$BPID/stat" 2>/dev/null)" = Z ]
}
# read 8 MB, or ended (too quickly to be caught).
read_past_or_ended() {
	b3_ended || read_past
}
wait_for 120 "backup b3 to read 8 MB" read_past_or_ended
if ! b3_ended; then
	seaweed_kill_volume 2 && note "volume server 2 killed while b3 was running"
else
	seaweed_kill_volume 2
	skip "b3 ended before volume server 2 could be killed during it"
fi
t0=$SECONDS
# A write to a volume whose replica is gone takes the gateway about 30 s
# to refuse (measured by tests/s3_storage.rs), and the retries of one
# request stop 120 s after its first attempt: 300 s is generous.
wait_for 300 "backup b3 to end with a volume server down" b3_ended
wait "$BPID" 2>/dev/null
brc=$?
took=$((SECONDS - t0))
berr=$(cat "$T/b3.err")
note "b3: exit $brc, ${took}s after the kill: $(head -c 400 <<<"$berr")"
matches 'panicked' "$berr" && fail "b3 panicked: $berr"
expect_ok cb backup list home
if [ "$brc" = 0 ]; then
	pass "b3 succeeded with a volume server down"
	matches 'b3' "$OUT" && pass "b3 is listed" || fail "b3 succeeded but is not listed: $OUT"
	expect_ok cb restore home b3 --to "$T/r3"
	if out=$(treecmp "$S" "$T/r3"); then pass "b3 restores exactly"; else fail "b3: $out"; fi
else
	pass "b3 failed (exit $brc) with a volume server down"
	names_object "$berr" "$PROXY" && pass "b3's error names the endpoint, bucket and object" ||
		fail "b3's error does not name s3://$BK/$PFX/<object> at $PROXY: $berr"
	if matches 'b3' "$OUT"; then fail "the failed b3 is listed: $OUT"; else pass "the failed b3 is not listed"; fi
fi
wipe_cache
expect_ok cb restore home b1 --to "$T/v1"
if out=$(treecmp "$T/r1" "$T/v1"); then pass "with a volume server down b1 restores exactly"; else fail "b1 with a volume server down: $out"; fi
expect_ok cb restore home b2 --to "$T/v2"
if out=$(treecmp "$T/r2" "$T/v2"); then pass "with a volume server down b2 restores exactly"; else fail "b2 with a volume server down: $out"; fi
expect_ok cb check home --read-data

note "volume server 2 back: the next backup succeeds"
seaweed_restart_volume 2 || die "cannot restart volume server 2"
expect_ok cb backup create home --name b4
expect_ok cb restore home b4 --to "$T/r4"
if out=$(treecmp "$S" "$T/r4"); then pass "the backup after the fault restores exactly"; else fail "b4: $out"; fi
expect_ok cb check home --read-data
