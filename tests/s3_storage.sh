#!/usr/bin/env bash
# tests/s3_storage.sh: the S3 backend against a real 3-node SeaweedFS
# cluster (scripts/seaweed.sh) and fault-injecting proxies in front of its
# gateway (tests/common/faultproxy.py): runs the Rust tests of
# tests/s3_storage.rs with their endpoints in the environment, then the
# volume-server test alone (it kills one of the three).
. "$(dirname "$0")/lib.sh"
. "$REPO/scripts/seaweed.sh"

if ! command -v cargo >/dev/null 2>&1; then
	die "cargo not found: the S3 tests are Rust tests (tests/s3_storage.rs)"
fi

# Build the test binary first (quick when scripts/test.sh's `cargo test`
# built it), so that the cluster does not idle through a compile.
note "building tests/s3_storage.rs"
(cd "$REPO" && cargo test --test s3_storage --no-run) >"$T/build.log" 2>&1 ||
	die "cargo test --test s3_storage --no-run failed: $(tail -n 20 "$T/build.log")"

note "starting the SeaweedFS cluster"
start=$SECONDS
on_exit seaweed_stop
seaweed_start || die "scripts/seaweed.sh could not start the cluster"
pass "a 3-node SeaweedFS cluster with its S3 gateway started in $((SECONDS - start))s"

# proxy MODE [ARGS...]: start a fault proxy in front of the gateway; its
# endpoint in $PROXY. Stopped by PID when the test exits.
proxy() {
	local out=$T/proxy-$1.port
	bg python3 "$TESTS/common/faultproxy.py" --upstream "${SEAWEED_S3_ENDPOINT#http://}" --mode "$@" >"$out"
	wait_for 10 "the $1 proxy to listen" test -s "$out" || exit 1
	PROXY=http://127.0.0.1:$(head -n 1 "$out")
}
proxy random --p 0.2 --seed 14
export CBRFS_TEST_S3_FLAKY_ENDPOINT=$PROXY
proxy fail
export CBRFS_TEST_S3_DEAD_ENDPOINT=$PROXY
proxy stall
export CBRFS_TEST_S3_STALL_ENDPOINT=$PROXY

export CBRFS_TEST_S3_ENDPOINT=$SEAWEED_S3_ENDPOINT
export CBRFS_TEST_S3_BUCKET=$SEAWEED_BUCKET

# cargo_tests WHAT ARGS...: run the Rust tests, one PASS/FAIL line per test.
cargo_tests() {
	local what=$1
	shift
	(cd "$REPO" && cargo test --test s3_storage -- --include-ignored "$@") >"$T/cargo.log" 2>&1
	local rc=$?
	local line name result
	while read -r line; do
		name=${line#test }
		name=${name%% ... *}
		result=${line##* ... }
		case $result in
		ok) pass "$name" ;;
		ignored) skip "$name: ignored" ;;
		*) fail "$name: $result" ;;
		esac
	done < <(grep -E '^test .* \.\.\. ' "$T/cargo.log")
	if [ "$rc" != 0 ]; then
		fail "$what: cargo test exited $rc: $(grep -E -A12 '^---- |panicked' "$T/cargo.log" | head -n 60)"
	elif ! grep -q '^test result: ok' "$T/cargo.log"; then
		fail "$what: no test result: $(tail -n 20 "$T/cargo.log")"
	fi
	grep '^note: ' "$T/cargo.log" | sed 's/^/-- /'
}

note "every method, errors, faults (tests/s3_storage.rs)"
cargo_tests "the S3 storage tests" --skip reads_survive_a_volume_server_down

note "one volume server killed"
export CBRFS_TEST_S3_KILL_VOLUME=". '$REPO/scripts/seaweed.sh' && SEAWEED_DIR='$SEAWEED_DIR' seaweed_kill_volume 2"
cargo_tests "the volume-server test" --exact reads_survive_a_volume_server_down --nocapture
