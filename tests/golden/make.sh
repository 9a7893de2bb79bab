#!/usr/bin/env bash
# Make a golden store: a small cbrfs store written by the built binary, with
# a manifest of what each of its backups must restore to. tests/golden.rs
# opens the committed result and decodes its files byte by byte.
#
# ONLY run this when introducing a NEW on-disk format version, into a NEW
# directory (store-v2, store-v3, ...). Never regenerate an existing
# store-vN: its whole point is to be bytes an older cbrfs wrote, which every
# later cbrfs must still read. Then add the new directory to tests/golden.rs
# beside the old ones (keep those) and describe it in docs/FORMAT.md.
#
# Usage: tests/golden/make.sh OUT_DIR        (e.g. tests/golden/store-v2)
#   CBRFS=path/to/cbrfs   the binary to use (default: `cargo build`, then
#                         target/debug/cbrfs; run from the repository root)
#
# Needs: bash, coreutils (stat, sha256sum, truncate, dd, touch), find,
# mkfifo, ln, and a file system with SEEK_HOLE and user xattrs for its
# temporary directory (ext4, xfs, btrfs, tmpfs): the script checks both.
#
# OUT_DIR gets:
#   store/             the store root (cbrfs-store.json, vaults/golden/...)
#   manifest/<b>.json  for backup <b>: per resource, every entry with its
#                      type, mode, mtime, size, sha256, symlink target,
#                      hard-link partner and user xattrs
# Git keeps neither the store's file modes (0600/0700) nor its empty
# directories (running/); neither matters to a reader.
set -euo pipefail

OUT=${1:?usage: tests/golden/make.sh OUT_DIR (a new tests/golden/store-vN)}
if [ -z "${CBRFS:-}" ]; then
    # Build first: a stale binary would write an older format.
    cargo build --quiet --bin cbrfs
    CBRFS=target/debug/cbrfs
fi
[ -x "$CBRFS" ] || { echo "make.sh: $CBRFS is not an executable" >&2; exit 2; }
[ ! -e "$OUT" ] || { echo "make.sh: $OUT exists: golden stores are never regenerated, make a new store-vN" >&2; exit 2; }
CBRFS=$(realpath "$CBRFS")

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cbrfs-golden.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/src
ETC=$WORK/etc
STORE=$WORK/store
umask 022
export LC_ALL=C TZ=UTC

# Deterministic bytes -------------------------------------------------------

# N*32 pseudo-random bytes: a SHA-256 chain over "TAG i" (incompressible).
random_bytes() { # TAG N
    local i
    for ((i = 0; i < $2; i++)); do
        printf "$(printf '%s %d' "$1" "$i" | sha256sum | cut -c1-64 | sed 's/../\\x&/g')"
    done
}

# Exactly N bytes of a repeated line (compressible).
repeat_line() { # LINE N
    yes "$1" | head -c "$2" || true
}

# Mtime number I: whole seconds apart, with distinct nanoseconds.
stamp() { # PATH I
    local s=$((1700000000 + $2 * 3607)) ns
    ns=$(printf '%09d' $(( ($2 * 123456791) % 1000000000 )))
    touch -h -d "@$s.$ns" "$1"
}

# Stamp every entry under $1, numbering from $2, in reverse path order: a
# child comes before its directory (whose mtime creating it changed), and
# the order does not depend on the file system's readdir order.
stamp_tree() { # DIR BASE
    local i=$2 p
    while IFS= read -r -d '' p; do
        stamp "$p" "$i"
        i=$((i + 1))
    done < <(find "$1" -print0 | sort -z -r)
}

# The source trees ----------------------------------------------------------

make_src() {
    mkdir -p "$SRC"/{docs,bin,deep/a/b/c,emptydir,hard,sparse,shared}
    printf 'hello, cbrfs\n' >"$SRC/hello.txt"
    : >"$SRC/empty.txt"
    for ((i = 0; i < 400; i++)); do
        printf '%04d lorem ipsum dolor sit amet, consectetur adipiscing elit\n' "$i"
    done >"$SRC/docs/lorem.txt"
    printf 'secret\n' >"$SRC/docs/secret.txt"
    chmod 0600 "$SRC/docs/secret.txt"
    printf 'group readable\n' >"$SRC/docs/group.txt"
    chmod 0640 "$SRC/docs/group.txt"
    random_bytes "cbrfs golden random" 256 >"$SRC/bin/random.bin"  # 8 KiB, stored raw
    printf '#!/bin/sh\necho golden\n' >"$SRC/bin/run.sh"
    chmod 0755 "$SRC/bin/run.sh"
    printf 'a leaf deep down\n' >"$SRC/deep/a/b/c/leaf.txt"
    ln -s hello.txt "$SRC/link"
    ln -s does/not/exist "$SRC/dangling"
    ln -s ../../../hello.txt "$SRC/deep/a/b/up"
    printf 'one inode, two names\n' >"$SRC/hard/one"
    ln "$SRC/hard/one" "$SRC/hard/two"
    printf 'name with spaces\n' >"$SRC/name with spaces.txt"
    printf 'unicode name\n' >"$SRC/ünïcødé.txt"
    mkfifo "$SRC/fifo"
    printf 'has xattrs\n' >"$SRC/xattr.txt"
    setfattr -n user.cbrfs.note -v "golden value" "$SRC/xattr.txt"
    setfattr -n user.cbrfs.empty -v "" "$SRC/xattr.txt"
    # Sparse files: holes are gaps between chunks.
    # small.img: 4 KiB data, 1 MiB - 4 KiB hole, 4 KiB data, trailing hole.
    repeat_line "small.img first block" 4096 >"$SRC/sparse/small.img"
    repeat_line "small.img second block" 4096 |
        dd of="$SRC/sparse/small.img" bs=4096 seek=256 conv=notrunc status=none
    truncate -s 2M "$SRC/sparse/small.img"
    # holes.img: only a hole (Content::None with a size).
    truncate -s 1M "$SRC/sparse/holes.img"
    # many.img: 200 separate 4 KiB data blocks 16 KiB apart: 200 chunks, so
    # its chunk list goes to chunk-list blobs (Content::Lists) while the
    # store stays small (each block compresses to a few dozen bytes).
    : >"$SRC/sparse/many.img"
    for ((i = 0; i < 200; i++)); do
        repeat_line "many.img block $i" 4096 |
            dd of="$SRC/sparse/many.img" bs=4096 seek=$((i * 4)) conv=notrunc status=none
    done
    truncate -s $((200 * 16384)) "$SRC/sparse/many.img"
    chmod 1777 "$SRC/shared"
    chmod 0750 "$SRC/docs"
    chmod 0700 "$SRC/emptydir"
    sync
    stamp_tree "$SRC" 0

    mkdir -p "$ETC/nested/empty"
    printf '[golden]\nformat = 1\n' >"$ETC/config.ini"
    printf 'nested\n' >"$ETC/nested/file.txt"
    stamp_tree "$ETC" 500
}

# Changes between the full and the incremental backup.
change_src() {
    for ((i = 400; i < 410; i++)); do
        printf '%04d appended for the incremental backup\n' "$i"
    done >>"$SRC/docs/lorem.txt"
    printf 'new in the incremental backup\n' >"$SRC/new.txt"
    rm "$SRC/dangling"
    chmod 0700 "$SRC/bin/run.sh"
    repeat_line "many.img block 100, changed" 4096 |
        dd of="$SRC/sparse/many.img" bs=4096 seek=400 conv=notrunc status=none
    sync
    stamp "$SRC/docs/lorem.txt" 1000
    stamp "$SRC/docs" 1001
    stamp "$SRC/new.txt" 1002
    stamp "$SRC/bin/run.sh" 1003
    stamp "$SRC/sparse/many.img" 1004
    stamp "$SRC" 1005
}

# The manifest --------------------------------------------------------------

json_str() { # escape for a JSON string (names here have no control chars)
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

# One resource's entries as a JSON array, sorted by path.
manifest_resource() { # ROOT
    local root=$1 first=1 p rel type mode mtime size nlink ino
    declare -A seen_inode=()
    printf '['
    while IFS= read -r -d '' p; do
        rel=${p#"$root"}
        rel=${rel#/}
        IFS='|' read -r type mode mtime size nlink ino < <(stat -c '%F|%a|%.9Y|%s|%h|%i' "$p")
        [ $first = 1 ] || printf ','
        first=0
        printf '\n    {"path": %s, "mode": "%s", "mtime_ns": %s' "$(json_str "$rel")" "$mode" "${mtime/./}"
        case $type in
        directory) printf ', "type": "dir"' ;;
        "symbolic link") printf ', "type": "symlink", "target": %s' "$(json_str "$(readlink "$p")")" ;;
        fifo) printf ', "type": "fifo"' ;;
        "regular file" | "regular empty file")
            printf ', "type": "file", "size": %s, "sha256": "%s"' "$size" "$(sha256sum <"$p" | cut -c1-64)"
            if [ "$nlink" -gt 1 ]; then
                if [ -n "${seen_inode[$ino]:-}" ]; then
                    printf ', "hardlink_of": %s' "$(json_str "${seen_inode[$ino]}")"
                else
                    seen_inode[$ino]=$rel
                fi
            fi
            ;;
        *) echo "make.sh: unexpected type $type of $p" >&2; exit 1 ;;
        esac
        if [ "$type" != "symbolic link" ]; then
            local xs=() line
            while IFS= read -r line; do
                case $line in user.*=*) xs+=("$line") ;; esac
            done < <(getfattr --absolute-names -h -d -m '^user\.' -e text "$p" 2>/dev/null || true)
            if [ ${#xs[@]} -gt 0 ]; then
                printf ', "xattrs": {'
                local k=0 x
                for x in "${xs[@]}"; do
                    [ $k = 0 ] || printf ', '
                    k=1
                    local v=${x#*=}
                    v=${v#\"}
                    v=${v%\"}
                    printf '%s: %s' "$(json_str "${x%%=*}")" "$(json_str "$v")"
                done
                printf '}'
            fi
        fi
        printf '}'
    done < <(find "$root" -print0 | sort -z)
    printf '\n  ]'
}

manifest() { # BACKUP
    mkdir -p "$OUT/manifest"
    {
        printf '{\n  "src": '
        manifest_resource "$SRC"
        printf ',\n  "etc": '
        manifest_resource "$ETC"
        printf '\n}\n'
    } >"$OUT/manifest/$1.json"
}

# Checks of the temporary file system --------------------------------------

probe=$WORK/probe
truncate -s 1M "$probe"
if [ "$(stat -c %b "$probe")" != 0 ]; then
    echo "make.sh: $WORK does not keep holes; set TMPDIR to ext4, xfs, btrfs or tmpfs" >&2
    exit 2
fi
setfattr -n user.probe -v 1 "$probe" 2>/dev/null || {
    echo "make.sh: $WORK has no user xattrs; set TMPDIR elsewhere" >&2
    exit 2
}
rm "$probe"

# Run -----------------------------------------------------------------------

cb() { "$CBRFS" --store "$STORE" "$@"; }

mkdir -p "$OUT"
make_src
cb vault create golden --type filesystem --capacity 10GB \
    --description "cbrfs golden store" --tag purpose=golden --tag format=v1 \
    --compression zstd
cb vault associate golden --path "$SRC" --name src
cb vault associate golden --path "$ETC" --name etc --exclude '*.tmp'
manifest full
cb backup create golden --name full --description "first backup: full"
change_src
manifest incr
cb backup create golden --name incr --description "second backup: incremental"
cb check --read-data

cp -a "$STORE" "$OUT/store"
echo "make.sh: wrote $OUT ($(du -sh --apparent-size "$OUT" | cut -f1))"
