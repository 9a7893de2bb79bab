# tests/lib.sh: helpers shared by the shell tests. Source it first thing:
#
#   . "$(dirname "$0")/lib.sh"
#
# It gives each test its own temporary directory $T (removed on exit by a
# trap, kept when KEEP_TMP=1), a store $STORE inside it, the `cbrfs` function
# running the binary on that store, result lines (`PASS: ...` / `FAIL: ...`,
# counted by tests/run.sh), `expect_exit` for error cases, `diff_tree` and
# `treecmp` for comparing trees, and polling helpers (`wait_for`) for tests
# that must wait on something: never a fixed sleep.
#
# Environment:
#   CBRFS_BIN       the binary [default: $REPO/target/release/cbrfs]
#   CBRFS_TEST_TMP  where temporary directories go [default: $TMPDIR or /tmp]
#   KEEP_TMP=1      keep the temporary directory for a post-mortem

set -u
# No pipefail: under it `printf '%s' "$out" | grep -q x` fails at random
# (bash writes line by line, grep -q exits at the first match, and the next
# write dies of SIGPIPE), and tests use that idiom. Use `matches` anyway.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TESTS=$REPO/tests
CBRFS_BIN=${CBRFS_BIN:-$REPO/target/release/cbrfs}
TEST_NAME=$(basename "$0" .sh)
export LC_ALL=C

FAILS=0
PASSES=0

# pass WHAT: report a check that held.
pass() {
	PASSES=$((PASSES + 1))
	printf 'PASS: %s: %s\n' "$TEST_NAME" "$*"
}

# fail "WHAT: WHY": report a check that did not hold. The test goes on.
fail() {
	FAILS=$((FAILS + 1))
	printf 'FAIL: %s: %s\n' "$TEST_NAME" "$*"
}

# skip "WHAT: WHY": a check that cannot run here (not counted as either).
skip() {
	printf 'SKIP: %s: %s\n' "$TEST_NAME" "$*"
}

# note TEXT: say what the test is doing.
note() {
	printf -- '-- %s\n' "$*"
}

# die "WHY": a failure after which the test cannot go on.
die() {
	fail "$*"
	exit 1
}

# check WHAT cmd...: PASS if the command succeeds, FAIL (with its output)
# if it does not.
check() {
	local what=$1
	shift
	local out
	if out=$("$@" 2>&1); then
		pass "$what"
	else
		fail "$what: '$*' exited $?: $(printf '%s' "$out" | tail -n 20)"
	fi
}

# ---- temporary directory and clean-up ----

_CLEANUPS=()
_BG_PIDS=()

# on_exit CMD: run CMD (a string, eval'd) when the test exits, last
# registered first; e.g. on_exit "fusermount3 -u '$MNT'".
on_exit() {
	_CLEANUPS+=("$1")
}

# bg CMD...: start CMD in the background; it is killed (by its pid) when the
# test exits. The pid is in $BG_PID.
bg() {
	"$@" &
	BG_PID=$!
	_BG_PIDS+=("$BG_PID")
}

_cleanup() {
	local rc=$?
	local i
	for ((i = ${#_CLEANUPS[@]} - 1; i >= 0; i--)); do
		eval "${_CLEANUPS[$i]}" >/dev/null 2>&1 || true
	done
	for i in "${_BG_PIDS[@]}"; do
		kill "$i" 2>/dev/null && wait "$i" 2>/dev/null
	done
	if [ -n "${T:-}" ] && [ -d "$T" ]; then
		if [ "${KEEP_TMP:-0}" = 1 ]; then
			echo "-- kept $T"
		else
			# Restored trees may hold immutable-looking modes (0000 dirs);
			# root removes them anyway, a user needs write bits back.
			chmod -R u+rwX "$T" 2>/dev/null
			rm -rf "$T"
		fi
	fi
	if [ "$rc" = 0 ] && [ "$FAILS" -gt 0 ]; then
		rc=1
	fi
	exit "$rc"
}

T=$(mktemp -d "${CBRFS_TEST_TMP:-${TMPDIR:-/tmp}}/cbrfs-$TEST_NAME.XXXXXX") || {
	echo "FAIL: $TEST_NAME: cannot make a temporary directory"
	exit 1
}
trap _cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

STORE=$T/store

if [ ! -x "$CBRFS_BIN" ]; then
	die "binary $CBRFS_BIN not found: run 'cargo build --release' or set CBRFS_BIN"
fi

# cbrfs ARGS...: the binary on this test's store.
cbrfs() {
	"$CBRFS_BIN" --store "$STORE" "$@"
}

is_root() {
	[ "$(id -u)" = 0 ]
}

# as_user cmd...: run a command as the user and group ids $UID_ and $GID_
# (the test sets them; root only), with a home under $T, passing on
# XDG_DATA_HOME and CBRFS_STORE where they are set. A test may define its
# own.
as_user() {
	setpriv --reuid="$UID_" --regid="$GID_" --clear-groups \
		env -i PATH="$PATH" HOME="$T/u" LC_ALL=C ${XDG_DATA_HOME:+XDG_DATA_HOME=$XDG_DATA_HOME} \
		${CBRFS_STORE:+CBRFS_STORE=$CBRFS_STORE} "$@"
}

# ---- running commands and checking their results ----

# run cmd...: run a command, keeping its exit code in $RC, its stdout in
# $OUT and its stderr in $ERR (also in the files $T/.out and $T/.err).
run() {
	"$@" >"$T/.out" 2>"$T/.err"
	RC=$?
	OUT=$(cat "$T/.out")
	ERR=$(cat "$T/.err")
	return 0
}

# matches PATTERN TEXT: TEXT has a line matching the extended regular
# expression PATTERN. (Not `printf | grep -q` under pipefail: grep -q exits at
# the first match, printf then dies of SIGPIPE, and the pipeline fails.)
matches() {
	grep -Eq -- "$1" <<<"$2"
}

# expect_exit CODE PATTERN -- cmd...: run the command; PASS if it exits with
# CODE and its stderr matches the extended regular expression PATTERN (an
# empty PATTERN matches anything); FAIL saying what differed. A panic is
# always a failure. Returns 0 on PASS, 1 on FAIL; $RC, $OUT, $ERR as in run.
expect_exit() {
	local code=$1 pattern=$2
	shift 2
	if [ "${1:-}" != "--" ]; then
		die "expect_exit: usage: expect_exit CODE PATTERN -- cmd..."
	fi
	shift
	run "$@"
	local shown=$*
	if [ ${#shown} -gt 160 ]; then
		shown="${shown:0:157}..."
	fi
	local why=
	if [ "$RC" != "$code" ]; then
		why="exit $RC, expected $code"
	fi
	if [ -n "$pattern" ] && ! matches "$pattern" "$ERR"; then
		why="${why:+$why; }stderr does not match /$pattern/"
	fi
	if matches 'panicked' "$OUT
$ERR"; then
		why="${why:+$why; }it panicked"
	fi
	if [ -z "$why" ]; then
		pass "exit $code${pattern:+, stderr ~ /$pattern/}: $shown"
		return 0
	fi
	fail "$shown: $why; stderr: $(printf '%s' "$ERR" | head -c 600)"
	return 1
}

# expect_ok cmd...: expect_exit 0 with any stderr.
expect_ok() {
	expect_exit 0 '' -- "$@"
}

# json_get FILE EXPR: evaluate a python expression over the JSON document in
# FILE (bound to `j`) and print the result.
json_get() {
	python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(json.dumps(v) if isinstance(v, (dict, list)) else v)
' "$1" "$2"
}

# expect_eq WHAT GOT WANT: PASS if equal.
expect_eq() {
	if [ "$2" = "$3" ]; then
		pass "$1 = $3"
	else
		fail "$1: got '$2', expected '$3'"
	fi
}

# ---- comparing trees ----

# treecmp A B [options]: tests/treecmp.py; prints differences, fails if any.
treecmp() {
	python3 "$TESTS/treecmp.py" "$@"
}

# diff_tree A B [diff options]: `diff -r` that does not follow symlinks and
# does not count "X is a fifo while file Y is a fifo" as a difference (GNU
# diff reports every pair of fifos, sockets or device nodes, even alike ones;
# treecmp compares those). Prints the differences; returns 0 if none.
diff_tree() {
	local a=$1 b=$2
	shift 2
	local out rc
	out=$(diff -r --no-dereference "$@" -- "$a" "$b" 2>&1)
	rc=$?
	if [ "$rc" -ge 2 ]; then
		printf '%s\n' "$out"
		return 2
	fi
	out=$(printf '%s\n' "$out" | grep -Ev '^File .* is a (fifo|socket|character special file|block special file) while file .* is a \1$' | grep -v '^$')
	if [ -n "$out" ]; then
		printf '%s\n' "$out"
		return 1
	fi
	return 0
}

# ---- polling (for mount tests): never a fixed sleep ----

# wait_for TIMEOUT_SECONDS WHAT cmd...: run cmd every 50 ms until it
# succeeds (return 0) or TIMEOUT_SECONDS pass (FAIL "WHAT" and return 1).
wait_for() {
	local timeout=$1 what=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	local delay=0.01
	while true; do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail "timed out after ${timeout}s waiting for: $what"
			return 1
		fi
		sleep "$delay"
		# Back off from 10 ms to 100 ms so a slow wait does not spin.
		case $delay in
		0.01) delay=0.02 ;;
		0.02) delay=0.05 ;;
		*) delay=0.1 ;;
		esac
	done
}

# is_mounted DIR: DIR is a mount point now (from /proc/self/mountinfo, which
# does not hang on a dead FUSE mount the way stat can).
is_mounted() {
	local d
	d=$(realpath -m -- "$1")
	awk -v d="$d" '$5 == d { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# not_mounted DIR
not_mounted() {
	! is_mounted "$1"
}

# wait_mounted DIR [TIMEOUT]: poll until DIR is a mount point.
wait_mounted() {
	wait_for "${2:-10}" "$1 to be mounted" is_mounted "$1"
}

# wait_unmounted DIR [TIMEOUT]: poll until DIR is no longer a mount point.
wait_unmounted() {
	wait_for "${2:-10}" "$1 to be unmounted" not_mounted "$1"
}

# pid_gone PID: the process has exited.
pid_gone() {
	! kill -0 "$1" 2>/dev/null
}

# wait_exit PID [TIMEOUT]: poll until process PID has exited.
wait_exit() {
	wait_for "${2:-10}" "process $1 to exit" pid_gone "$1"
}

# ---- making test data ----

# random_file PATH BYTES: a file of random bytes.
random_file() {
	head -c "$2" /dev/urandom >"$1"
}

# file_size PATH
file_size() {
	stat -c %s -- "$1"
}
