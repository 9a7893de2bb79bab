#!/usr/bin/env bash
# Incremental backups: an unchanged tree is not read again and adds
# (almost) nothing; after one file changes only that file is read; --full
# reads everything yet stores almost nothing new (deduplication).
. "$(dirname "$0")/lib.sh"

S=$T/src
mkdir -p "$S/d1/d2" "$S/d3"
note "making 61 files of 0 bytes to 2 MB under $S"
nfiles=0
for i in $(seq 1 20); do
	random_file "$S/f$i" $((i * 100000))
	random_file "$S/d1/g$i" $((i * 37))
	printf 'small %d\n' "$i" >"$S/d1/d2/h$i"
	nfiles=$((nfiles + 3))
done
: >"$S/d3/empty"
nfiles=$((nfiles + 1))
ln -s f1 "$S/link"
total=$(find "$S" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
note "$nfiles files, $total bytes"

expect_ok cbrfs vault create inc --type filesystem --capacity 10
expect_ok cbrfs vault associate inc --path "$S"

# backup NAME [ARGS...]: take a backup with --json; its JSON is in $T/NAME.json.
backup() {
	local name=$1
	shift
	expect_ok cbrfs backup create inc --name "$name" --json "$@"
	cp "$T/.out" "$T/$name.json"
}
stat_of() { json_get "$T/$1.json" "j[\"stats\"][\"$2\"]"; }
# expect_added BACKUP OP LIMIT WHAT: the bytes BACKUP added stand in
# relation OP (test's -lt, -le, -ge) to LIMIT; WHAT says what it held.
expect_added() {
	local added
	added=$(stat_of "$1" bytes_added)
	if [ "$added" "$2" "$3" ]; then
		pass "$1 added $added bytes $4"
	else
		fail "$1 added $added bytes $4 (expected $2 $3)"
	fi
}

note "b1: the first backup, full"
backup b1
expect_eq "b1 type" "$(json_get "$T/b1.json" 'j["type"]')" full
expect_eq "b1 files_new" "$(stat_of b1 files_new)" "$nfiles"
expect_eq "b1 bytes_read" "$(stat_of b1 bytes_read)" "$total"
expect_added b1 -ge "$total" "for $total bytes of random data"

note "b2: nothing changed"
backup b2
expect_eq "b2 type" "$(json_get "$T/b2.json" 'j["type"]')" incremental
expect_eq "b2 bytes_read (unchanged tree)" "$(stat_of b2 bytes_read)" 0
expect_eq "b2 files_unchanged" "$(stat_of b2 files_unchanged)" "$nfiles"
expect_eq "b2 files_changed" "$(stat_of b2 files_changed)" 0
expect_eq "b2 files_new" "$(stat_of b2 files_new)" 0
expect_added b2 -le "4096" "for an unchanged tree"

note "b3: one file rewritten in place with new bytes of the same size"
changed=$S/f13
size=$(file_size "$changed")
random_file "$changed" "$size"
backup b3
expect_eq "b3 files_changed" "$(stat_of b3 files_changed)" 1
expect_eq "b3 bytes_read (the changed file's size)" "$(stat_of b3 bytes_read)" "$size"
expect_eq "b3 files_unchanged" "$(stat_of b3 files_unchanged)" $((nfiles - 1))
expect_added b3 -lt "$((size + 64 * 1024))" "for a $size-byte change"

note "b4: one file changed by metadata only (chmod): read again, nothing new stored"
chmod 0640 "$S/f5"
backup b4
expect_eq "b4 files_changed" "$(stat_of b4 files_changed)" 1
expect_eq "b4 bytes_read" "$(stat_of b4 bytes_read)" 500000
expect_added b4 -lt "65536" "for a chmod (the data deduplicated; trees only)"

note "b4b: one file's bytes changed and its mtime put back: the ctime gives it away"
sneaky=$S/f7
size7=$(file_size "$sneaky")
touch -r "$sneaky" "$T/f7.mtime"
random_file "$sneaky" "$size7"
touch -r "$T/f7.mtime" "$sneaky"
backup b4b
expect_eq "b4b files_changed (same size and mtime, new ctime)" "$(stat_of b4b files_changed)" 1
expect_eq "b4b bytes_read" "$(stat_of b4b bytes_read)" "$size7"

note "b4c: one file replaced by a copy with the same size and mtime (a new inode)"
cp -p "$S/f9" "$S/f9.new"
mv "$S/f9.new" "$S/f9"
backup b4c
expect_eq "b4c files_changed (new inode)" "$(stat_of b4c files_changed)" 1
expect_eq "b4c bytes_read" "$(stat_of b4c bytes_read)" "$(file_size "$S/f9")"
expect_added b4c -lt "65536" "for a copy of stored bytes (deduplicated)"

note "b5: --full reads every byte again and stores almost nothing"
backup b5 --full
expect_eq "b5 type" "$(json_get "$T/b5.json" 'j["type"]')" full
expect_eq "b5 bytes_read (everything)" "$(stat_of b5 bytes_read)" "$total"
# Read again, yet counted against b4c as an incremental would (issue #16:
# they were all "new").
expect_eq "b5 files_unchanged (read again, the same)" "$(stat_of b5 files_unchanged)" "$nfiles"
expect_eq "b5 files_new" "$(stat_of b5 files_new)" 0
expect_eq "b5 files_changed" "$(stat_of b5 files_changed)" 0
expect_added b5 -le "4096" "with --full for an unchanged tree (everything deduplicated)"

note "b6: after --full, incremental again"
backup b6
expect_eq "b6 bytes_read" "$(stat_of b6 bytes_read)" 0
expect_eq "b6 type" "$(json_get "$T/b6.json" 'j["type"]')" incremental

note "the newest and the oldest backup restore as the trees they saw: b6 and b1"
expect_ok cbrfs restore inc b6 --to "$T/r6"
if out=$(treecmp "$S" "$T/r6"); then pass "restore of b6 is the source"; else fail "restore of b6: $out"; fi
expect_ok cbrfs restore inc b1 --to "$T/r1"
if cmp -s "$T/r1/f13" "$changed"; then
	fail "restore of b1 has the rewritten f13 (it must have the old bytes)"
else
	pass "restore of b1 has the old f13"
fi
if out=$(treecmp "$S" "$T/r1" --exclude f13 --exclude f5 --exclude f7 --exclude f9 --ignore-root-mtime 2>&1); then
	pass "restore of b1 matches the source but for the two files changed since"
else
	fail "restore of b1: $out"
fi
