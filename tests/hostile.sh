#!/usr/bin/env bash
# tests/hostile.sh: hostile source trees and restore targets. 1,000 nested
# directories back up, restore (also under a soft limit of 256 open files),
# check and read through the mount; names with leading dashes, `..`-like
# names, newlines and invalid UTF-8 survive; a symlink loop is kept as
# links, never followed; a restore target that is a symlink is refused and
# nothing is written where it points.
. "$(dirname "$0")/lib.sh"

SRC=$T/src
MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"

note "1,000 nested directories"
python3 -c '
import os, sys
os.chdir(sys.argv[1])
os.mkdir("deep"); os.chdir("deep")
for i in range(1000):
    os.mkdir("d"); os.chdir("d")
open("leaf", "w").write("bottom")
' "$SRC"
note "names that look like options or paths"
for n in -rf --help ... '..a' '.. ' ' lead' 'trail ' "$(printf 'tab\there')" "$(printf 'nl\nnl')" "$(printf '\377\376')"; do
	printf 'x' >"$SRC/$n"
done
ln -s loop1 "$SRC/loop2"
ln -s loop2 "$SRC/loop1"
ln -s . "$SRC/self"

cbrfs vault create v --type filesystem --capacity 10GB >/dev/null
cbrfs vault associate v --path "$SRC" --name src >/dev/null
expect_ok cbrfs backup create v --name a
expect_ok cbrfs restore v a --to "$T/out"
out=$(treecmp "$SRC" "$T/out" 2>&1) && pass "the hostile tree restores exactly" || fail "treecmp: $out"
expect_eq "the leaf 1,000 levels down" "$(find "$T/out" -name leaf -exec cat {} \;)" "bottom"
# A soft limit of 256 open files: restore raises it to the hard limit.
out=$(ulimit -S -n 256 && cbrfs restore v a --to "$T/out256" 2>&1) && pass "restore of 1,000 levels under 'ulimit -S -n 256'" || fail "restore under a low fd limit: $out"
expect_ok cbrfs check --read-data
expect_ok cbrfs mount "$MNT"
expect_eq "the leaf through the mount" "$(find "$MNT/v/a/src" -name leaf -exec cat {} \;)" "bottom"
expect_eq "a symlink loop is a link in the mount" "$(readlink "$MNT/v/a/src/loop1")" "loop2"
expect_ok cbrfs umount "$MNT"

note "restore targets that lead elsewhere"
mkdir -p "$T/elsewhere"
ln -s "$T/elsewhere" "$T/target-link"
expect_exit 2 'not a directory' -- cbrfs restore v a --to "$T/target-link"
expect_eq "nothing was written through the symlink" "$(ls -A "$T/elsewhere" | wc -l)" "0"
mkdir -p "$T/nonempty" && touch "$T/nonempty/x"
expect_exit 2 'not empty' -- cbrfs restore v a --to "$T/nonempty"
