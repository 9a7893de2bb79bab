#!/usr/bin/env bash
# tests/tasks.sh: the task log. Every backup, restore, delete, prune,
# resource removal and vault delete is a task; `task list` filters by
# vault, type, status and start time and lists newest first; `task show`
# gives one task; bad filters are refused; a backup killed with SIGKILL
# shows as failed, not running forever.
. "$(dirname "$0")/lib.sh"

S1=$T/s1
S2=$T/s2
mkdir -p "$S1" "$S2" "$T/s3"
printf 'one\n' >"$S1/a"
printf 'two\n' >"$S2/b"
expect_ok cbrfs vault create t1 --type filesystem --capacity 10
expect_ok cbrfs vault create t2 --type filesystem --capacity 10
expect_ok cbrfs vault associate t1 --path "$S1" --name s1
expect_ok cbrfs vault associate t1 --path "$T/s3" --name s3
expect_ok cbrfs vault associate t2 --path "$S2" --name s2
expect_ok cbrfs backup create t1 --name a1
expect_ok cbrfs backup create t2 --name c1
expect_exit 2 'BackupService.6200' -- cbrfs restore t2 nosuch --to "$T/none"

# The filters below split the tasks at a second boundary.
t0=$(date +%s)
wait_for 3 "the next second" sh -c "[ \$(date +%s) != $t0 ]"
since=$(date -u +%Y-%m-%dT%H:%M:%SZ)

expect_exit 2 'already exists' -- cbrfs backup create t1 --name a1
expect_ok cbrfs backup create t1 --name a2
expect_ok cbrfs restore t1 a2 --to "$T/r2"
expect_ok cbrfs backup delete t1 a1
expect_ok cbrfs prune t1
expect_ok cbrfs vault dissociate t1 s3 --force
expect_ok cbrfs vault delete t2 --force

# ids VAULT TYPE STATUS SINCE: `task list` with those filters ('' for none),
# as "type:vault:backup:status" lines, newest first.
ids() {
	local args=()
	[ -n "$1" ] && args+=(--vault "$1")
	[ -n "$2" ] && args+=(--type "$2")
	[ -n "$3" ] && args+=(--status "$3")
	[ -n "$4" ] && args+=(--since "$4")
	cbrfs task list "${args[@]}" --json | json_get /dev/stdin '" ".join("%s:%s:%s:%s" % (t["type"], t["vault"], t["backup"] or t["resource"] or "-", t["status"]) for t in j)'
}
expect_eq "every task, newest first" "$(ids '' '' '' '')" \
	"delete_vault:t2:-:success remove_resource:t1:s3:success prune:t1:-:success delete_backup:t1:a1:success restore:t1:a2:success backup:t1:a2:success backup:t1:-:failed restore:t2:nosuch:failed backup:t2:c1:success backup:t1:a1:success"
expect_eq "--vault t1" "$(ids t1 '' '' '')" \
	"remove_resource:t1:s3:success prune:t1:-:success delete_backup:t1:a1:success restore:t1:a2:success backup:t1:a2:success backup:t1:-:failed backup:t1:a1:success"
expect_eq "--type backup" "$(ids '' backup '' '')" \
	"backup:t1:a2:success backup:t1:-:failed backup:t2:c1:success backup:t1:a1:success"
expect_eq "--status failed" "$(ids '' '' failed '')" "backup:t1:-:failed restore:t2:nosuch:failed"
expect_eq "--since $since" "$(ids '' '' '' "$since")" \
	"delete_vault:t2:-:success remove_resource:t1:s3:success prune:t1:-:success delete_backup:t1:a1:success restore:t1:a2:success backup:t1:a2:success backup:t1:-:failed"
expect_eq "all four filters" "$(ids t1 backup success "$since")" "backup:t1:a2:success"
expect_eq "--type restore --vault t2" "$(ids t2 restore '' '')" "restore:t2:nosuch:failed"
expect_eq "a filter that matches nothing" "$(ids t1 capacity '' '')" ""
expect_eq "--since a date" "$(ids '' '' '' 2099-01-01)" ""
expect_ok cbrfs task list --status skipped
expect_eq "the text listing of nothing is the header" "$(wc -l <<<"$OUT")" 1

note "task show"
cbrfs task list --json >"$T/all.json"
id=$(json_get "$T/all.json" '[t["id"] for t in j if t["type"] == "backup" and t["status"] == "failed"][0]')
expect_ok cbrfs task show "$id"
matches '^type: +backup$' "$OUT" && matches '^status: +failed' "$OUT" && matches '^vault: +t1$' "$OUT" &&
	matches '^message: .*already exists' "$OUT" && pass "task show of the refused backup" || fail "task show: $OUT"
expect_ok cbrfs task show "$id" --json
expect_eq "task show --json is the listed task" "$(json_get "$T/.out" 'j')" "$(json_get "$T/all.json" "[t for t in j if t['id'] == '$id'][0]")"
expect_eq "a finished task has an end time and progress 100 when it succeeded" \
	"$(json_get "$T/all.json" '[(t["ended"] is not None, t["progress"]) for t in j if t["type"] == "restore"]')" '[[true, 100], [true, 0]]'
expect_exit 2 'task "nope" does not exist' -- cbrfs task show nope
expect_exit 2 'task type "bogus" is invalid: it is one of backup, restore' -- cbrfs task list --type bogus
expect_exit 2 'task status "done" is invalid: it is one of running, success, failed, skipped' -- cbrfs task list --status done
expect_exit 2 'time "yesterday" is invalid' -- cbrfs task list --since yesterday

note "a backup killed with SIGKILL shows as failed"
random_file "$S1/big" $((300 << 20))
"$CBRFS_BIN" --store "$STORE" backup create t1 --name killed >"$T/killed.out" 2>&1 &
pid=$!
running() { cbrfs task list --status running --json | json_get /dev/stdin '[t["backup"] for t in j]' | grep -q killed; }
wait_for 30 "the backup task to be running" running
kill -9 "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
rc=$?
[ "$rc" = 137 ] || die "the backup was not killed while running (exit $rc): $(cat "$T/killed.out")"
expect_eq "running tasks after the kill" "$(cbrfs task list --status running --json | json_get /dev/stdin 'len(j)')" 0
cbrfs task list --type backup --status failed --json >"$T/killed.json"
expect_eq "the killed backup's task" \
	"$(json_get "$T/killed.json" '[(t["backup"], "ended before the task did" in t["message"]) for t in j if t["backup"] == "killed"]')" \
	'[["killed", true]]'
kid=$(json_get "$T/killed.json" '[t["id"] for t in j if t["backup"] == "killed"][0]')
expect_ok cbrfs task show "$kid"
matches '^status: +failed' "$OUT" && pass "task show says failed" || fail "task show of the killed backup: $OUT"
expect_eq "backups of t1 after the kill" "$(cbrfs backup list t1 --json | json_get /dev/stdin '[b["name"] for b in j]')" '["a2"]'
expect_ok cbrfs backup create t1 --name after
expect_eq "the next backup's task" "$(ids t1 backup '' '' | cut -d' ' -f1-2)" "backup:t1:after:success backup:t1:killed:failed"
