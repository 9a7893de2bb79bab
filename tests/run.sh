#!/usr/bin/env bash
# tests/run.sh: run the shell tests, each in its own process, and count
# their results.
#
#   tests/run.sh [NAME...]     NAME is a test's file name with or without .sh
#
# Runs every tests/*.sh except lib.sh and run.sh (and tests/reliability/*.sh
# when that directory exists), or only those named. Counts the `PASS:` and
# `FAIL:` lines each prints; a test that exits non-zero without printing a
# FAIL line counts as one failure, and so does one that prints no result at
# all. Each test gets TEST_TIMEOUT seconds [default 900]. The last line is
# `N passed, N failed`; the exit code is 1 if anything failed.

set -u
REPO=$(cd "$(dirname "$0")/.." && pwd)
TIMEOUT=${TEST_TIMEOUT:-900}

tests=()
if [ $# -gt 0 ]; then
	for n in "$@"; do
		n=${n%.sh}
		for f in "$REPO/tests/$n.sh" "$REPO/tests/reliability/$n.sh" "$n.sh"; do
			if [ -f "$f" ]; then
				tests+=("$f")
				continue 2
			fi
		done
		echo "run.sh: no test named $n" >&2
		echo "0 passed, 1 failed"
		exit 1
	done
else
	for f in "$REPO"/tests/*.sh "$REPO"/tests/reliability/*.sh; do
		[ -f "$f" ] || continue
		case $(basename "$f") in
		lib.sh | run.sh) continue ;;
		esac
		tests+=("$f")
	done
fi

passed=0
failed=0
log=$(mktemp "${TMPDIR:-/tmp}/cbrfs-run.XXXXXX")
trap 'rm -f "$log"' EXIT

for t in "${tests[@]}"; do
	name=${t#"$REPO"/tests/}
	echo "== $name"
	start=$SECONDS
	# The test's output goes to the terminal as it comes and to $log for
	# counting; stdin is closed so nothing waits on a terminal.
	timeout --kill-after=30 "$TIMEOUT" bash "$t" </dev/null 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	p=$(grep -c '^PASS: ' "$log")
	f=$(grep -c '^FAIL: ' "$log")
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		echo "FAIL: $name: timed out after ${TIMEOUT}s"
		f=$((f + 1))
	elif [ "$rc" != 0 ] && [ "$f" = 0 ]; then
		echo "FAIL: $name: exited with status $rc without reporting a failure"
		f=1
	elif [ "$rc" = 0 ] && [ "$p" = 0 ] && [ "$f" = 0 ]; then
		echo "FAIL: $name: reported no results"
		f=1
	fi
	echo "-- $name: $p PASS, $f FAIL, $((SECONDS - start))s"
	passed=$((passed + p))
	failed=$((failed + f))
done

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
