#!/usr/bin/env bash
# scripts/test.sh: the one command that runs every test.
#
#   1. cargo build --release     (the binary the shell tests run)
#   2. cargo test --no-fail-fast (unit and integration tests; the counts of
#                                 its `test result:` lines are summed)
#   3. tests/run.sh              (the shell tests against the release binary)
#
# The last line is the combined `N passed, N failed`; the exit code is 1 if
# anything failed or did not build. Extra arguments go to tests/run.sh
# (names of shell tests to run).

set -u
cd "$(dirname "$0")/.." || exit 1
REPO=$(pwd)

passed=0
failed=0

finish() {
	echo "$passed passed, $failed failed"
	[ "$failed" = 0 ]
	exit
}

echo "== cargo build --release"
if ! cargo build --release; then
	echo "FAIL: cargo build --release failed"
	failed=$((failed + 1))
	finish
fi

# The S3 tests' cluster (tests/s3_storage.sh): install the pinned SeaweedFS
# into its cached venv now (and python3-venv with apt when root and it is
# missing), so that a missing piece shows here, not as a test's timeout.
echo "== scripts/seaweed.sh install"
if ! scripts/seaweed.sh install; then
	echo "note: scripts/seaweed.sh install failed; the S3 tests will fail"
fi

echo "== cargo test"
log=$(mktemp "${TMPDIR:-/tmp}/cbrfs-cargo-test.XXXXXX")
trap 'rm -f "$log"' EXIT
# --no-fail-fast: a failing test binary must not hide the results of the
# binaries after it (cargo stops at the first one otherwise).
cargo test --no-fail-fast 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
# "test result: ok. 12 passed; 0 failed; 0 ignored; ..."
read -r p f < <(awk '/^test result:/ {
	for (i = 1; i <= NF; i++) {
		if ($(i) ~ /^passed;?$/) p += $(i - 1)
		if ($(i) ~ /^failed;?$/) f += $(i - 1)
	}
} END { print p + 0, f + 0 }' "$log")
if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
	echo "FAIL: cargo test exited with status $rc without a failed test (a build error?)"
	f=1
fi
echo "-- cargo test: $p PASS, $f FAIL"
passed=$((passed + p))
failed=$((failed + f))

echo "== tests/run.sh"
log2=$(mktemp "${TMPDIR:-/tmp}/cbrfs-run-log.XXXXXX")
trap 'rm -f "$log" "$log2"' EXIT
CBRFS_BIN=${CBRFS_BIN:-$REPO/target/release/cbrfs} tests/run.sh "$@" 2>&1 | tee "$log2"
rc=${PIPESTATUS[0]}
last=$(tail -n 1 "$log2")
if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
	passed=$((passed + BASH_REMATCH[1]))
	failed=$((failed + BASH_REMATCH[2]))
	if [ "$rc" != 0 ] && [ "${BASH_REMATCH[2]}" = 0 ]; then
		echo "FAIL: tests/run.sh exited with status $rc"
		failed=$((failed + 1))
	fi
else
	echo "FAIL: tests/run.sh did not end with a count (exit status $rc)"
	failed=$((failed + 1))
fi

finish
