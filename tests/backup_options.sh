#!/usr/bin/env bash
# tests/backup_options.sh: what a backup says it did, per resource and
# under --full (issue #16). Two resources, one left unchanged: each
# resource's blobs_new and bytes_added are its own (0 for the unchanged
# one), and add up to no more than the backup's. --full reads every file
# again but counts the unchanged ones as unchanged and a modified one as
# changed.
. "$(dirname "$0")/lib.sh"

KB=1024
A=$T/a
B=$T/b
mkdir -p "$A/sub" "$B"
for i in 1 2 3; do random_file "$A/a$i" $((100 * KB)); done
printf 'small\n' >"$A/sub/s"
: >"$A/empty"
for i in 1 2; do random_file "$B/b$i" $((200 * KB)); done
expect_ok cbrfs vault create bo --type filesystem --capacity 10
expect_ok cbrfs vault associate bo --path "$A" --name ra
expect_ok cbrfs vault associate bo --path "$B" --name rb
res() { json_get "$T/$1.json" "[r for r in j[\"resources\"] if r[\"name\"] == \"$2\"][0][\"stats\"][\"$3\"]"; }
tot() { json_get "$T/$1.json" "j[\"stats\"][\"$2\"]"; }
backup() {
	local name=$1
	shift
	expect_ok cbrfs backup create bo --name "$name" --json "$@"
	cp "$T/.out" "$T/$name.json"
}

note "per-resource blobs_new and bytes_added"
backup b1
for r in ra rb; do
	[ "$(res b1 $r blobs_new)" -gt 0 ] && pass "b1 $r blobs_new > 0" || fail "b1 $r blobs_new = $(res b1 $r blobs_new)"
done
[ "$(res b1 rb bytes_added)" -ge $((400 * KB)) ] && pass "b1 rb added its 400 KiB of random data ($(res b1 rb bytes_added))" || fail "b1 rb bytes_added = $(res b1 rb bytes_added)"
expect_eq "b1 blobs_new: the resources' sum is the backup's" "$(($(res b1 ra blobs_new) + $(res b1 rb blobs_new)))" "$(tot b1 blobs_new)"
sum=$(($(res b1 ra bytes_added) + $(res b1 rb bytes_added)))
[ "$sum" -le "$(tot b1 bytes_added)" ] && pass "b1 bytes_added: the resources' $sum within the backup's $(tot b1 bytes_added) (packs' headers and index aside)" || fail "b1 resources added $sum > backup $(tot b1 bytes_added)"

random_file "$B/b3" $((50 * KB))
backup b2
expect_eq "b2 ra (unchanged) blobs_new" "$(res b2 ra blobs_new)" 0
expect_eq "b2 ra (unchanged) bytes_added" "$(res b2 ra bytes_added)" 0
[ "$(res b2 rb bytes_added)" -ge $((50 * KB)) ] && pass "b2 rb added its new 50 KiB ($(res b2 rb bytes_added))" || fail "b2 rb bytes_added = $(res b2 rb bytes_added)"
expect_ok cbrfs backup show bo b2 --json
expect_eq "backup show --json keeps rb's bytes_added" "$(json_get "$T/.out" '[r for r in j["resources"] if r["name"] == "rb"][0]["stats"]["bytes_added"]')" "$(res b2 rb bytes_added)"

note "--full counts against the previous backup (issue #16: all were \"new\")"
backup b3 --full
expect_eq "b3 ra files_unchanged (read again, the same)" "$(res b3 ra files_unchanged)" 5
expect_eq "b3 ra files_new" "$(res b3 ra files_new)" 0
expect_eq "b3 ra files_changed" "$(res b3 ra files_changed)" 0
expect_eq "b3 ra bytes_read (everything read again)" "$(res b3 ra bytes_read)" $((300 * KB + 6))
random_file "$A/a2" $((100 * KB))
printf 'new\n' >"$A/sub/t"
backup b4 --full
expect_eq "b4 ra files_changed (a2 rewritten)" "$(res b4 ra files_changed)" 1
expect_eq "b4 ra files_new (sub/t)" "$(res b4 ra files_new)" 1
expect_eq "b4 ra files_unchanged" "$(res b4 ra files_unchanged)" 4
expect_eq "b4 rb files_unchanged" "$(res b4 rb files_unchanged)" 3

note "--exclude-file, --exclude-caches, --exclude-if-present (stored with the resource at associate)"
E=$T/e
mkdir -p "$E/keep" "$E/cache" "$E/fakecache" "$E/linkcache" "$E/marked/deep" "$E/logs"
printf 'kept\n' >"$E/keep/file"
printf 'Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n' >"$E/cache/CACHEDIR.TAG"
printf 'cached\n' >"$E/cache/blob"
mkdir -p "$E/cache/sub"
printf 'not the signature\n' >"$E/fakecache/CACHEDIR.TAG"
printf 'kept\n' >"$E/fakecache/blob"
ln -s ../cache/CACHEDIR.TAG "$E/linkcache/CACHEDIR.TAG"
printf 'kept\n' >"$E/linkcache/blob"
: >"$E/marked/.nobackup"
printf 'left out\n' >"$E/marked/file"
printf 'left out\n' >"$E/marked/deep/file"
printf 'x\n' >"$E/logs/a.log"
printf 'x\n' >"$E/logs/a.txt"
printf 'x\n' >"$E/b.tmp"
cat >"$T/excludes" <<'X'
# comments and blank lines are skipped

*.log
  *.tmp  
X
expect_ok cbrfs vault create eo --type filesystem --capacity 10
expect_ok cbrfs vault associate eo --path "$E" --name e --exclude-file "$T/excludes" --exclude-caches --exclude-if-present .nobackup
expect_ok cbrfs vault show eo --json
expect_eq "excludes stored from the file" "$(json_get "$T/.out" 'j["resources"][0]["excludes"]')" '["*.log", "*.tmp"]'
expect_eq "exclude_caches stored" "$(json_get "$T/.out" 'j["resources"][0]["exclude_caches"]')" True
expect_eq "exclude_if_present stored" "$(json_get "$T/.out" 'j["resources"][0]["exclude_if_present"]')" '[".nobackup"]'
expect_ok cbrfs backup create eo --name e1
expect_ok cbrfs restore eo e1 --to "$T/re"
got=$(cd "$T/re" && find . -mindepth 1 | sort | tr '\n' ' ')
expect_eq "what the backup holds" "$got" "./cache ./cache/CACHEDIR.TAG ./fakecache ./fakecache/CACHEDIR.TAG ./fakecache/blob ./keep ./keep/file ./linkcache ./linkcache/CACHEDIR.TAG ./linkcache/blob ./logs ./logs/a.txt ./marked ./marked/.nobackup "

note "bad exclude options: exit 2 naming the object and the rule"
expect_exit 2 'exclude file .*nosuch.*cannot open' -- cbrfs vault associate eo --path "$E" --name e2 --exclude-file "$T/nosuch"
printf '\377\376\n' >"$T/badexcl"
expect_exit 2 'exclude file .*badexcl.* is not UTF-8' -- cbrfs vault associate eo --path "$E" --name e3 --exclude-file "$T/badexcl"
truncate -s 1M "$T/img"
expect_ok cbrfs vault create di --type disk --capacity 10
expect_exit 2 'apply to a directory resource' -- cbrfs vault associate di --disk "$T/img" --exclude-caches
expect_exit 2 'apply to a directory resource' -- cbrfs vault associate di --disk "$T/img" --exclude-if-present x
expect_eq "nothing associated by the refused options" "$(cbrfs vault show di --json | json_get /dev/stdin 'len(j["resources"])')" 0
expect_exit 2 'exclude-if-present a/b: give a file name' -- cbrfs vault associate eo --path "$E" --name e4 --exclude-if-present a/b

note "backup create --dry-run: real dedupe figures, nothing written"
D=$T/d
mkdir -p "$D/x"
random_file "$D/r1" $((300 * KB))
random_file "$D/x/r2" $((200 * KB))
cp "$D/r1" "$D/x/r1copy"
expect_ok cbrfs vault create dr --type filesystem --capacity 10
expect_ok cbrfs vault associate dr --path "$D" --name d
files_of() { (cd "$STORE/vaults/$1" && find . ! -name '*.lock' -printf '%p %s\n' | sort); }
tasks_before=$(cbrfs task list --json | json_get /dev/stdin 'len(j)')
files_of dr >"$T/dr.before"
expect_ok cbrfs backup create dr --dry-run --json
cp "$T/.out" "$T/dry1.json"
files_of dr >"$T/dr.after"
cmp -s "$T/dr.before" "$T/dr.after" && pass "--dry-run wrote nothing to the vault" || fail "--dry-run changed the vault: $(diff "$T/dr.before" "$T/dr.after")"
expect_eq "--dry-run: no backup" "$(cbrfs backup list dr --json | json_get /dev/stdin 'len(j)')" 0
expect_eq "--dry-run: no task" "$(cbrfs task list --json | json_get /dev/stdin 'len(j)')" "$tasks_before"
expect_eq "--dry-run says so" "$(json_get "$T/dry1.json" 'j["dry_run"]')" True
expect_eq "--dry-run files_new" "$(tot dry1 files_new)" 3
expect_eq "--dry-run bytes_read" "$(tot dry1 bytes_read)" $((800 * KB))
run cbrfs backup create dr --dry-run
matches 'dry run of a backup of vault dr .*nothing was written' "$OUT" && pass "--dry-run's text says nothing was written" || fail "--dry-run said: $OUT"
matches 'would read 800.0 KiB of 800.0 KiB; would add ' "$OUT" && pass "--dry-run's text says what it would read and add" || fail "--dry-run said: $OUT"
backup_dr() { expect_ok cbrfs backup create dr --name "$1" --json; cp "$T/.out" "$T/$1.json"; }
backup_dr d1
expect_eq "blobs_new: --dry-run's figure is the backup's" "$(tot dry1 blobs_new)" "$(tot d1 blobs_new)"
expect_eq "resource bytes_added: --dry-run's figure is the backup's" "$(res dry1 d bytes_added)" "$(res d1 d bytes_added)"
dry=$(tot dry1 bytes_added)
real=$(tot d1 bytes_added)
# The copy of r1 deduplicated: about 500 KiB of random data, not 800.
[ "$dry" -ge $((500 * KB)) ] && [ "$dry" -lt $((600 * KB)) ] && pass "--dry-run would add $dry bytes: r1's copy deduplicated" || fail "--dry-run would add $dry bytes"
[ "$dry" -le "$real" ] && [ $((real - dry)) -lt 8192 ] && pass "--dry-run's $dry bytes are the backup's $real but for the packs' headers and the index" || fail "--dry-run said $dry, the backup added $real"
random_file "$D/x/r3" $((100 * KB))
expect_ok cbrfs backup create dr --dry-run --json
cp "$T/.out" "$T/dry2.json"
expect_eq "--dry-run after a backup: files_unchanged" "$(tot dry2 files_unchanged)" 3
expect_eq "--dry-run after a backup: files_new" "$(tot dry2 files_new)" 1
expect_eq "--dry-run after a backup: bytes_read (only the new file)" "$(tot dry2 bytes_read)" $((100 * KB))
[ "$(tot dry2 bytes_added)" -ge $((100 * KB)) ] && [ "$(tot dry2 bytes_added)" -lt $((110 * KB)) ] && pass "--dry-run would add the new file's 100 KiB and trees ($(tot dry2 bytes_added))" || fail "--dry-run would add $(tot dry2 bytes_added)"
note "--dry-run takes no lock: it runs while the vault's backup lock is held"
bash -c 'exec 9>>"$1" && flock -x 9 && exec sleep 600' _ "$STORE/vaults/dr/backup.lock" >/dev/null 2>&1 &
holder=$!
_BG_PIDS+=("$holder")
wait_for 10 "the shell to hold backup.lock" sh -c "! flock -n '$STORE/vaults/dr/backup.lock' true"
expect_exit 1 'BackupService.6125' -- cbrfs backup create dr --name locked
expect_ok cbrfs backup create dr --dry-run
kill "$holder"
wait "$holder" 2>/dev/null
expect_ok cbrfs backup create dr --name d2 --dry-run
expect_ok cbrfs backup create dr --name d2
expect_eq "a dry run took no name: d2 made after it" "$(cbrfs backup list dr --json | json_get /dev/stdin 'sorted(b["name"] for b in j)')" '["d1", "d2"]'

note "SIGINT during a backup keeps the sealed packs: the retry does not store them again (issue #16)"
MB=$((1024 * KB))
I=$T/big
mkdir -p "$I"
for i in $(seq 1 40); do random_file "$I/f$i" $((8 * MB)); done
expect_ok cbrfs vault create iv --type filesystem --capacity 10
expect_ok cbrfs vault associate iv --path "$I" --name big
packs() { find "$STORE/vaults/iv" -name '*.pack' | wc -l; }
two_packs() { [ "$(packs)" -ge 2 ]; }
# The binary itself (not the cbrfs function), so that the signal reaches it.
"$CBRFS_BIN" --store "$STORE" backup create iv --name i1 >"$T/i1.out" 2>"$T/i1.err" &
pid=$!
_BG_PIDS+=("$pid")
wait_for 60 "two sealed packs" two_packs
kill -INT "$pid"
wait "$pid"
rc=$?
expect_eq "exit status after SIGINT" "$rc" 130
matches 'interrupted: kept [0-9.]+ [KMG]iB in [0-9]+ new blobs' "$(cat "$T/i1.err")" && pass "one line says what was kept: $(cat "$T/i1.err")" || fail "stderr after SIGINT: $(cat "$T/i1.err")"
expect_eq "no backup recorded" "$(cbrfs backup list iv --json | json_get /dev/stdin 'len(j)')" 0
kept=$(packs)
expect_ok cbrfs backup create iv --name i2 --json
cp "$T/.out" "$T/i2.json"
added=$(json_get "$T/i2.json" 'j["stats"]["bytes_added"]')
[ "$added" -le $((320 * MB - kept * 15 * MB)) ] && pass "the retry added $added bytes of 320 MiB: the $kept packs kept were reused" || fail "the retry added $added bytes with $kept packs kept"
expect_ok cbrfs check iv
