#!/usr/bin/env bash
# Two hosts on one vault in a bucket (issue 14): two stores on this machine,
# A and B, attached to one vault on a real 3-node SeaweedFS cluster
# (scripts/seaweed.sh, started here and stopped by PID on exit). The vault's
# writer lease (docs/FORMAT.md §19.4) keeps one writer at a time:
# - while A's backup runs, B's backup and B's backup delete are refused
#   (exit 1, BackupService.6125) naming the vault and A's host and pid; B's mount
#   reads meanwhile (treecmp exact) and then shows A's new backup;
# - a writer killed with kill -9 leaves its lease: the next backup on this
#   host takes it over at once (its process has ended);
# - a writer that stops renewing (kill -STOP: a host that hangs) is taken
#   over once its lease expires; when it wakes it stops without publishing
#   anything, and the vault goes on.
. "$(dirname "$0")/lib.sh"
. "$REPO/scripts/seaweed.sh"

seaweed_start || die "cannot start the SeaweedFS cluster"
on_exit seaweed_stop
EP=$SEAWEED_S3_ENDPOINT
URL=s3://$SEAWEED_BUCKET/hosts-$$
HOST=$(hostname)
A=$T/storeA
B=$T/storeB
a() { "$CBRFS_BIN" --store "$A" "$@"; }
b() { "$CBRFS_BIN" --store "$B" "$@"; }
# Clear vaults: this test is about writers, not keys. (Where remote vaults
# are encrypted by default, the flag says so.)
NOENC=()
if "$CBRFS_BIN" vault create --help 2>/dev/null | grep -q -- '--no-encrypt'; then
	NOENC=(--no-encrypt)
fi

# A backup of store A in the background, as the binary itself (so that
# signals reach it, not a subshell); its PID in $APID, its output in
# $T/NAME.out. Waits until it holds the vault (its status file is written
# after the writer lock and lease are taken).
start_a_backup() {
	local name=$1
	shift
	env "$@" "$CBRFS_BIN" --store "$A" backup create home --name "$name" >"$T/$name.out" 2>&1 &
	APID=$!
	_BG_PIDS+=("$APID")
	wait_for 60 "A's backup $name to start" test -e "$A/vaults/home/running/$name.json"
}

S=$T/src
mkdir -p "$S/sub" "$S/empty-dir"
printf 'small\n' >"$S/small"
random_file "$S/sub/medium" $((3 << 20 | 4321))
for i in $(seq 1 50); do printf 'file %d\n' "$i" >"$S/sub/f$i"; done
ln -s small "$S/link"
BIG=$T/bigsrc
mkdir -p "$BIG"
random_file "$BIG/big" $((96 << 20))

note "host A creates the vault and backs up; host B attaches it and mounts"
expect_ok a vault create home --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$EP" "${NOENC[@]}"
expect_ok a vault associate home --path "$S" --name src
expect_ok a backup create home --name a1
expect_ok b vault attach "$URL" --s3-endpoint "$EP"
MNT=$T/mnt
mkdir -p "$MNT"
on_exit "'$CBRFS_BIN' --store '$B' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"
expect_ok b mount "$MNT"
if out=$(treecmp "$S" "$MNT/home/a1/src"); then pass "B's mount shows A's backup a1 exactly"; else fail "treecmp a1 in B's mount: $out"; fi

note "A backs up; B's backup is refused and B's mount reads meanwhile"
expect_ok a vault associate home --path "$BIG" --name big
start_a_backup a2
# Held still while B tries, so that the attempt meets the running backup
# whatever this machine's speed (well inside the lease's margin).
kill -STOP "$APID"
expect_exit 1 "BackupService.6125: vault home: a backup task is in progress on host $HOST \(pid $APID, since " -- b backup create home --name b-busy
expect_exit 1 "BackupService.6125: vault home: a backup task is in progress on host $HOST \(pid $APID" -- b backup delete home a1
kill -CONT "$APID"
if out=$(treecmp "$S" "$MNT/home/a1/src"); then pass "B's mount reads a1 exactly while A backs up"; else fail "treecmp a1 during A's backup: $out"; fi
if wait "$APID"; then pass "A's backup a2 succeeds"; else fail "A's backup a2: $(cat "$T/a2.out")"; fi
b backup list home >"$T/list.out" 2>&1
if matches 'b-busy' "$(cat "$T/list.out")"; then fail "the refused backup is listed"; else pass "the refused backup is not listed"; fi
# The mount finds the new backup by its path (a lookup of a name not
# cached lists backups/ in the bucket) and in the vault's listing.
wait_for 30 "B's mount to show A's new backup a2 by its path" test -f "$MNT/home/a2/big/big"
wait_for 30 "B's mount to list A's new backup a2" sh -c "ls '$MNT/home' | grep -qx a2"
if out=$(treecmp "$BIG" "$MNT/home/a2/big") && out2=$(treecmp "$S" "$MNT/home/a2/src"); then
	pass "B's mount shows A's new backup a2 exactly"
else
	fail "treecmp a2 in B's mount: $out ${out2:-}"
fi
# Released when done: B may write now.
expect_ok b backup create home --name b1

note "kill -9 of a writer: its lease is taken over at once on this host"
# New bytes to read, so that the backup is still running when caught.
random_file "$BIG/big" $((96 << 20))
start_a_backup a-killed
kill -9 "$APID"
wait "$APID" 2>/dev/null
expect_ok b backup create home --name b-after-kill
matches "taking over the writer lease of host $HOST \(pid $APID, since .*: its process $APID on this host has ended" "$ERR" &&
	pass "the killed writer's lease was taken over: $(head -n 1 <<<"$ERR")" ||
	fail "no takeover of the killed writer's lease reported: $ERR"
expect_ok a backup list home
if matches 'a-killed' "$OUT"; then fail "the killed backup is listed: $OUT"; else pass "the killed backup is not listed"; fi

note "a writer that stops renewing: its lease expires, B takes over, and the old writer stops cleanly"
random_file "$BIG/big" $((96 << 20))
# A 6 s lease renewed every second: A stops writing 3 s after its last
# renewal, B may take over after 6 s.
start_a_backup a-lost CBRFS_LEASE_TTL_S=6 CBRFS_LEASE_RENEW_S=1
kill -STOP "$APID"
expect_exit 1 "BackupService.6125: vault home: a backup task is in progress on host $HOST \(pid $APID" -- b backup create home --name b-early
wait_for 60 "B to take over A's expired lease" b backup create home --name b-takeover
kill -0 "$APID" 2>/dev/null && pass "B took over while A's process still exists (the lease expired)" || fail "A's process $APID is gone"
kill -CONT "$APID"
if wait "$APID"; then
	fail "A's backup a-lost succeeded after losing its lease: $(cat "$T/a-lost.out")"
else
	matches '^cbrfs: error: .*vault home: the writer lease (was lost|could not be renewed)' "$(cat "$T/a-lost.out")" &&
		pass "A stopped: $(grep -m1 '^cbrfs: error: ' "$T/a-lost.out")" ||
		fail "A failed without naming its lease: $(cat "$T/a-lost.out")"
fi
expect_ok b backup list home
if matches 'a-lost' "$OUT"; then fail "A's backup after losing its lease is listed: $OUT"; else pass "nothing of A's lost backup is listed"; fi
matches 'b-takeover' "$OUT" && pass "B's backup after the takeover is listed" || fail "b-takeover not listed: $OUT"
expect_ok b restore home b-takeover --to "$T/r-takeover"
# B's registration has the one resource it had when attached: restored
# into the target itself.
if out=$(treecmp "$S" "$T/r-takeover"); then pass "B's backup after the takeover restores exactly"; else fail "b-takeover: $out"; fi
# The vault goes on: A writes again (B released its lease), B restores it.
expect_ok a backup create home --name a-after
expect_ok b restore home a-after --to "$T/r-after"
if out=$(treecmp "$S" "$T/r-after/src"); then pass "A's next backup restores exactly on B"; else fail "a-after on B: $out"; fi
expect_ok b check home
