#!/usr/bin/env bash
# What a vault kept in an S3 bucket costs in requests (issue 14), counted
# by cbrfs's own counters on a real 3-node SeaweedFS cluster
# (scripts/seaweed.sh, started here on free ports and stopped by PID):
# - `backup show --json` and the task log give each operation's PUT, GET,
#   LIST and DELETE requests, retries and bytes; a local vault's backup
#   and tasks have no such figures (none rather than zeros);
# - a command's task counts its whole work on the vault, its open and
#   writer lease included: through the counting proxy, a backup's and a
#   restore's task figures are exactly the process's;
# - an unchanged re-backup makes no LIST and uploads only its record and
#   the vault's head (no pack, no index);
# - a backup from a second host changes the head: the first host's next
#   backup lists again and sees its record, and the one after lists
#   nothing;
# - a restore of a large file fetches each of its data packs whole, once,
#   instead of one ranged GET per chunk.
. "$(dirname "$0")/lib.sh"
. "$REPO/scripts/seaweed.sh"

seaweed_start || die "cannot start the SeaweedFS cluster"
on_exit seaweed_stop
EP=$SEAWEED_S3_ENDPOINT
URL=s3://$SEAWEED_BUCKET/costs-$$
# Used only if S3 vaults are encrypted by default (issue 15).
export CBRFS_PASSWORD=costs-test-password

S=$T/src
mkdir -p "$S/many"
random_file "$S/big" $((40 << 20))
for i in $(seq 1 50); do printf 'file %d\n' "$i" >"$S/many/f$i"; done

# req VAULT BACKUP FIELD: a figure of `backup show --json`'s requests.
req() {
	cbrfs backup show "$1" "$2" --json >"$T/show.json" || return 1
	json_get "$T/show.json" "j['requests']['$3']"
}
# task_req [STORE] VAULT TYPE FIELD: that figure of the newest task of TYPE.
task_req() {
	"$CBRFS_BIN" --store "$1" task list --vault "$2" --type "$3" --json >"$T/tasks.json" || return 1
	json_get "$T/tasks.json" "j[0]['requests']['$4']"
}

expect_ok cbrfs vault create c --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$EP"
expect_ok cbrfs vault associate c --path "$S" --name src

# ---- the first backup: counted, in its record and its task ----
expect_ok cbrfs backup create c --name b1
up=$(req c b1 bytes_up)
[ "$up" -ge $((40 << 20)) ] && pass "b1's record: $up bytes up" || fail "b1's record: bytes_up $up, expected the 40 MiB file at least"
[ "$(req c b1 put_requests)" -ge 3 ] && pass "b1's record counts its PUTs" || fail "b1's record: put_requests $(req c b1 put_requests)"
expect_ok cbrfs backup show c b1
matches '^requests: +[0-9]+ PUT, [0-9]+ GET, [0-9]+ LIST, [0-9]+ DELETE' "$OUT" && pass "backup show's table has a requests line" || fail "backup show: $OUT"
t_up=$(task_req "$STORE" c backup bytes_up)
[ "$t_up" -ge "$up" ] && pass "b1's task: $t_up bytes up" || fail "b1's task: bytes_up $t_up < the record's $up"

# ---- an unchanged re-backup: no LIST, only its record and the head ----
expect_ok cbrfs backup create c --name b2
expect_eq "b2 (unchanged): LIST requests in its record" "$(req c b2 list_requests)" 0
# Before its record it uploaded only its writer lease (a few hundred
# bytes, counted since the record counts the vault's open and lease too):
# no pack, no index.
b2_up=$(req c b2 bytes_up)
[ "$b2_up" -gt 0 ] && [ "$b2_up" -lt 1024 ] && pass "b2 (unchanged): $b2_up bytes uploaded before its record (the lease)" || fail "b2 (unchanged): $b2_up bytes uploaded before its record, expected the lease's few hundred"
expect_eq "b2 (unchanged): LIST requests in its task" "$(task_req "$STORE" c backup list_requests)" 0
# The task counts the command's whole work on the vault (issue 14): the
# writer lease's PUT and its release's DELETE too.
expect_eq "b2 (unchanged): PUT requests in its task (the lease, the head and the record)" "$(task_req "$STORE" c backup put_requests)" 3
expect_eq "b2 (unchanged): DELETE requests in its task (the lease's release)" "$(task_req "$STORE" c backup delete_requests)" 1
t_up=$(task_req "$STORE" c backup bytes_up)
[ "$t_up" -lt 65536 ] && pass "b2 (unchanged) uploaded $t_up bytes in all" || fail "b2 (unchanged) uploaded $t_up bytes"

# ---- another host writes: the head tells the first host to list ----
STORE2=$T/store2
expect_ok "$CBRFS_BIN" --store "$STORE2" vault attach "$URL" --s3-endpoint "$EP"
printf 'changed on host 2\n' >>"$S/many/f1"
expect_ok "$CBRFS_BIN" --store "$STORE2" backup create c --name h2
expect_ok cbrfs backup create c --name b3
[ "$(req c b3 list_requests)" -gt 0 ] && pass "b3 after another host's backup lists again" || fail "b3 listed nothing after host 2 wrote"
expect_ok cbrfs backup list c --json
matches '"h2"' "$OUT" && pass "host 1 lists host 2's backup" || fail "host 1 does not list h2: $OUT"
expect_ok cbrfs backup create c --name b4
expect_eq "b4 (unchanged again): LIST requests" "$(req c b4 list_requests)" 0

# ---- the whole process counted, unlock included: no LIST at all ----
# The record and task count the backup's own requests; the counting proxy
# (what scripts/bench.sh measures with) sees every request of the process,
# the unlock of the key slots too (it listed keys/ once per command).
bg python3 "$TESTS/common/faultproxy.py" --upstream "${EP#http://}" --mode pass --log "$T/proxy.log" >"$T/proxy.port" 2>"$T/proxy.err"
wait_for 20 "the counting proxy's port" test -s "$T/proxy.port"
PEP=http://127.0.0.1:$(head -n 1 "$T/proxy.port")
STORE3=$T/store3
expect_ok "$CBRFS_BIN" --store "$STORE3" vault attach "$URL" --s3-endpoint "$PEP"
expect_ok "$CBRFS_BIN" --store "$STORE3" backup create c --name p1
off=$(stat -c %s "$T/proxy.log")
expect_ok "$CBRFS_BIN" --store "$STORE3" backup create c --name p2
python3 "$TESTS/common/faultproxy.py" --summary "$T/proxy.log" --from "$off" >"$T/p2.counts"
lists=$(awk -F'\t' '$1 == "LIST" {print $2}' "$T/p2.counts")
expect_eq "p2 (unchanged), the whole process through the proxy: LIST requests" "$lists" 0

# ---- a command's task counts the vault's open: its figures are the process's ----
# The requests made before the task was recorded (the head, the check
# that an encrypted vault has no clear `key`, key slots fetched on a cold
# cache, the writer lease) are the command's own: its only task counts
# exactly what the proxy saw of the whole process.
# same_counts COUNTS TYPE WHAT: the newest TYPE task of STORE3 against the
# proxy's COUNTS, kind by kind (the task counts POST with PUT, HEAD with GET).
same_counts() {
	local f=$1
	n() { awk -F'\t' -v k="$1" '$1 == k {print $2}' "$f"; }
	expect_eq "$3: PUT and POST, the task's against the proxy's" "$(task_req "$STORE3" c "$2" put_requests)" $(($(n PUT) + $(n POST)))
	expect_eq "$3: GET and HEAD, the task's against the proxy's" "$(task_req "$STORE3" c "$2" get_requests)" $(($(n GET) + $(n HEAD)))
	expect_eq "$3: LIST, the task's against the proxy's" "$(task_req "$STORE3" c "$2" list_requests)" "$(n LIST)"
	expect_eq "$3: DELETE, the task's against the proxy's" "$(task_req "$STORE3" c "$2" delete_requests)" "$(n DELETE)"
}
same_counts "$T/p2.counts" backup "p2 (unchanged re-backup)"
# A restore with an empty cache (as scripts/bench.sh empties it: all but
# the registration and local state): the open fetches the key slot too.
find "$STORE3/vaults/c" -mindepth 1 -maxdepth 1 ! -name vault.json ! -name '*.lock' ! -name running ! -name 'policy-state*' -exec rm -rf {} +
off=$(stat -c %s "$T/proxy.log")
expect_ok "$CBRFS_BIN" --store "$STORE3" restore c p1 --to "$T/r3"
python3 "$TESTS/common/faultproxy.py" --summary "$T/proxy.log" --from "$off" >"$T/r3.counts"
[ "$(awk -F'\t' '$1 == "GET" {print $2}' "$T/r3.counts")" -gt 0 ] && pass "the restore with an empty cache was seen by the proxy" || fail "the proxy saw no GET of the restore"
same_counts "$T/r3.counts" restore "restore of p1, empty cache"
cmp -s "$S/big" "$T/r3/big" && pass "p1's big file restores exactly through the proxy" || fail "p1's big file differs after the proxied restore"

# ---- restore: whole packs for a large file ----
expect_ok cbrfs restore c b1 --to "$T/r1"
# f1 changed after b1: the big file is compared alone.
cmp -s "$S/big" "$T/r1/big" && pass "b1's big file restores exactly" || fail "b1's big file differs after restore"
gets=$(task_req "$STORE" c restore get_requests)
down=$(task_req "$STORE" c restore bytes_down)
# 40 MiB in chunks of about 1 MiB is some 40 ranges; in 16 MiB packs it
# is 3 whole-pack GETs plus a few small ones (head, records).
[ "$gets" -le 12 ] && pass "restore of a 40 MiB file: $gets GET requests" || fail "restore of a 40 MiB file made $gets GET requests (ranges, not whole packs?)"
[ "$down" -ge $((40 << 20)) ] && [ "$down" -le $((48 << 20)) ] && pass "restore downloaded $down bytes" || fail "restore downloaded $down bytes"

# ---- a local vault: no figures at all ----
expect_ok cbrfs vault create l --type filesystem --capacity 10GB
mkdir -p "$T/lsrc" && printf 'x\n' >"$T/lsrc/x"
expect_ok cbrfs vault associate l --path "$T/lsrc" --name src
expect_ok cbrfs backup create l --name lb
cbrfs backup show l lb --json >"$T/show.json"
expect_eq "a local vault's backup has no requests" "$(json_get "$T/show.json" "'requests' in j")" False
cbrfs task list --vault l --type backup --json >"$T/tasks.json"
expect_eq "a local vault's task has no requests" "$(json_get "$T/tasks.json" "'requests' in j[0]")" False
expect_ok cbrfs backup show l lb
matches '^requests:' "$OUT" && fail "a local vault's backup shows a requests line" || pass "a local vault's backup shows no requests line"

