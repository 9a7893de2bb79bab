#!/usr/bin/env bash
# tests/policy.sh: backup policies over a simulated month. `policy run-due
# --now T` at every time point of a two-rule schedule (daily 01:00 and 13:00,
# Sundays 19:00, at UTC+08:00) from 2024-12-20 to 2025-01-16 (across a month
# and a year end), a file changed before each pass. After every pass the
# automatic backups are exactly what an independent model of the retention
# (keep-last 3, keep-daily 5, keep-weekly 2 at UTC+08:00) keeps; manual
# backups stay; the task log has every backup, deletion and prune. Then: a
# pass with nothing due, a disabled policy, a time point while the vault's
# backup lock is held (skipped), missed points, --full-every (also when
# retention has deleted the last full backup), every validation error, the
# 32-policy quota, and deleting a policy (its backups stay).
. "$(dirname "$0")/lib.sh"

S=$T/src
mkdir -p "$S/d"
for i in 1 2 3; do printf 'steady %d\n' "$i" >"$S/d/f$i"; done
random_file "$S/blob" 200000

expect_ok cbrfs vault create v --type filesystem --capacity 10
expect_ok cbrfs vault associate v --path "$S" --name src
note "two manual backups, before the policy"
printf 'manual 1\n' >"$S/stamp"
expect_ok cbrfs backup create v --name man1
printf 'manual 2\n' >"$S/stamp"
expect_ok cbrfs backup create v

expect_ok cbrfs policy create p1 --schedule 'FREQ=DAILY;BYHOUR=1,13' \
	--schedule 'FREQ=WEEKLY;BYDAY=SU;BYHOUR=19' \
	--keep-last 3 --keep-daily 5 --keep-weekly 2 --timezone UTC+08:00
expect_ok cbrfs policy apply p1 v
expect_ok cbrfs policy show p1 --json
expect_eq "policy p1 applied to" "$(json_get "$T/.out" 'j["vaults"]')" '["v"]'
expect_eq "policy p1 enabled" "$(json_get "$T/.out" 'j["enabled"]')" True

# The schedule's time points in UTC, computed here from the rules.
python3 - >"$T/points" <<'EOF'
import datetime as dt
tz = dt.timezone(dt.timedelta(hours=8))
day = dt.date(2024, 12, 20)
pts = []
while day <= dt.date(2025, 1, 16):
    hours = [1, 13] + ([19] if day.weekday() == 6 else [])
    for h in hours:
        t = dt.datetime(day.year, day.month, day.day, h, tzinfo=tz)
        pts.append(t.astimezone(dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
    day += dt.timedelta(days=1)
print('\n'.join(sorted(pts)))
EOF
npoints=$(wc -l <"$T/points")
note "$npoints time points"

# The model of the retention: after a pass, the automatic backups are what
# keep-last 3 + keep-daily 5 + keep-weekly 2 (periods at UTC+08:00, counted
# over periods that have backups, newest backup of each) keep of the
# previous pass's automatic backups plus the new one. It reads pass i's
# report ($T/pass/i.rep), exit code (i.rc) and backup list (i.list; 0.list
# is before the first pass), prints a FAIL line per pass that differs, and
# writes what was made, what expired and how many passes expired backups.
cat >"$T/model.py" <<'EOF2'
import datetime as dt, json, re, sys
d, points, name = sys.argv[1], open(sys.argv[2]).read().split(), sys.argv[3]
tz = dt.timezone(dt.timedelta(hours=8))
def load(f): return json.load(open("%s/%s" % (d, f)))
def autos(l): return {b["name"]: b["started"] for b in l if b["origin"] == "policy"}
def manuals(l): return sorted(b["name"] for b in l if b["origin"] != "policy")
made, expired, expiring, bad = [], [], 0, 0
prev = load("0.list")
for i, now in enumerate(points, 1):
    rc, rep, cur = open("%s/%d.rc" % (d, i)).read().strip(), load("%d.rep" % i), load("%d.list" % i)
    problems = [] if rc == "0" else ["exit %s" % rc]
    p, c = autos(prev), autos(cur)
    new = [n for n in c if n not in p]
    if len(rep) != 1 or rep[0]["point"] != now or rep[0]["outcome"] != "backed up %s" % (new[0] if len(new) == 1 else "?"):
        problems.append("report %s, new backups %s" % (rep, new))
    if len(new) == 1:
        b = [x for x in cur if x["name"] == new[0]][0]
        if b["started"] != now or b["policy"] != "p1" or not re.fullmatch(r"autobk_[0-9a-z]{4}", b["name"]):
            problems.append("new backup %s" % b)
        p[new[0]] = c[new[0]]
        made.append("%s %s" % (new[0], now))
    order = sorted(p, key=lambda n: (p[n], n), reverse=True)
    keep = set(order[:3])
    def local(n): return dt.datetime.fromisoformat(p[n].replace("Z", "+00:00")).astimezone(tz).date()
    for key, count in ((lambda x: x, 5), (lambda x: x.isocalendar()[:2], 2)):
        seen = []
        for n in order:
            k = key(local(n))
            if k not in seen:
                if len(seen) == count:
                    break
                seen.append(k)
                keep.add(n)
    if set(c) != keep:
        problems.append("kept %s, expected %s" % (sorted(c.items(), key=lambda x: x[1]), sorted(keep, key=lambda n: p[n])))
    gone = sorted(set(p) - keep)
    if rep and sorted(rep[0]["expired"]) != gone:
        problems.append("report says expired %s, expected %s" % (rep[0]["expired"], gone))
    if manuals(prev) != manuals(cur):
        problems.append("manual backups changed: %s -> %s" % (manuals(prev), manuals(cur)))
    if problems:
        bad += 1
        print("FAIL: %s: pass %d at %s: %s" % (name, i, now, "; ".join(problems)))
    if rep and rep[0]["expired"]:
        expiring += 1
        expired.extend(rep[0]["expired"])
    prev = cur
open("%s/made" % d, "w").write("".join(m + "\n" for m in sorted(made)))
open("%s/expired" % d, "w").write("".join(e + "\n" for e in sorted(expired)))
open("%s/expiring" % d, "w").write("%d\n" % expiring)
if not bad:
    print("PASS: %s: all %d passes made one backup dated at the point and kept what the model keeps" % (name, len(points)))
EOF2

note "the month: run-due at each time point"
mkdir "$T/pass"
cbrfs backup list v --json >"$T/pass/0.list"
manual_before=$(json_get "$T/pass/0.list" 'sorted(b["name"] for b in j)')
i=0
for now in $(cat "$T/points"); do
	i=$((i + 1))
	printf 'pass %d at %s\n' "$i" "$now" >"$S/stamp"
	cbrfs policy run-due --now "$now" --json >"$T/pass/$i.rep" 2>"$T/pass/$i.err"
	echo $? >"$T/pass/$i.rc"
	cbrfs backup list v --json >"$T/pass/$i.list"
done
python3 "$T/model.py" "$T/pass" "$T/points" "$TEST_NAME" >"$T/model.out" 2>&1
cat "$T/model.out"
grep -q '^[PF]A[SI][SL]: ' "$T/model.out" || fail "the model did not run: $(cat "$T/model.out")"
FAILS=$((FAILS + $(grep -c '^FAIL: ' "$T/model.out")))
cp "$T/pass/$i.list" "$T/prev.json"
expiring_passes=$(cat "$T/pass/expiring")
cp "$T/pass/made" "$T/made"
cp "$T/pass/expired" "$T/expired"
nmade=$(wc -l <"$T/made")
expect_eq "automatic backups made" "$nmade" "$npoints"
nexpired=$(wc -l <"$T/expired")
[ "$nexpired" -ge $((npoints - 12)) ] && pass "$nexpired backups expired" || fail "only $nexpired backups expired"
expect_eq "manual backups after the month" \
	"$(json_get "$T/prev.json" 'sorted(b["name"] for b in j if b["origin"] == "manual")')" "$manual_before"
expect_ok cbrfs check --read-data

# Checked before any task dated now: a new task drops the records more than
# 30 days older than itself.
note "the task log of the month"
cbrfs task list --vault v --since 2024-12-01 --json >"$T/tasks.json"
tl() { json_get "$T/tasks.json" "$1"; }
expect_eq "backup tasks: one per automatic backup, dated at its point, successful" \
	"$(tl 'sorted(t["backup"] + " " + t["started"] for t in j if t["type"] == "backup" and t["status"] == "success" and t["backup"].startswith("autobk_"))')" \
	"$(sort "$T/made" | python3 -c 'import sys, json; print(json.dumps([l.strip() for l in sys.stdin]))')"
expect_eq "delete tasks: one per expired backup" \
	"$(tl 'sorted(t["backup"] for t in j if t["type"] == "delete_backup" and t["status"] == "success")')" \
	"$(sort "$T/expired" | python3 -c 'import sys, json; print(json.dumps([l.strip() for l in sys.stdin]))')"
expect_eq "prune tasks: one per pass that expired backups" \
	"$(tl 'len([t for t in j if t["type"] == "prune" and t["status"] == "success"])')" "$expiring_passes"
expect_eq "retention tasks" "$(tl 'len([t for t in j if t["type"] == "retention"])')" "$expiring_passes"
expect_eq "no failed or skipped task" "$(tl '[t["id"] for t in j if t["status"] not in ("success",)]')" "[]"

note "each surviving backup holds the tree of its time point"
json_get "$T/prev.json" '"\n".join(b["name"] + " " + b["started"] for b in j if b["origin"] == "policy")' >"$T/survivors"
while read -r name started; do
	n=$(grep -nx -- "$started" "$T/points" | cut -d: -f1)
	if ! cbrfs restore v "$name" --to "$T/r-$name" >/dev/null 2>"$T/r.err"; then
		fail "restore $name: $(cat "$T/r.err")"
		continue
	fi
	expect_eq "stamp in $name" "$(cat "$T/r-$name/stamp")" "pass $n at $started"
	cmp -s "$S/blob" "$T/r-$name/blob" || fail "$name: blob differs"
done <"$T/survivors"
expect_ok cbrfs restore v man1 --to "$T/r-man1"
expect_eq "man1 still holds its tree" "$(cat "$T/r-man1/stamp")" "manual 1"

last=$(tail -n 1 "$T/points")
count_tasks() { cbrfs task list --json | json_get /dev/stdin 'len(j)'; }
count_backups() { cbrfs backup list v --json | json_get /dev/stdin 'len(j)'; }

note "a pass when nothing is due does nothing"
tasks_before=$(count_tasks)
backups_before=$(count_backups)
expect_ok cbrfs policy run-due --now 2025-01-16T06:00:00Z
matches '^nothing due' "$OUT" && pass "run-due says nothing is due" || fail "run-due between points: $OUT"
expect_ok cbrfs policy run-due --now 2025-01-16T06:00:00Z --json
expect_eq "report of a pass with nothing due" "$OUT" "[]"
# Again at the last point: it ran already.
expect_ok cbrfs policy run-due --now "$last" --json
expect_eq "report of a pass at a point already run" "$OUT" "[]"
expect_eq "tasks after passes with nothing due" "$(count_tasks)" "$tasks_before"
expect_eq "backups after passes with nothing due" "$(count_backups)" "$backups_before"

note "a disabled policy makes no backups"
expect_ok cbrfs policy update p1 --disabled
expect_ok cbrfs policy show p1 --json
expect_eq "p1 enabled after --disabled" "$(json_get "$T/.out" 'j["enabled"]')" False
expect_ok cbrfs policy run-due --now 2025-01-16T17:00:00Z --json
expect_eq "report of a disabled policy's pass" "$OUT" "[]"
expect_ok cbrfs policy run-due --now 2025-01-17T05:00:00Z --json
expect_eq "backups while disabled" "$(count_backups)" "$backups_before"
expect_eq "tasks while disabled" "$(count_tasks)" "$tasks_before"
expect_ok cbrfs policy update p1 --enable
expect_ok cbrfs policy run-due --now 2025-01-17T17:00:00Z --json
expect_eq "after --enable, the next point backs up" \
	"$(json_get "$T/.out" '[(r["point"], r["outcome"].split()[0]) for r in j]')" '[["2025-01-17T17:00:00Z", "backed"]]'
expect_eq "no missed points reported for the disabled time" \
	"$(cbrfs task list --vault v --status skipped --json | json_get /dev/stdin 'len(j)')" 0

note "a time point while the vault's backup lock is held is skipped"
# The process holding the lock is the sleep itself (flock(1) would leave its
# child holding it when killed).
bash -c 'exec 9>>"$1" && flock -x 9 && exec sleep 600' _ "$STORE/vaults/v/backup.lock" >/dev/null 2>&1 &
holder=$!
on_exit "kill $holder"
wait_for 10 "the shell to hold backup.lock" sh -c "! flock -n '$STORE/vaults/v/backup.lock' true"
backups_before=$(count_backups)
expect_ok cbrfs policy run-due --now 2025-01-18T05:00:00Z --json
expect_eq "outcome while the lock is held" "$(json_get "$T/.out" 'j[0]["outcome"].split(":")[0]')" skipped
matches 'still running' "$OUT" && pass "the report says the previous backup still runs" || fail "report: $OUT"
expect_eq "backups after the skipped point" "$(count_backups)" "$backups_before"
cbrfs task list --vault v --status skipped --json >"$T/skipped.json"
expect_eq "the skipped point in the task log" \
	"$(json_get "$T/skipped.json" '[(t["type"], t["started"], "still running" in t["message"]) for t in j]')" \
	'[["backup", "2025-01-18T05:00:00Z", true]]'
expect_exit 1 'BackupService.6125' -- cbrfs prune v
kill "$holder"
wait "$holder" 2>/dev/null
expect_ok cbrfs policy run-due --now 2025-01-18T17:00:00Z --json
expect_eq "the next point after the lock is released" \
	"$(json_get "$T/.out" '[(r["point"], r["outcome"].split()[0]) for r in j]')" '[["2025-01-18T17:00:00Z", "backed"]]'

note "points nobody ran a pass for are recorded as missed; only the newest runs"
expect_ok cbrfs policy run-due --now 2025-01-20T06:00:00Z --json
expect_eq "the pass after a gap runs the newest point" \
	"$(json_get "$T/.out" '[r["point"] for r in j]')" '["2025-01-20T05:00:00Z"]'
expect_eq "missed points" \
	"$(cbrfs task list --vault v --status skipped --since 2025-01-19 --json | json_get /dev/stdin 'sorted(t["started"] for t in j)')" \
	'["2025-01-19T05:00:00Z", "2025-01-19T11:00:00Z", "2025-01-19T17:00:00Z"]'

# steady_vault VAULT SRC POLICY KEEP_LAST FULL_EVERY: vault VAULT on
# $T/SRC (made, holding the 7-byte file "steady"), under a new daily 03:00
# policy POLICY with those --keep-last and --full-every.
steady_vault() {
	mkdir -p "$T/$2"
	printf 'steady\n' >"$T/$2/steady"
	expect_ok cbrfs vault create "$1" --type filesystem --capacity 10
	expect_ok cbrfs vault associate "$1" --path "$T/$2" --name "$2"
	expect_ok cbrfs policy create "$3" --schedule 'FREQ=DAILY;BYHOUR=3' --keep-last "$4" --full-every "$5"
	expect_ok cbrfs policy apply "$3" "$1"
}

note "--full-every 2: every third backup is full"
steady_vault vf fsrc pf 20 2
types=()
for d in 01 02 03 04 05 06 07; do
	printf 'day %s\n' "$d" >"$T/fsrc/day"
	run cbrfs policy run-due --now "2025-03-${d}T03:00:00Z" --json
	[ "$RC" = 0 ] || fail "run-due for vf on day $d: $ERR"
done
expect_eq "types of vf's backups, oldest first" \
	"$(cbrfs backup list vf --json | json_get /dev/stdin '[b["type"] for b in sorted(j, key=lambda b: b["started"])]')" \
	'["full", "incremental", "incremental", "full", "incremental", "incremental", "full"]'
# A full backup reads steady (7 bytes) again; an incremental only day (7).
# (files_unchanged no longer tells: a full one counts steady unchanged too.)
expect_eq "bytes vf's backups read (a full backup trusts no file)" \
	"$(cbrfs backup list vf --json | json_get /dev/stdin '[b["stats"]["bytes_read"] for b in sorted(j, key=lambda b: b["started"])]')" \
	'[14, 7, 7, 14, 7, 7, 14]'

note "--full-every 3 with keep-last 2: still every fourth backup full, though the full one expires"
steady_vault vg gsrc pg 2 3
: >"$T/gtypes"
for d in 01 02 03 04 05 06 07 08 09; do
	printf 'day %s\n' "$d" >"$T/gsrc/day"
	run cbrfs policy run-due --now "2025-03-${d}T03:00:00Z" --json
	[ "$RC" = 0 ] || fail "run-due for vg on day $d: $ERR"
	b=$(json_get "$T/.out" '[r["outcome"].split()[-1] for r in j if r["vault"] == "vg"][0]')
	cbrfs backup show vg "$b" --json | json_get /dev/stdin 'j["type"]' >>"$T/gtypes"
done
expect_eq "types of vg's backups as they were made" "$(tr '\n' ' ' <"$T/gtypes")" \
	"full incremental incremental incremental full incremental incremental incremental full "

note "policy validation: exit 2 and a message naming the rule"
pc() { cbrfs policy create "$@"; }
D='FREQ=DAILY;BYHOUR=1'
expect_exit 2 'BackupService.9900: schedule "FREQ=HOURLY;BYHOUR=1": FREQ must be DAILY or WEEKLY' -- pc x --schedule 'FREQ=HOURLY;BYHOUR=1' --keep-last 3
expect_exit 2 'schedule "FREQ=DAILY;BYHOUR=1;COUNT=3": unknown key COUNT' -- pc x --schedule 'FREQ=DAILY;BYHOUR=1;COUNT=3' --keep-last 3
expect_exit 2 'schedule "FREQ=DAILY;BYHOUR=6;BYMINUTE=0,30": time points 06:00 and 06:30 are 30 minutes apart: time points must be at least one hour apart' -- \
	pc x --schedule 'FREQ=DAILY;BYHOUR=6;BYMINUTE=0,30' --keep-last 3
expect_exit 2 'schedules "FREQ=DAILY;BYHOUR=23;BYMINUTE=30" and "FREQ=DAILY;BYHOUR=0;BYMINUTE=10": time points 23:30 and 00:10 the next day are 40 minutes apart' -- \
	pc x --schedule 'FREQ=DAILY;BYHOUR=23;BYMINUTE=30' --schedule 'FREQ=DAILY;BYHOUR=0;BYMINUTE=10' --keep-last 3
expect_exit 2 'INTERVAL=31 is out of range: a daily schedule repeats every 1-30 days' -- pc x --schedule 'FREQ=DAILY;INTERVAL=31;BYHOUR=1' --keep-last 3
expect_exit 2 'BackupService.9900: keep-last 1 is out of range: keep the last 2-99999' -- pc x --schedule "$D" --keep-last 1
expect_exit 2 'BackupService.9900: keep-days 1 is out of range: keep backups for days 2-99999' -- pc x --schedule "$D" --keep-days 1
expect_exit 2 'long-term retention .* goes with keep-last or keep-forever, not with keep-days' -- \
	pc x --schedule "$D" --keep-days 30 --keep-weekly 4 --timezone UTC+08:00
expect_exit 2 'long-term retention .* needs a time zone' -- pc x --schedule "$D" --keep-last 5 --keep-daily 3
expect_exit 2 'keep-monthly 101 is out of range: a long-term count is 0-100' -- pc x --schedule "$D" --keep-last 5 --keep-monthly 101 --timezone UTC
expect_exit 2 'time zone "Asia/Atlantis" is unknown' -- pc x --schedule "$D" --keep-last 5 --keep-daily 3 --timezone Asia/Atlantis
expect_exit 2 'time zone "UTC\+8:0" is invalid' -- pc x --schedule "$D" --keep-last 5 --keep-daily 3 --timezone UTC+8:0
expect_exit 2 'BackupService.9900: full-every 101 is out of range' -- pc x --schedule "$D" --keep-last 3 --full-every 101
expect_exit 2 'full-every -2 is out of range' -- pc x --schedule "$D" --keep-last 3 --full-every -2
expect_exit 2 'policy name "bad name" is invalid' -- pc 'bad name' --schedule "$D" --keep-last 3
expect_exit 2 'at least one --schedule' -- pc x --keep-last 3
expect_exit 2 'keep' -- pc x --schedule "$D"
expect_exit 2 'policy "p1" already exists' -- pc p1 --schedule "$D" --keep-last 3
expect_exit 2 'BackupService.6000: policy "x" does not exist' -- cbrfs policy show x
expect_ok cbrfs policy list --json
expect_eq "policies after the refused creations" "$(json_get "$T/.out" 'sorted(p["name"] for p in j)')" '["p1", "pf", "pg"]'
note "an update that breaks a rule is refused and changes nothing"
cbrfs policy show p1 --json >"$T/p1.before"
expect_exit 2 'keep-last 1 is out of range' -- cbrfs policy update p1 --keep-last 1
expect_exit 2 'INTERVAL=31 is out of range' -- cbrfs policy update p1 --schedule 'FREQ=DAILY;INTERVAL=31;BYHOUR=1'
expect_exit 2 'not with keep-days' -- cbrfs policy update p1 --keep-days 30
expect_exit 2 'full-every 101 is out of range' -- cbrfs policy update p1 --full-every 101
cbrfs policy show p1 --json >"$T/p1.after"
cmp -s "$T/p1.before" "$T/p1.after" && pass "p1 unchanged by the refused updates" || fail "p1 changed: $(diff "$T/p1.before" "$T/p1.after")"

note "a vault takes one policy; unknown policies are BackupService.6000"
expect_exit 2 'vault v already has policy p1: a vault takes one policy' -- cbrfs policy apply pf v
expect_exit 2 'BackupService.6000: policy "nope" does not exist' -- cbrfs policy apply nope v
expect_exit 2 'BackupService.6000: policy "nope" does not exist' -- cbrfs policy update nope --disabled
expect_exit 2 'BackupService.6000: policy "nope" does not exist' -- cbrfs policy delete nope
expect_exit 2 'BackupService.6105' -- cbrfs policy apply p1 novault
expect_ok cbrfs vault create bare --type filesystem --capacity 10
expect_exit 2 'BackupService.6000: vault bare has no policy' -- cbrfs policy remove bare

note "at most 32 policies: the 33rd is BackupService.6001"
for i in $(seq 4 32); do
	cbrfs policy create "q$i" --schedule "$D" --keep-last 3 >/dev/null || fail "policy q$i"
done
expect_eq "policies" "$(cbrfs policy list --json | json_get /dev/stdin 'len(j)')" 32
expect_exit 2 'BackupService.6001: there are 32 policies' -- pc q33 --schedule "$D" --keep-last 3
expect_exit 2 'BackupService.6001' -- pc --schedule "$D" --keep-last 3
expect_ok cbrfs policy delete q32
expect_ok pc q33 --schedule "$D" --keep-last 3
expect_eq "policies after delete + create" "$(cbrfs policy list --json | json_get /dev/stdin 'len(j)')" 32

note "deleting a policy keeps its backups"
cbrfs backup list v --json | json_get /dev/stdin 'sorted(b["name"] for b in j)' >"$T/before-delete"
expect_ok cbrfs policy delete p1
matches 'its backups are kept' "$OUT" && pass "delete says the backups are kept" || fail "policy delete: $OUT"
cbrfs backup list v --json | json_get /dev/stdin 'sorted(b["name"] for b in j)' >"$T/after-delete"
cmp -s "$T/before-delete" "$T/after-delete" && pass "v's backups are all there after its policy was deleted" || fail "backups changed: $(diff "$T/before-delete" "$T/after-delete")"
grep -q autobk_ "$T/after-delete" && pass "automatic backups among them" || fail "no automatic backup left: $(cat "$T/after-delete")"
expect_ok cbrfs vault show v --json
expect_eq "v's policy after delete" "$(json_get "$T/.out" 'j["policy"]')" None
expect_ok cbrfs policy run-due --now 2025-02-01T05:00:00Z --json
expect_eq "vaults run for after the delete" "$(json_get "$T/.out" '[r["vault"] for r in j]')" '[]'
expect_ok cbrfs check
