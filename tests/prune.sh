#!/usr/bin/env bash
# tests/prune.sh: prune gives back the space of deleted backups. --dry-run
# changes nothing and predicts the result; dead packs are removed, mostly
# dead ones rewritten (not with --repack-threshold 0); packs left by a
# killed backup are removed; check --read-data passes after. Then prune runs
# again and again while `cp -a` reads a surviving backup through the mount
# and a backup runs: the prunes beside the backup are refused
# (BackupService.6125), the others rewrite the packs being read, and every
# copy matches the source.
. "$(dirname "$0")/lib.sh"

MB=$((1 << 20))
used() { cbrfs vault show "$1" --json | json_get /dev/stdin 'j["used_bytes"]'; }
# files_of VAULT: every file of the vault's store with its size (the lock
# files aside), to see that nothing changed.
files_of() {
	(cd "$STORE/vaults/$1" && find . -type f ! -name '*.lock' -printf '%p %s\n' | sort)
}
# about A B PCT: A is within PCT % of B.
about() { python3 -c 'import sys; a, b, p = map(float, sys.argv[1:]); sys.exit(not abs(a - b) <= b * p / 100)' "$@"; }

note "b1 holds k1 and u1, b2 k1, k2 and u2, b3 k1 and k2: deleting b1 and b2 kills u1 and u2"
S=$T/src
mkdir -p "$S"
random_file "$S/k1" $((6 * MB))
random_file "$S/u1" $((20 * MB))
expect_ok cbrfs vault create pv --type filesystem --capacity 10
expect_ok cbrfs vault associate pv --path "$S" --name src
expect_ok cbrfs backup create pv --name b1
rm "$S/u1"
random_file "$S/k2" $((6 * MB))
random_file "$S/u2" $((20 * MB))
expect_ok cbrfs backup create pv --name b2
rm "$S/u2"
expect_ok cbrfs backup create pv --name b3
cp -a "$S" "$T/ref3"
u0=$(used pv)
note "used: $u0 bytes"
[ "$u0" -gt $((52 * MB)) ] && pass "the vault holds the 52 MB stored" || fail "used $u0 bytes for 52 MB of random data"

note "prune with nothing deleted only merges the indexes; --dry-run says the bytes that frees (issue #16: it said 0)"
expect_ok cbrfs prune pv --dry-run --json
dry_freed=$(json_get "$T/.out" 'j[0]["bytes_before"] - j[0]["bytes_after"]')
expect_ok cbrfs prune pv --json
freed=$(json_get "$T/.out" 'j[0]["bytes_before"] - j[0]["bytes_after"]')
[ "$freed" -ge 0 ] && [ "$freed" -lt 8192 ] && pass "prune with nothing deleted freed $freed bytes (three indexes merged)" || fail "prune with nothing deleted freed $freed bytes"
[ "$freed" -gt 0 ] && pass "merging three indexes freed $freed bytes" || fail "merging indexes freed $freed bytes"
expect_eq "--dry-run's bytes freed by merging the indexes" "$dry_freed" "$freed"
expect_eq "packs removed or rewritten with nothing deleted" "$(json_get "$T/.out" 'j[0]["packs_removed"] + j[0]["packs_rewritten"] + j[0]["orphan_packs"]')" 0
u0=$(used pv)
expect_ok cbrfs backup delete pv b1
expect_ok cbrfs backup delete pv b2
expect_eq "used after deleting (before prune)" "$(used pv)" "$u0"

note "--dry-run changes nothing"
files_of pv >"$T/files.before"
expect_ok cbrfs prune pv --dry-run --repack-threshold 0 --json
cp "$T/.out" "$T/dry0.json"
files_of pv >"$T/files.after"
cmp -s "$T/files.before" "$T/files.after" && pass "--dry-run left every file as it was" || fail "--dry-run changed files: $(diff "$T/files.before" "$T/files.after")"
expect_eq "dry run says so" "$(json_get "$T/dry0.json" 'j[0]["dry_run"]')" True
expect_eq "dry run: packs rewritten at threshold 0" "$(json_get "$T/dry0.json" 'j[0]["packs_rewritten"]')" 0
expect_eq "no prune task for a dry run" "$(cbrfs task list --type prune --json | json_get /dev/stdin 'len(j)')" 1

note "--repack-threshold 0: only the wholly dead packs go"
expect_ok cbrfs prune pv --repack-threshold 0 --json
cp "$T/.out" "$T/p0.json"
u1=$(used pv)
predicted=$(json_get "$T/dry0.json" 'j[0]["bytes_after"]')
expect_eq "bytes_after reported" "$(json_get "$T/p0.json" 'j[0]["bytes_after"]')" "$u1"
expect_eq "used after prune --repack-threshold 0, as --dry-run predicted" "$u1" "$predicted"
expect_eq "packs removed, as the dry run said" "$(json_get "$T/p0.json" 'j[0]["packs_removed"]')" "$(json_get "$T/dry0.json" 'j[0]["packs_removed"]')"
[ "$(json_get "$T/p0.json" 'j[0]["packs_removed"]')" -ge 1 ] && pass "wholly dead packs removed" || fail "no pack removed: $(cat "$T/p0.json")"
expect_eq "nothing rewritten at threshold 0" "$(json_get "$T/p0.json" 'j[0]["packs_rewritten"]')" 0
[ "$u1" -lt "$u0" ] && pass "used went down from $u0 to $u1" || fail "used $u0 -> $u1"

note "the default threshold rewrites the mostly dead packs (k1 and k2 share them with u1 and u2)"
expect_ok cbrfs prune pv --dry-run --json
cp "$T/.out" "$T/dry.json"
[ "$(json_get "$T/dry.json" 'j[0]["packs_rewritten"]')" -ge 1 ] && pass "--dry-run predicts a repack" || fail "no repack predicted: $(cat "$T/dry.json")"
expect_ok cbrfs prune pv --json
cp "$T/.out" "$T/p.json"
u2=$(used pv)
predicted=$(json_get "$T/dry.json" 'j[0]["bytes_after"]')
expect_eq "used after the repack, as --dry-run predicted" "$u2" "$predicted"
expect_eq "packs rewritten, as the dry run said" "$(json_get "$T/p.json" 'j[0]["packs_rewritten"]')" "$(json_get "$T/dry.json" 'j[0]["packs_rewritten"]')"
[ "$(json_get "$T/p.json" 'j[0]["blobs_moved"]')" -gt 0 ] && pass "live blobs moved into new packs" || fail "no blob moved: $(cat "$T/p.json")"
# What is left: k1 and k2 (12 MB), trees, and dead bytes only in packs at
# least half live (the default threshold): at most twice the live bytes.
# How much that is depends on how the 16 readers' chunks of k1 and u1 fell
# into packs (a pack half k1, half u1 is kept), so the bound is the rule's.
[ "$u2" -lt $((28 * MB)) ] && [ "$u2" -ge $((12 * MB)) ] && pass "used $u2 bytes: k1 and k2, and dead bytes only in packs at least half live" || fail "used $u2 bytes after the repack, expected 12 MB to twice that"
expect_ok cbrfs prune pv --json
expect_eq "a second prune frees nothing" "$(json_get "$T/.out" 'j[0]["bytes_before"] - j[0]["bytes_after"]')" 0
# --repack-threshold 100 rewrites every pack with a dead byte.
expect_ok cbrfs prune pv --repack-threshold 100 --json
u3=$(used pv)
[ "$u3" -lt $((14 * MB)) ] && [ "$u3" -ge $((12 * MB)) ] && pass "used $u3 bytes after --repack-threshold 100: k1 and k2 and little else" || fail "used $u3 bytes after --repack-threshold 100, expected about 12 MB"
expect_ok cbrfs check --read-data
expect_ok cbrfs restore pv b3 --to "$T/r3"
out=$(treecmp "$T/ref3" "$T/r3" 2>&1) && pass "b3 restores whole after the repack" || fail "b3 after the repack: $out"
expect_exit 2 'repack threshold 101 is out of range' -- cbrfs prune pv --repack-threshold 101
expect_exit 2 'BackupService.6105' -- cbrfs prune nosuchvault

note "a vault of small packs whose blobs are all live: prune again and again loses nothing"
mkdir -p "$T/tiny"
printf 'steady\n' >"$T/tiny/steady"
expect_ok cbrfs vault create tv --type filesystem --capacity 10
expect_ok cbrfs vault associate tv --path "$T/tiny" --name tiny
expect_ok cbrfs backup create tv --name t1
printf 'day 1\n' >"$T/tiny/day"
expect_ok cbrfs backup create tv --name t2
files_of tv | grep -v '/index/' >"$T/tv.before"
rewrites=0
for i in 1 2 3 4 5 6; do
	run cbrfs prune tv --json
	[ "$RC" = 0 ] || fail "prune $i of tv: $ERR"
	rewrites=$((rewrites + $(json_get "$T/.out" 'j[0]["packs_rewritten"] + j[0]["packs_removed"]')))
	run cbrfs check tv
	[ "$RC" = 0 ] || { fail "check after prune $i of tv: $OUT $ERR"; break; }
done
expect_eq "packs rewritten or removed where nothing is dead" "$rewrites" 0
files_of tv | grep -v '/index/' >"$T/tv.after"
cmp -s "$T/tv.before" "$T/tv.after" && pass "the packs are as they were" || fail "packs changed: $(diff "$T/tv.before" "$T/tv.after")"
expect_ok cbrfs restore tv t2 --to "$T/rt2"
out=$(treecmp "$T/tiny" "$T/rt2" 2>&1) && pass "t2 restores after six prunes" || fail "t2: $out"
expect_ok cbrfs backup delete tv t1
expect_ok cbrfs prune tv
for i in 1 2 3; do
	run cbrfs prune tv
	[ "$RC" = 0 ] || fail "prune $i of tv after a delete: $ERR"
done
expect_ok cbrfs check --read-data tv
expect_ok cbrfs restore tv t2 --to "$T/rt2b"
out=$(treecmp "$T/tiny" "$T/rt2b" 2>&1) && pass "t2 restores after t1 was deleted and pruned" || fail "t2 after the delete: $out"

note "packs left by a killed backup are removed"
PACKS=$STORE/vaults/pv/packs
packs_before=$(find "$PACKS" -name '*.pack' | wc -l)
random_file "$S/big" $((200 * MB))
"$CBRFS_BIN" --store "$STORE" backup create pv --name dead >"$T/dead.out" 2>&1 &
pid=$!
more_packs() { [ "$(find "$PACKS" -name '*.pack' | wc -l)" -gt "$packs_before" ]; }
wait_for 60 "the backup to seal a pack" more_packs
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rc=$?
[ "$rc" = 137 ] || die "the backup was not killed in time (exit $rc): $(cat "$T/dead.out")"
[ "$(used pv)" -gt "$u2" ] && pass "the killed backup left packs behind" || fail "no pack left by the killed backup"
expect_ok cbrfs prune pv --dry-run --json
[ "$(json_get "$T/.out" 'j[0]["orphan_packs"]')" -ge 1 ] && pass "--dry-run counts the orphan packs" || fail "dry run: $OUT"
expect_ok cbrfs prune pv --json
[ "$(json_get "$T/.out" 'j[0]["orphan_packs"]')" -ge 1 ] && pass "prune removed the orphan packs" || fail "prune: $OUT"
u3=$(used pv)
about "$u3" "$u2" 1 && pass "used is back to $u3 (it was $u2)" || fail "used $u3 after removing the orphans, was $u2"
expect_eq "packs after prune" "$(find "$PACKS" -name '*.pack' | wc -l)" "$packs_before"
expect_ok cbrfs check --read-data
rm "$S/big"

note "prune while cp -a reads a surviving backup through the mount and a backup runs"
C=$T/csrc
mkdir -p "$C/sub"
expect_ok cbrfs vault create cv --type filesystem --capacity 10
expect_ok cbrfs vault associate cv --path "$C" --name src
# c1..c4 each hold the kept files so far and their own 12 MB of soon dead
# data; c5 holds the kept files only, stored in the packs of c1..c4.
for i in 1 2 3 4; do
	random_file "$C/sub/keep$i" $((8 * MB))
	for j in $(seq 1 20); do printf 'small %d %d\n' "$i" "$j" >"$C/sub/s$i-$j"; done
	rm -f "$C/dead"*
	random_file "$C/dead$i" $((12 * MB))
	cbrfs backup create cv --name "c$i" >/dev/null || fail "backup c$i"
done
rm -f "$C/dead"*
expect_ok cbrfs backup create cv --name c5
cp -a "$C" "$T/ref5"
cu0=$(used cv)

MNT=$T/mnt
mkdir -p "$MNT"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"
expect_ok cbrfs mount "$MNT"
wait_mounted "$MNT"

# The reader: copy c5 out again and again until told to stop, dropping the
# page cache of its files first so each copy reads through the daemon.
cat >"$T/reader.sh" <<'EOF'
n=0
while [ ! -e "$1/stop" ] || [ "$n" -lt 2 ]; do
	n=$((n + 1))
	python3 -c '
import os, sys
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        fd = os.open(os.path.join(root, f), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
' "$2"
	if cp -a "$2" "$1/copy$n" 2>"$1/copy$n.err"; then echo "copy$n ok"; else echo "copy$n failed"; fi
done
EOF
mkdir "$T/reads"
bg bash "$T/reader.sh" "$T/reads" "$MNT/cv/c5/src" >"$T/reads.log" 2>&1
reader=$BG_PID
wait_for 30 "the first copy to start" test -e "$T/reads/copy1"

random_file "$C/new" $((150 * MB))
backup_pid=
refused=0
ok=0
ok_during_reads=0
rewritten=0
deleted=0
prev_ok=1
k=0
# Each round deletes the next of c1..c4 if the last prune ran, then prunes.
# After two prunes that ran, a backup starts: the prunes beside it are
# refused, the deletes wait. Until c1..c4 are deleted and pruned and the
# backup is done (at most 400 rounds).
while [ "$k" -lt 400 ]; do
	k=$((k + 1))
	if [ "$ok" = 2 ] && [ -z "$backup_pid" ]; then
		cbrfs backup create cv --name c6 >"$T/c6.out" 2>&1 &
		backup_pid=$!
		on_exit "kill $backup_pid"
		# (Its status file appears once it holds the lock; probing the lock
		# with flock(1) would take it for a moment and could refuse the backup.)
		wait_for 10 "the backup to start" sh -c "test -e '$STORE/vaults/cv/running/c6.json' || ! kill -0 $backup_pid"
	fi
	if [ "$deleted" -lt 4 ] && [ "$prev_ok" = 1 ]; then
		deleted=$((deleted + 1))
		cbrfs backup delete cv "c$deleted" >/dev/null || fail "delete c$deleted"
		last_delete=$k
	fi
	run cbrfs prune cv --json
	prev_ok=0
	if [ "$RC" = 0 ]; then
		prev_ok=1
		ok=$((ok + 1))
		last_ok=$k
		kill -0 "$reader" 2>/dev/null && ok_during_reads=$((ok_during_reads + 1))
		rewritten=$((rewritten + $(json_get "$T/.out" 'j[0]["packs_rewritten"]')))
	elif matches 'BackupService.6125' "$ERR"; then
		refused=$((refused + 1))
	else
		fail "prune round $k: exit $RC: $ERR"
	fi
	if [ "$deleted" = 4 ] && [ -n "$backup_pid" ] && pid_gone "$backup_pid" && [ "${last_ok:-0}" -ge "$last_delete" ]; then
		break
	fi
done
touch "$T/reads/stop"
wait "$backup_pid" && pass "the backup beside the prunes succeeded" || fail "backup c6 failed: $(cat "$T/c6.out")"
wait_exit "$reader" 120
note "$k prune rounds: $ok ran ($ok_during_reads while the reader copied, $rewritten packs rewritten), $refused refused; $(grep -c ok "$T/reads.log") copies"
[ "$refused" -ge 1 ] && pass "prunes beside the backup were refused with BackupService.6125 ($refused)" || fail "no prune was refused while the backup ran"
[ "$ok_during_reads" -ge 4 ] && pass "$ok_during_reads prunes ran beside the reads" || fail "only $ok_during_reads prunes ran beside the reads"
[ "$rewritten" -ge 4 ] && pass "they rewrote $rewritten packs holding c5's data" || fail "the prunes rewrote only $rewritten packs"
expect_eq "failed prune tasks (the refused ones)" \
	"$(cbrfs task list --vault cv --type prune --status failed --json | json_get /dev/stdin 'len([t for t in j if t["error_code"] == "BackupService.6125"])')" "$refused"
if grep -q failed "$T/reads.log"; then
	fail "a copy through the mount failed: $(grep failed "$T/reads.log" | head -3) $(cat "$T/reads"/copy*.err | head -5)"
else
	pass "every copy through the mount completed"
fi
ncopies=0
for d in "$T/reads"/copy*; do
	[ -d "$d" ] || continue
	ncopies=$((ncopies + 1))
	out=$(diff_tree "$T/ref5" "$d" 2>&1) || fail "$(basename "$d") differs from the source: $out"
done
[ "$ncopies" -ge 2 ] && pass "$ncopies copies read during the prunes all match the source" || fail "only $ncopies copies"
expect_eq "backups left" "$(cbrfs backup list cv --json | json_get /dev/stdin 'sorted(b["name"] for b in j)')" '["c5", "c6"]'
cu1=$(used cv)
[ "$cu1" -lt $((cu0 + 150 * MB)) ] && pass "the dead data's space came back (used $cu0 -> $cu1 with 150 MB added)" || fail "used $cu0 -> $cu1"
out=$(diff_tree "$T/ref5" "$MNT/cv/c5/src" 2>&1) && pass "c5 reads back exactly through the mount after the prunes" || fail "c5 after: $out"
cmp -s "$C/new" "$MNT/cv/c6/src/new" && pass "c6 reads back exactly through the mount" || fail "c6 differs"
expect_ok cbrfs umount "$MNT"
expect_ok cbrfs check --read-data

note "prune of every vault while one is busy: the others are pruned, the busy one named"
printf 'more\n' >"$S/more"
expect_ok cbrfs backup create pv --name b4
expect_ok cbrfs backup delete pv b4
pu=$(used pv)
bash -c 'exec 9>>"$1" && flock -x 9 && exec sleep 600' _ "$STORE/vaults/cv/backup.lock" >/dev/null 2>&1 &
holder=$!
on_exit "kill $holder"
wait_for 10 "the shell to hold cv's backup.lock" sh -c "! flock -n '$STORE/vaults/cv/backup.lock' true"
expect_exit 1 'BackupService.6125: vault cv' -- cbrfs prune
matches '^vault pv: freed' "$OUT" && matches '^vault tv: freed' "$OUT" && pass "pv and tv, after the busy cv, were pruned" || fail "prune of every vault: $OUT"
[ "$(used pv)" -lt "$pu" ] && pass "pv's dead backup freed" || fail "pv not pruned: used $pu -> $(used pv)"
kill "$holder"
wait "$holder" 2>/dev/null
expect_ok cbrfs check --read-data
