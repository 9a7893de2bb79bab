#!/usr/bin/env bash
# tests/capacity.sh: vault capacity. A nearly full vault is simulated with a
# sparse stand-in pack (a vault is at least 10 GB). A backup that runs out
# of capacity fails with BackupService.6114 and leaves the vault as it was
# (no backup, its packs gone, used bytes as before, earlier backups
# restore, the failure in the task log); a full vault refuses a backup at
# once; capacity cannot shrink; auto-expand grows a full vault to 1.25x and
# records a capacity task; crossing the usage threshold records one; vault
# show reports capacity, used, free and the bytes each backup alone holds,
# which deleting and pruning that backup gives back.
. "$(dirname "$0")/lib.sh"

MB=$((1 << 20))
GIB=$((1 << 30))
vjson() { cbrfs vault show "$1" --json | json_get /dev/stdin "$2"; }
used() { vjson "$1" 'j["used_bytes"]'; }
packs() { find "$STORE/vaults/$1/packs" -name '*.pack' | wc -l; }
# standin VAULT BYTES: a sparse pack file of BYTES, so that the vault seems
# to hold that much more.
standin() {
	mkdir -p "$STORE/vaults/$1/packs/00"
	truncate -s "$2" "$STORE/vaults/$1/packs/00/00000000000000000000000000000000.pack"
}
# ten_gb_vault VAULT SRC: a 10 GB filesystem vault VAULT protecting the
# directory $T/SRC (made here), as resource SRC.
ten_gb_vault() {
	mkdir -p "$T/$2"
	expect_ok cbrfs vault create "$1" --type filesystem --capacity 10GB
	expect_ok cbrfs vault associate "$1" --path "$T/$2" --name "$2"
}
no_standin() {
	rm -f "$STORE/vaults/$1/packs/00/00000000000000000000000000000000.pack"
}

note "a backup that runs out of capacity"
S=$T/src
ten_gb_vault cap src
random_file "$S/first" $((1 * MB))
expect_ok cbrfs backup create cap --name b1
cp -a "$S" "$T/ref1"
u=$(used cap)
# 40 MiB left; then 100 MB of random data to back up.
standin cap $((10 * GIB - u - 40 * MB))
u_full=$(used cap)
expect_eq "free bytes before the backup" "$(vjson cap 'j["free_bytes"]')" $((40 * MB))
packs_before=$(packs cap)
cbrfs task list --json | json_get /dev/stdin 'sorted(t["id"] for t in j)' >"$T/tasks.before"
random_file "$S/big" $((100 * MB))
expect_exit 1 "BackupService.6114: vault cap: the backup would exceed the vault's capacity" -- cbrfs backup create cap --name b2
expect_eq "backups after the failed backup" "$(cbrfs backup list cap --json | json_get /dev/stdin '[b["name"] for b in j]')" '["b1"]'
expect_eq "used bytes after the failed backup" "$(used cap)" "$u_full"
expect_eq "packs after the failed backup" "$(packs cap)" "$packs_before"
leftovers=$(find "$STORE" -name '.tmp-*')
[ -z "$leftovers" ] && pass "no temporary file left" || fail "temporary files left: $leftovers"
cbrfs task list --vault cap --type backup --status failed --json >"$T/failed.json"
expect_eq "the failure in the task log" \
	"$(json_get "$T/failed.json" '[(t["backup"], t["error_code"], "capacity" in t["message"]) for t in j]')" \
	'[["b2", "BackupService.6114", true]]'
expect_ok cbrfs task show "$(json_get "$T/failed.json" 'j[0]["id"]')"
matches '^code: +BackupService.6114' "$OUT" && pass "task show gives the code" || fail "task show: $OUT"
expect_ok cbrfs restore cap b1 --to "$T/r1"
out=$(treecmp "$T/ref1" "$T/r1" 2>&1) && pass "b1 restores after the failed backup" || fail "b1: $out"

note "a full vault refuses a backup at once"
standin cap $((10 * GIB))
expect_exit 1 'BackupService.6114: vault cap is full' -- cbrfs backup create cap --name b3
expect_eq "refusals in the task log" \
	"$(cbrfs task list --vault cap --status failed --json | json_get /dev/stdin 'len([t for t in j if t["error_code"] == "BackupService.6114"])')" 2
no_standin cap
rm "$S/big"
expect_ok cbrfs check --read-data

note "capacity can grow, never shrink"
expect_ok cbrfs vault create grow --type filesystem --capacity 20GB
expect_exit 2 'BackupService.6101: vault grow: capacity 15 GB is smaller than the current 20 GB' -- cbrfs vault update grow --capacity 15GB
expect_exit 2 'BackupService.6101' -- cbrfs vault update grow --capacity 5GB
expect_eq "capacity after the refusals" "$(vjson grow 'j["capacity_gb"]')" 20
expect_ok cbrfs vault update grow --capacity 30GB
expect_eq "capacity after growing" "$(vjson grow 'j["capacity_gb"]')" 30
expect_exit 2 'threshold 0% is out of range' -- cbrfs vault update grow --threshold 0
expect_exit 2 'threshold 101% is out of range' -- cbrfs vault update grow --threshold 101
expect_eq "threshold after the refusals" "$(vjson grow 'j["threshold_percent"]')" 80

note "auto-expand: a full vault grows to 1.25x before the backup"
A=$T/asrc
ten_gb_vault ax asrc
random_file "$A/f" $((2 * MB))
expect_ok cbrfs vault update ax --auto-expand
expect_eq "auto_expand" "$(vjson ax 'j["auto_expand"]')" True
standin ax $((10 * GIB))
expect_ok cbrfs backup create ax --name a1
expect_eq "capacity after auto-expand" "$(vjson ax 'j["capacity_gb"]')" 13
cbrfs task list --vault ax --type capacity --json >"$T/cap.json"
expect_eq "capacity tasks" "$(json_get "$T/cap.json" '[(t["status"], "from 10 GB to 13 GB" in t["message"]) for t in j]')" '[["success", true]]'

note "auto-expand: a backup that fills the vault, then the vault grows"
Y=$T/ysrc
ten_gb_vault ay ysrc
expect_ok cbrfs vault update ay --auto-expand --threshold 100
standin ay $((10 * GIB - 1 * MB))
random_file "$Y/g" $((30 * MB))
expect_ok cbrfs backup create ay --name y1
expect_eq "capacity after the backup filled it" "$(vjson ay 'j["capacity_gb"]')" 13
expect_eq "capacity tasks of ay" \
	"$(cbrfs task list --vault ay --type capacity --json | json_get /dev/stdin '["from 10 GB to 13 GB" in t["message"] for t in j]')" '[true]'
expect_ok cbrfs vault update ay --no-auto-expand
expect_eq "auto_expand after --no-auto-expand" "$(vjson ay 'j["auto_expand"]')" False
no_standin ax
no_standin ay

note "crossing the usage threshold records a capacity task"
H=$T/hsrc
ten_gb_vault th hsrc
random_file "$H/a" $((1 * MB))
expect_ok cbrfs backup create th --name h1
u=$(used th)
# 8 GiB is 80 %: 5 MiB below it.
standin th $((8 * GIB - u - 5 * MB))
random_file "$H/b" $((3 * MB))
expect_ok cbrfs backup create th --name h2
expect_eq "capacity tasks below the threshold" "$(cbrfs task list --vault th --type capacity --json | json_get /dev/stdin 'len(j)')" 0
random_file "$H/c" $((4 * MB))
expect_ok cbrfs backup create th --name h3
cbrfs task list --vault th --type capacity --json >"$T/th.json"
expect_eq "capacity task on crossing 80%" \
	"$(json_get "$T/th.json" '[(t["status"], "past its 80% threshold" in t["message"]) for t in j]')" '[["success", true]]'
random_file "$H/d" $((1 * MB))
expect_ok cbrfs backup create th --name h4
expect_eq "no second task while above the threshold" "$(cbrfs task list --vault th --type capacity --json | json_get /dev/stdin 'len(j)')" 1
expect_ok cbrfs vault update th --threshold 90
expect_eq "threshold" "$(vjson th 'j["threshold_percent"]')" 90
no_standin th
u=$(used th)
standin th $((9 * GIB - u - 5 * MB))
random_file "$H/e" $((8 * MB))
expect_ok cbrfs backup create th --name h5
expect_eq "capacity task on crossing 90%" \
	"$(cbrfs task list --vault th --type capacity --json | json_get /dev/stdin '["past its 90% threshold" in t["message"] for t in j]')" '[true, false]'
no_standin th

note "vault show: capacity, used, free, and the bytes each backup alone holds"
E=$T/esrc
ten_gb_vault ex esrc
random_file "$E/a" $((4 * MB))
expect_ok cbrfs backup create ex --name e1
random_file "$E/b" $((6 * MB))
expect_ok cbrfs backup create ex --name e2
rm "$E/b"
random_file "$E/c" $((3 * MB))
expect_ok cbrfs backup create ex --name e3
expect_ok cbrfs vault show ex
printf '%s\n' "$OUT" >"$T/show.txt"
uex=$(used ex)
expect_eq "used + free = capacity" "$(vjson ex 'j["used_bytes"] + j["free_bytes"]')" $((10 * GIB))
matches '^capacity: +10.0 GiB$' "$OUT" && pass "vault show gives the capacity" || fail "no capacity line: $OUT"
matches '^used: +1[0-9]\.[0-9] MiB \(0\.1[0-9]%\)$' "$OUT" && pass "vault show gives the used bytes and share" || fail "no used line: $OUT"
matches '^free: +[0-9.]+ GiB$' "$OUT" && pass "vault show gives the free bytes" || fail "no free line: $OUT"
# alone NAME: the bytes vault show says NAME alone holds.
alone() {
	python3 - "$T/show.txt" "$1" <<'EOF'
import re, sys
units = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
on = False
for line in open(sys.argv[1]):
    if line.startswith("backups (bytes each alone holds"):
        on = True
    elif on and line.startswith("  "):
        name, num, unit = line.split()
        if name == sys.argv[2]:
            print(int(float(num) * units[unit]))
    else:
        on = False
EOF
}
a1=$(alone e1)
a2=$(alone e2)
a3=$(alone e3)
note "alone: e1 $a1, e2 $a2, e3 $a3 bytes"
[ -n "$a1" ] && [ "$a1" -lt $((64 << 10)) ] && pass "e1 alone holds only its trees ($a1 bytes)" || fail "e1 alone holds '$a1' bytes (a is shared)"
about() { python3 -c 'import sys; a, b, p = map(float, sys.argv[1:]); sys.exit(not abs(a - b) <= b * p / 100)' "$@"; }
[ -n "$a2" ] && about "$a2" $((6 * MB)) 3 && pass "e2 alone holds b ($a2 bytes)" || fail "e2 alone holds '$a2' bytes, expected about 6 MiB"
[ -n "$a3" ] && about "$a3" $((3 * MB)) 3 && pass "e3 alone holds c ($a3 bytes)" || fail "e3 alone holds '$a3' bytes, expected about 3 MiB"
expect_ok cbrfs backup delete ex e2
expect_ok cbrfs prune ex
freed=$((uex - $(used ex)))
about "$freed" "$a2" 2 && pass "deleting and pruning e2 freed $freed bytes, about the $a2 it held alone" || fail "deleting and pruning e2 freed $freed bytes; vault show said $a2"
expect_ok cbrfs check --read-data
