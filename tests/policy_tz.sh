#!/usr/bin/env bash
# tests/policy_tz.sh: a policy's --timezone as an IANA name. Bad and unknown
# names are refused with exit 2, naming the zone; `policy show` lists the
# next runs in the zone (RFC 3339 with the zone's offset, and its name) and
# `--json` keeps them in UTC too; `policy run-due` across both of Europe/
# Berlin's daylight-saving changes of 2027 runs a daily 02:30 once each day:
# on 2027-03-28 (02:30 does not exist) at 03:30 CEST, on 2027-10-31 (02:30
# happens twice) at the first 02:30 only.
. "$(dirname "$0")/lib.sh"

S=$T/src
mkdir -p "$S"
printf 'one\n' >"$S/f"
expect_ok cbrfs vault create v --type filesystem --capacity 10
expect_ok cbrfs vault associate v --path "$S" --name src

D='FREQ=DAILY;BYHOUR=2;BYMINUTE=30'
note "zone names that are not zones"
expect_exit 2 'time zone "Mars/Olympus_Mons" is unknown: it is not in the time zone database' -- \
	cbrfs policy create x --schedule "$D" --keep-last 3 --timezone Mars/Olympus_Mons
expect_exit 2 'time zone "Europe/Atlantis" is unknown' -- \
	cbrfs policy create x --schedule "$D" --keep-last 3 --keep-daily 2 --timezone Europe/Atlantis
expect_exit 2 'time zone "UTC\+25:00" is invalid: write an IANA name like Europe/Berlin, or UTC, UTC\+08:00' -- \
	cbrfs policy create x --schedule "$D" --keep-last 3 --timezone UTC+25:00
expect_exit 2 'time zone "../../etc/passwd" is invalid' -- \
	cbrfs policy create x --schedule "$D" --keep-last 3 --timezone ../../etc/passwd
expect_exit 2 'time zone "localtime" is invalid' -- \
	cbrfs policy create x --schedule "$D" --keep-last 3 --timezone localtime
expect_ok cbrfs policy list --json
expect_eq "policies after the refused creations" "$OUT" "[]"

note "an IANA zone: Europe/Berlin"
expect_ok cbrfs policy create pb --schedule "$D" --keep-last 3 --keep-daily 7 --timezone europe/berlin
matches 'timezone Europe/Berlin' "$OUT" && pass "create names the zone in the database's spelling" || fail "policy create: $OUT"
expect_exit 2 'time zone "Europe/Atlantis" is unknown' -- cbrfs policy update pb --timezone Europe/Atlantis
expect_ok cbrfs policy show pb
matches '^next runs \(Europe/Berlin\):$' "$OUT" && pass "show names the zone of the next runs" || fail "policy show: $OUT"
grep -E '^  [0-9]' "$T/.out" >"$T/next-text"
# Each next run is RFC 3339 with Berlin's offset at that instant, at 02:30
# local (03:30 on the spring-forward day).
python3 - "$T/next-text" >"$T/check" <<'PY'
import datetime as dt, sys, zoneinfo
z = zoneinfo.ZoneInfo("Europe/Berlin")
lines = [l.strip() for l in open(sys.argv[1])]
bad = []
for l in lines:
    t = dt.datetime.fromisoformat(l)
    local = t.astimezone(z)
    if t.utcoffset() != local.utcoffset() or (local.hour, local.minute) not in [(2, 30), (3, 30)] or not l.endswith(("+01:00", "+02:00")):
        bad.append(l)
print("ok" if len(lines) == 5 and not bad else f"bad: {lines} {bad}")
PY
expect_eq "next runs in Europe/Berlin" "$(cat "$T/check")" ok
expect_ok cbrfs policy show pb --json
expect_eq "timezone in --json" "$(json_get "$T/.out" 'j["timezone"]')" Europe/Berlin
expect_eq "next and next_local are the same instants" "$(json_get "$T/.out" '
__import__("datetime").datetime.fromisoformat(j["next"][0].replace("Z", "+00:00")) == __import__("datetime").datetime.fromisoformat(j["next_local"][0]) and len(j["next"]) == 5 and all(s.endswith("Z") for s in j["next"])')" True
expect_eq "next_local in --json is the text's" "$(json_get "$T/.out" '" ".join(j["next_local"])')" "$(sed 's/^  //' "$T/next-text" | paste -sd' ')"
expect_ok cbrfs policy create pu --schedule "$D" --keep-last 3
expect_ok cbrfs policy show pu
matches '^next runs \(UTC\+00:00\):$' "$OUT" && pass "a policy without --timezone is in UTC" || fail "policy show pu: $OUT"
matches '^  [0-9-]{10}T02:30:00\+00:00$' "$OUT" && pass "its next runs at 02:30+00:00" || fail "policy show pu: $OUT"
expect_ok cbrfs policy delete pu

note "run-due across Berlin's 2027 daylight-saving changes"
expect_ok cbrfs policy apply pb v
# points PASS-INSTANT: run a pass at that instant; print v's time points.
points() {
	cbrfs policy run-due --now "$1" --json >"$T/rep" 2>"$T/rep.err" || {
		fail "run-due --now $1: $(cat "$T/rep.err")"
		return
	}
	json_get "$T/rep" '" ".join(r["point"] for r in j if r["vault"] == "v")'
}
points 2027-03-27T12:00:00Z >/dev/null # the points missed since the apply
# 2027-03-28: 02:00 CET becomes 03:00 CEST; 02:30 runs at 03:30 CEST.
expect_eq "pass before the shifted point" "$(points 2027-03-28T01:29:00Z)" ""
expect_eq "pass at 03:30 CEST on the spring-forward day" "$(points 2027-03-28T01:30:00Z)" 2027-03-28T01:30:00Z
expect_eq "nothing more that day" "$(points 2027-03-28T21:59:00Z)" ""
# The next day 02:30 is CEST: 00:30Z (at UTC+01:00 it would be 01:30Z).
expect_eq "02:30 CEST the day after" "$(points 2027-03-29T00:30:00Z)" 2027-03-29T00:30:00Z
points 2027-10-30T12:00:00Z >/dev/null
# 2027-10-31: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, runs once.
expect_eq "the first 02:30 (CEST) on the fall-back day" "$(points 2027-10-31T00:30:00Z)" 2027-10-31T00:30:00Z
expect_eq "the second 02:30 (CET) does not run again" "$(points 2027-10-31T01:30:00Z)" ""
expect_eq "02:30 CET the day after" "$(points 2027-11-01T01:30:00Z)" 2027-11-01T01:30:00Z
expect_ok cbrfs check
