#!/usr/bin/env bash
# tests/security_names.sh: file names cannot inject terminal escapes
# (issue #12, finding 10). A file named
# `ESC[2K CR ESC[32mcompleted without warnings` that cannot be read makes a
# backup warning that names it; `backup create` and `backup show` print it
# with its control characters quoted (`\e`, `\r`), never a raw ESC or CR,
# and `--json` keeps the exact name as valid JSON.
. "$(dirname "$0")/lib.sh"

is_root || {
	skip "security_names: needs root to make an unprivileged user"
	exit 0
}

USER_NAME=cbrfs_sec_names
if ! id -u "$USER_NAME" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$USER_NAME" ||
		die "useradd $USER_NAME"
	on_exit "userdel '$USER_NAME'"
fi
as_user() { setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --clear-groups "$@"; }

# The user runs cbrfs on a store and a tree of its own: a file it cannot
# read (mode 000; root would read anything) gives a real warning.
U=$T/u
mkdir -p "$U/src"
chmod 755 "$T"
EVIL=$(printf 'x\033[2K\r\033[32mcompleted without warnings')
printf 'fine\n' >"$U/src/ok"
printf 'unreadable\n' >"$U/src/$EVIL"
chmod 000 "$U/src/$EVIL"
mkdir "$U/src/$EVIL.d"
chmod 000 "$U/src/$EVIL.d"
chown -R "$USER_NAME:" "$U"
chmod 000 "$U/src/$EVIL" "$U/src/$EVIL.d"
ucbrfs() { as_user env HOME="$U" "$CBRFS_BIN" --store "$U/store" "$@"; }

# no_raw_controls WHAT FILE: FILE holds no ESC and no CR byte.
no_raw_controls() {
	if LC_ALL=C grep -q $'[\033\r]' "$2"; then
		fail "$1: raw control characters printed: $(od -c "$2" | head -n 8 | tr '\n' ' ')"
	else
		pass "$1: no raw ESC or CR in the output"
	fi
}

ucbrfs vault create v --type filesystem --capacity 10GB >"$T/vc.out" 2>&1 || die "vault create as $USER_NAME: $(cat "$T/vc.out")"
ucbrfs vault associate v --path "$U/src" --name src >/dev/null 2>&1 || die "vault associate as $USER_NAME"
ucbrfs backup create v --name b1 >"$T/create.out" 2>"$T/create.err"
rc=$?
cat "$T/create.out" "$T/create.err" >"$T/create.all"
matches 'completed without warnings' "$(cat "$T/create.all")" &&
	pass "backup create warns about the unreadable file (exit $rc)" ||
	fail "backup create printed no warning naming the file (exit $rc): $(cat "$T/create.all")"
no_raw_controls "backup create" "$T/create.all"
matches 'x\\e\[2K\\r\\e\[32mcompleted' "$(cat "$T/create.all")" &&
	pass "backup create shows the name quoted as x\\e[2K\\r\\e[32m..." ||
	fail "backup create: the name is not quoted as expected: $(cat "$T/create.all")"

ucbrfs backup show v b1 >"$T/show.out" 2>&1
matches 'warning: .*completed without warnings' "$(cat "$T/show.out")" &&
	pass "backup show lists the warning" || fail "backup show: no warning: $(cat "$T/show.out")"
no_raw_controls "backup show" "$T/show.out"

ucbrfs backup show v b1 --json >"$T/show.json" 2>/dev/null
if python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
ws = [w for r in j["resources"] for w in r["warnings"]]
assert any(sys.argv[2] in w for w in ws), ws
' "$T/show.json" "$EVIL"; then
	pass "backup show --json is valid JSON and keeps the exact name"
else
	fail "backup show --json: $(head -c 600 "$T/show.json")"
fi

note "an error naming a backup given on the command line is quoted too"
ucbrfs backup show v "$EVIL" >"$T/err.out" 2>&1
no_raw_controls "backup show of a backup named with escapes" "$T/err.out"

note "a resource path with escapes, in vault show and the task log"
mkdir "$U/dir$EVIL"
chown "$USER_NAME:" "$U/dir$EVIL"
ucbrfs vault associate v --path "$U/dir$EVIL" --name src2 >/dev/null 2>&1 || fail "associate a path with escapes"
ucbrfs vault show v >"$T/vshow.out" 2>&1
matches 'dirx\\e\[2K' "$(cat "$T/vshow.out")" && pass "vault show shows the resource path quoted" ||
	fail "vault show: $(cat "$T/vshow.out")"
no_raw_controls "vault show" "$T/vshow.out"
ucbrfs backup create v --name b2 >"$T/b2.out" 2>&1
no_raw_controls "backup create of two resources" "$T/b2.out"
ucbrfs task list >"$T/tasks.out" 2>&1
no_raw_controls "task list" "$T/tasks.out"
