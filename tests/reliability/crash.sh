#!/usr/bin/env bash
# tests/reliability/crash.sh: kill -9 at random instants of
#   (a) `cbrfs backup create` of a tree that takes a second or so,
#   (b) the mount daemon while a `mkdir` backup runs (then `cbrfs umount` the
#       stale mount and mount again),
#   (c) `cbrfs prune --repack-threshold 100` after deleting a backup.
# After each trial: `cbrfs check` passes; every backup that existed before
# restores byte for byte (sha256 of every file against a manifest made when
# the backup was taken); no half-made backup is listed; the next backup and
# the next prune succeed; a mkdir backup killed with its daemon is reported
# failed (`backup wait` exits 1, `task list --status failed` shows it).
#
# Environment:
#   CRASH_SEED    seed of the kill instants [default 7]; printed, replay with it
#   CRASH_TRIALS  trials of each of the three kinds [default 17, 51 in all]
#   CRASH_MB      MB of new data each backup reads [default 96]
. "$(dirname "$0")/../lib.sh"

SEED=${CRASH_SEED:-7}
TRIALS=${CRASH_TRIALS:-17}
MB=${CRASH_MB:-96}
RANDOM=$SEED
note "CRASH_SEED=$SEED CRASH_TRIALS=$TRIALS (each kind) CRASH_MB=$MB"

S=$T/src
SM=$T/msrc
MNT=$T/mnt
mkdir -p "$S/d" "$SM/d" "$MNT"
on_exit "'$CBRFS_BIN' --store '$STORE' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"
for i in $(seq 1 40); do printf 'small %d\n' "$i" >"$S/d/s$i"; printf 'm %d\n' "$i" >"$SM/d/m$i"; done

cbrfs vault create cv --type filesystem --capacity 100GB --compression none >/dev/null || die "vault cv"
cbrfs vault associate cv --path "$S" --name src >/dev/null || die "associate cv"
cbrfs vault create mv --type filesystem --capacity 100GB --compression none >/dev/null || die "vault mv"
cbrfs vault associate mv --path "$SM" --name src >/dev/null || die "associate mv"

TRIED=0 KILLS=0 COMMITTED=0 FINISHED=0 VERIFIED=0 BYTES=0 SEQ=0
declare -A LIVE=() # "vault/backup" -> manifest file

# manifest DIR: sha256 and path of every file, and type of every entry.
manifest() {
	(cd "$1" && find . -printf '%y %p\n' | sort && find . -type f -print0 | sort -z | xargs -0r sha256sum)
}

# new_data DIR: fresh random bytes so the next backup has MB to read.
new_data() {
	head -c $((MB << 20)) /dev/urandom >"$1/big"
}

# mutate DIR: new random bytes in every other 8 MiB of DIR/big, so that
# deleting the backup before leaves its 16 MiB packs about half live, and a
# prune with --repack-threshold 100 rewrites them (copies, not just unlinks).
mutate() {
	local k
	for ((k = 0; k < MB / 8; k += 2)); do
		head -c $((8 << 20)) /dev/urandom | dd of="$1/big" bs=1M seek=$((k * 8)) conv=notrunc status=none
	done
}

# record VAULT BACKUP: restore it once, keep its manifest as the reference.
record() {
	local r=$T/ref
	rm -rf "$r"
	if cbrfs restore "$1" "$2" --to "$r" >/dev/null 2>"$T/rec.err"; then
		manifest "$r" >"$T/m-$1-$2"
		LIVE["$1/$2"]=$T/m-$1-$2
	else
		fail "restore of new backup $1/$2: $(cat "$T/rec.err")"
	fi
	rm -rf "$r"
}

# adopt VAULT BACKUP SRC: a backup whose process was killed after it
# committed: it must restore exactly to SRC (unchanged since); then live.
adopt() {
	local r=$T/adopt out
	rm -rf "$r"
	if ! out=$(cbrfs restore "$1" "$2" --to "$r" 2>&1); then
		fail "$1/$2 committed before the kill does not restore: $out"
	elif ! out=$(diff <(manifest "$3") <(manifest "$r")); then
		fail "$1/$2 committed before the kill differs from its source: $(head -n 5 <<<"$out")"
	else
		manifest "$r" >"$T/m-$1-$2"
		LIVE["$1/$2"]=$T/m-$1-$2
		rm -rf "$r"
		return 0
	fi
	rm -rf "$r"
	return 1
}

# listed VAULT BACKUP
listed() {
	cbrfs backup list "$1" --json | json_get /dev/stdin '" ".join(b["name"] for b in j)' | tr ' ' '\n' | grep -qx -- "$2"
}

# verify TRIAL: check passes, the listing is the live set, each live backup
# restores to its manifest.
verify() {
	local what=$1 k v b out r=$T/ver bad=0
	if ! out=$(cbrfs check 2>&1); then
		fail "$what: check failed: $(tail -n 5 <<<"$out")"
		bad=1
	fi
	for v in cv mv; do
		local want got
		want=$(for k in "${!LIVE[@]}"; do [ "${k%%/*}" = "$v" ] && echo "${k#*/}"; done | sort | tr '\n' ' ')
		got=$(cbrfs backup list "$v" --json | json_get /dev/stdin '" ".join(sorted(b["name"] for b in j if b["status"] == "available"))')
		got="$got "
		[ "$got" = " " ] && got=
		if [ "$want" != "$got" ]; then
			fail "$what: backups of $v listed '$got', expected '$want'"
			bad=1
		fi
		others=$(cbrfs backup list "$v" --json | json_get /dev/stdin '[b["name"] + ":" + b["status"] for b in j if b["status"] != "available"]')
		if [ "$others" != "[]" ]; then
			fail "$what: half-made backups listed in $v: $others"
			bad=1
		fi
	done
	for k in "${!LIVE[@]}"; do
		rm -rf "$r"
		if ! out=$(cbrfs restore "${k%%/*}" "${k#*/}" --to "$r" 2>&1); then
			fail "$what: restore of $k: $out"
			bad=1
			continue
		fi
		if ! out=$(diff "${LIVE[$k]}" <(manifest "$r")); then
			fail "$what: $k restores differently: $(head -n 5 <<<"$out")"
			bad=1
			continue
		fi
		VERIFIED=$((VERIFIED + 1))
		BYTES=$((BYTES + $(du -sb "$r" | cut -f1)))
	done
	rm -rf "$r"
	return $bad
}

# check_only WHAT: cbrfs check passes (the new backup was restored and
# compared by record).
check_only() {
	local out
	out=$(cbrfs check 2>&1) && return 0
	fail "$1: check failed: $(tail -n 5 <<<"$out")"
	return 1
}

# next_backup VAULT: a backup after the crash succeeds; recorded as live.
next_backup() {
	SEQ=$((SEQ + 1))
	local n=ok$SEQ
	if out=$(cbrfs backup create "$1" --name "$n" 2>&1); then
		record "$1" "$n"
		return 0
	fi
	fail "next backup $1/$n after a crash: $out"
	return 1
}

# trim VAULT KEEP: delete the oldest live backups of VAULT beyond KEEP.
trim() {
	local names n
	names=$(cbrfs backup list "$1" --json | json_get /dev/stdin '" ".join(b["name"] for b in j)')
	set -- "$1" "$2" $names
	local v=$1 keep=$2
	shift 2
	while [ $# -gt "$keep" ]; do
		cbrfs backup delete "$v" "$1" >/dev/null 2>&1 || fail "delete $v/$1"
		unset "LIVE[$v/$1]"
		shift
	done
}

# kill_at PID MAXMS: sleep a random 0..MAXMS ms, kill -9 PID. Sets KILLED=1
# if the process was still running.
kill_at() {
	local ms=$((RANDOM % $2))
	sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
	KILLED=0
	if kill -9 "$1" 2>/dev/null; then KILLED=1; KILLS=$((KILLS + 1)); fi
	KILL_MS=$ms
}

new_data "$S"
cbrfs backup create cv --name base >/dev/null || die "base backup"
record cv base
cbrfs backup create mv --name mbase >/dev/null || die "base backup mv"
record mv mbase

# Time one backup of MB new bytes so the kill instants span it.
new_data "$S"
t0=$(date +%s%N)
cbrfs backup create cv --name timing >/dev/null || die "timing backup"
BMS=$((($(date +%s%N) - t0) / 1000000 + 200))
record cv timing
note "a backup of $MB MB takes about $((BMS - 200)) ms; kills at 0..$BMS ms"

note "(a) kill -9 of cbrfs backup create"
for i in $(seq 1 "$TRIALS"); do
	TRIED=$((TRIED + 1))
	new_data "$S"
	"$CBRFS_BIN" --store "$STORE" backup create cv --name ka$i >"$T/ka.out" 2>&1 &
	pid=$!
	kill_at "$pid" "$BMS"
	wait "$pid" 2>/dev/null
	rc=$?
	if [ "$KILLED" = 1 ] && [ "$rc" = 137 ]; then
		if listed cv ka$i; then
			COMMITTED=$((COMMITTED + 1))
			note "a$i: killed at ${KILL_MS} ms, after it committed"
			adopt cv ka$i "$S"
		else
			note "a$i: killed at ${KILL_MS} ms"
		fi
	elif [ "$rc" = 0 ]; then
		FINISHED=$((FINISHED + 1))
		note "a$i: finished before the kill at ${KILL_MS} ms"
		adopt cv ka$i "$S"
	else
		fail "a$i: backup exited $rc: $(cat "$T/ka.out")"
	fi
	verify "a$i (kill at ${KILL_MS} ms)" && next_backup cv && check_only "a$i after the next backup" &&
		pass "a$i: kill at ${KILL_MS} ms: check, restores, listing, next backup"
	trim cv 2
done
expect_ok cbrfs prune cv

note "(c) kill -9 of cbrfs prune after deleting a backup"
# Time a prune that rewrites packs.
new_data "$S"
next_backup cv
mutate "$S"
next_backup cv
trim cv 1
t0=$(date +%s%N)
cbrfs prune cv --repack-threshold 100 >/dev/null || fail "timing prune"
PMS=$((($(date +%s%N) - t0) / 1000000 + 200))
note "a prune takes about $((PMS - 200)) ms; kills at 0..$PMS ms"
for i in $(seq 1 "$TRIALS"); do
	TRIED=$((TRIED + 1))
	mutate "$S"
	next_backup cv
	trim cv 1
	"$CBRFS_BIN" --store "$STORE" prune cv --repack-threshold 100 >"$T/kc.out" 2>&1 &
	pid=$!
	kill_at "$pid" "$PMS"
	wait "$pid" 2>/dev/null
	rc=$?
	if [ "$KILLED" = 1 ] && [ "$rc" = 137 ]; then
		note "c$i: killed at ${KILL_MS} ms"
		PMS=$((PMS + 20))
	elif [ "$rc" = 0 ]; then
		FINISHED=$((FINISHED + 1))
		note "c$i: finished before the kill at ${KILL_MS} ms"
		# These prunes are shorter than the timed one: aim the next
		# kills within what this one took at most.
		[ "$KILL_MS" -ge 20 ] && PMS=$KILL_MS
	else
		fail "c$i: prune exited $rc: $(cat "$T/kc.out")"
	fi
	if verify "c$i (kill at ${KILL_MS} ms)"; then
		if out=$(cbrfs prune cv 2>&1); then
			check_only "c$i after the next prune" && next_backup cv && check_only "c$i after the next backup" &&
				pass "c$i: kill at ${KILL_MS} ms: check, restores, listing, next prune, next backup"
		else
			fail "c$i: next prune: $out"
		fi
	fi
done

note "(b) kill -9 of the mount daemon while a mkdir backup runs"
mount_it() {
	cbrfs mount "$MNT" --wait-seconds 1 >/dev/null 2>"$T/mount.err" || fail "mount: $(cat "$T/mount.err")"
	wait_mounted "$MNT"
}
mount_it
new_data "$SM"
t0=$(date +%s%N)
mkdir "$MNT/mv/timing" && cbrfs backup wait mv timing >/dev/null || fail "timing mkdir backup"
MMS=$((($(date +%s%N) - t0) / 1000000 + 200))
record mv timing
note "a mkdir backup takes about $((MMS - 200)) ms; kills at 0..$MMS ms"
for i in $(seq 1 "$TRIALS"); do
	TRIED=$((TRIED + 1))
	new_data "$SM"
	dpid=$(pgrep -f "mount $MNT --foreground" | head -n 1)
	if [ -z "$dpid" ]; then
		fail "b$i: no daemon found for $MNT"
		break
	fi
	if ! mkdir "$MNT/mv/kb$i"; then
		fail "b$i: mkdir refused"
		continue
	fi
	kill_at "$dpid" "$MMS"
	wait_exit "$dpid"
	cbrfs umount "$MNT" >/dev/null 2>"$T/umount.err" || fail "b$i: umount of the stale mount: $(cat "$T/umount.err")"
	wait_unmounted "$MNT"
	run cbrfs backup wait mv kb$i --timeout 10
	if [ "$RC" = 0 ]; then
		FINISHED=$((FINISHED + 1))
		note "b$i: the mkdir backup committed before the kill at ${KILL_MS} ms"
		adopt mv kb$i "$SM"
	elif [ "$RC" = 1 ]; then
		note "b$i: killed at ${KILL_MS} ms; backup wait: $(head -c 200 <<<"$ERR")"
		if cbrfs task list --vault mv --status failed --json | json_get /dev/stdin 'len([t for t in j if t["backup"] == "kb'$i'" and t["type"] == "backup"])' | grep -qx 1; then
			:
		else
			fail "b$i: the killed mkdir backup kb$i is not in task list --status failed"
		fi
	else
		fail "b$i: backup wait mv kb$i exited $RC (expected 0 or 1): $ERR"
	fi
	mount_it
	if verify "b$i (kill at ${KILL_MS} ms)"; then
		new_data "$SM"
		SEQ=$((SEQ + 1))
		if mkdir "$MNT/mv/ok$SEQ" && out=$(cbrfs backup wait mv ok$SEQ 2>&1); then
			record mv ok$SEQ
			check_only "b$i after the next mkdir backup" && pass "b$i: kill at ${KILL_MS} ms: umount, mount, check, restores, listing, failed task, next backup"
		else
			fail "b$i: next mkdir backup: $out"
		fi
	fi
	trim mv 2
done
cbrfs umount "$MNT" >/dev/null 2>&1

expect_ok cbrfs prune
expect_ok cbrfs check --read-data
note "SUMMARY: seed $SEED, trials $TRIED, kills $KILLS (of which after the commit: $COMMITTED; finished before the kill: $FINISHED), backups verified $VERIFIED, bytes verified $BYTES, failures $FAILS"
