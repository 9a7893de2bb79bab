#!/usr/bin/env bash
# The store is private: every file in it is 0600 and every directory 0700,
# whatever the umask, after vaults, backups, a check, a deletion and a
# mount (its log). The JSON listings parse and say what was done.
. "$(dirname "$0")/lib.sh"

S=$T/src
mkdir -p "$S/d"
random_file "$S/f" 200000
printf 'x\n' >"$S/d/g"
chmod 0777 "$S/d"
chmod 0666 "$S/f"

# perms_ok WHEN: PASS if all of the store's files are 0600 and its
# directories 0700; FAIL listing the others.
perms_ok() {
	local bad
	bad=$(find "$STORE" \( -type f ! -perm 0600 \) -o \( -type d ! -perm 0700 \) -o \
		\( ! -type f ! -type d \) | head -n 20)
	local n
	n=$(find "$STORE" | wc -l)
	if [ -z "$bad" ]; then
		pass "$1: all $n store entries are files 0600 or directories 0700"
	else
		fail "$1: store entries with other modes or types: $(
			for p in $bad; do stat -c '%A %n' "$p"; done | tr '\n' ';'
		)"
	fi
}

# Under umask 000 every mode the store gets must come from cbrfs itself.
umask 000
expect_ok cbrfs vault create p1 --type filesystem --capacity 10 --tag env=test
expect_ok cbrfs vault create p2 --type filesystem --capacity 20 --compression none
expect_ok cbrfs vault associate p1 --path "$S" --name src
perms_ok "after vault create and associate (umask 000)"
expect_ok cbrfs backup create p1 --name first
printf 'more\n' >>"$S/d/g"
expect_ok cbrfs backup create p1 --name second --description "the second one"
perms_ok "after two backups (umask 000)"
for i in $(seq 1 18); do
	printf '%d\n' "$i" >"$S/d/n$i"
	cbrfs backup create p1 --name "many$i" >/dev/null 2>&1 || fail "backup many$i"
done
perms_ok "after 20 backups, indexes merged (umask 000)"
expect_ok cbrfs check --read-data
expect_ok cbrfs backup delete p1 many3
expect_ok cbrfs vault delete p2
perms_ok "after check, backup delete and vault delete (umask 000)"
if [ -e /dev/fuse ]; then
	# The mount daemon writes logs/mount.log (issue #12, finding 13: it was
	# created 0644, 0666 under this umask).
	MNT=$T/mnt
	mkdir -p "$MNT"
	on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"
	expect_ok cbrfs mount "$MNT"
	wait_mounted "$MNT"
	ls "$MNT/p1" >/dev/null
	expect_ok cbrfs umount "$MNT"
	wait_unmounted "$MNT"
	[ -f "$STORE/logs/mount.log" ] || fail "no logs/mount.log after a mount"
	perms_ok "after a mount, with logs/mount.log (umask 000)"
else
	skip "mount.log mode: no /dev/fuse"
fi
umask 022

note "JSON listings"
expect_ok cbrfs vault list --json
cp "$T/.out" "$T/vaults.json"
if python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))
assert isinstance(v, list) and [x["name"] for x in v] == ["p1"], v
p1 = v[0]
assert p1["type"] == "filesystem" and p1["capacity_gb"] == 10, p1
assert p1["tags"] == [{"key": "env", "value": "test"}], p1["tags"]
assert [r["name"] for r in p1["resources"]] == ["src"], p1["resources"]
assert p1["backups"] == 19, p1["backups"]
assert p1["used_bytes"] > 200000, p1["used_bytes"]
' "$T/vaults.json"; then
	pass "vault list --json parses and lists p1 with its tag, resource and 19 backups"
else
	fail "vault list --json: $(cat "$T/vaults.json")"
fi

expect_ok cbrfs backup list --json
cp "$T/.out" "$T/backups.json"
if python3 -c '
import json, sys
b = json.load(open(sys.argv[1]))
assert isinstance(b, list) and len(b) == 19, len(b)
names = [x["name"] for x in b]
assert names[:2] == ["first", "second"], names
assert "many3" not in names
first, second = b[0], b[1]
assert first["type"] == "full" and second["type"] == "incremental", (first["type"], second["type"])
assert second["description"] == "the second one"
assert first["vault"] == "p1" and first["status"] == "available"
assert first["stats"]["files_new"] == 2, first["stats"]
assert second["stats"]["files_changed"] == 1 and second["stats"]["files_unchanged"] == 1, second["stats"]
' "$T/backups.json"; then
	pass "backup list --json parses and lists the backups oldest first with their stats"
else
	fail "backup list --json: $(head -c 2000 "$T/backups.json")"
fi

expect_ok cbrfs backup list p1 --json
python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/.out" &&
	pass "backup list VAULT --json parses" || fail "backup list p1 --json: $OUT"
expect_ok cbrfs vault list --json --tag env=test
python3 -c 'import json,sys; assert len(json.load(open(sys.argv[1]))) == 1' "$T/.out" &&
	pass "vault list --tag env=test --json finds p1" || fail "vault list --tag: $OUT"
expect_ok cbrfs vault list --json --tag env=prod
python3 -c 'import json,sys; assert json.load(open(sys.argv[1])) == []' "$T/.out" &&
	pass "vault list --tag env=prod --json is an empty list" || fail "vault list --tag env=prod: $OUT"
expect_ok cbrfs backup show p1 second --json
python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["name"] == "second"' "$T/.out" &&
	pass "backup show --json parses" || fail "backup show --json: $OUT"
expect_ok cbrfs vault show p1 --json
python3 -c 'import json,sys; assert json.load(open(sys.argv[1]))["name"] == "p1"' "$T/.out" &&
	pass "vault show --json parses" || fail "vault show --json: $OUT"
expect_ok cbrfs check --json
python3 -c 'import json,sys; r = json.load(open(sys.argv[1])); assert r[0]["vault"] == "p1" and r[0]["problems"] == []' "$T/.out" &&
	pass "check --json parses and finds no problem" || fail "check --json: $OUT"

note "an empty store lists empty JSON arrays"
STORE=$T/empty-store
expect_ok cbrfs init
expect_ok cbrfs vault list --json
expect_eq "vault list --json of an empty store" "$(python3 -c 'import json,sys; print(json.load(sys.stdin))' <<<"$OUT")" "[]"
expect_ok cbrfs backup list --json
expect_eq "backup list --json of an empty store" "$(python3 -c 'import json,sys; print(json.load(sys.stdin))' <<<"$OUT")" "[]"
perms_ok "a new store"
