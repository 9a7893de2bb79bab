#!/usr/bin/env bash
# tests/mount_mkdir.sh: mkdir in a vault takes a backup. It returns at once;
# the status goes protecting -> available; lookups inside wait (bounded),
# then EAGAIN while other requests are still served; `cbrfs backup wait`
# follows it; a failed backup gives EIO inside and `error` in its xattr;
# every refusal has its errno; readers and a mkdir backup run together.
. "$(dirname "$0")/lib.sh"

MNT=$T/mnt
SRC=$T/src
BIG=$T/bigsrc
mkdir -p "$MNT" "$SRC/sub" "$BIG"
on_exit "'$CBRFS_BIN' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"

for i in $(seq 1 50); do printf 'file %s\n' "$i" >"$SRC/sub/f$i"; done
head -c 5000000 /dev/urandom >"$SRC/blob"
ln -s sub/f1 "$SRC/link"
# Enough data that a backup of it takes well over the 1 s wait bound.
head -c 1500000000 /dev/urandom >"$BIG/huge"

cbrfs vault create v --type filesystem --capacity 10GB >/dev/null || die "vault v"
cbrfs vault associate v --path "$SRC" --name src >/dev/null || die "associate src"
cbrfs backup create v --name b1 >/dev/null || die "backup b1"
cbrfs vault create slow --type filesystem --capacity 10GB --compression none >/dev/null || die "vault slow"
cbrfs vault associate slow --path "$BIG" --name big >/dev/null || die "associate big"
cbrfs vault create empty --type filesystem --capacity 10GB >/dev/null || die "vault empty"

expect_ok cbrfs mount "$MNT" --wait-seconds 1

errno_of() { # errno_of CMD...: the strerror text of a failing command
	"$@" 2>&1 >/dev/null | sed 's/.*: //'
}

note "a quick backup: mkdir and read inside it in one line"
if mkdir "$MNT/v/quick" && cp -a "$MNT/v/quick/src/." "$T/quick-restore"; then
	pass "mkdir v/quick && cp -a v/quick/src/. works in one line"
else
	fail "mkdir && cp -a of a quick backup failed"
fi
out=$(diff_tree "$SRC" "$T/quick-restore") && pass "the copy matches the source" || fail "quick copy differs: $out"
expect_eq "status of the quick backup" "$(getfattr --absolute-names --only-values -n user.cbrfs.status "$MNT/v/quick")" "available"
run cbrfs backup list v --json
printf '%s' "$OUT" >"$T/list.json"
expect_eq "the mkdir backup is in the CLI listing, origin mount" \
	"$(json_get "$T/list.json" '[b["origin"] for b in j if b["name"] == "quick"]')" '["mount"]'
expect_ok cbrfs restore v quick --to "$T/cli-restore"
out=$(treecmp "$SRC" "$T/cli-restore" 2>&1) && pass "the CLI restores the mkdir backup exactly" || fail "CLI restore: $out"

note "a long backup"
t0=$(date +%s%N)
mkdir "$MNT/slow/long" && pass "mkdir of a long backup accepted" || fail "mkdir slow/long"
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -lt 1000 ] && pass "mkdir returned at once (${ms} ms)" || fail "mkdir took ${ms} ms"
expect_eq "status right after mkdir" "$(getfattr --absolute-names --only-values -n user.cbrfs.status "$MNT/slow/long")" "protecting"
ls "$MNT/slow" | grep -qx long && pass "the new backup is listed at once" || fail "long not listed"
out=$(timeout 5 ls "$MNT/slow" 2>&1) && pass "ls of the vault answers during the backup" || fail "ls of the vault hung: $out"
expect_eq "mkdir of another backup in the busy vault" "$(errno_of mkdir "$MNT/slow/other")" "Device or resource busy"
# A reader inside waits for the bound, then gets EAGAIN; meanwhile other
# requests are served.
ls "$MNT/slow/long" >"$T/eagain.out" 2>&1 &
reader=$!
expect_eq "a read elsewhere while a request waits" "$(cat "$MNT/v/b1/src/sub/f7")" "file 7"
wait "$reader"
rc=$?
grep -q 'Resource temporarily unavailable' "$T/eagain.out" && [ "$rc" != 0 ] &&
	pass "lookup inside a long backup: EAGAIN after the bound" || fail "expected EAGAIN: rc $rc, $(cat "$T/eagain.out")"
p=$(getfattr --absolute-names --only-values -n user.cbrfs.progress "$MNT/slow/long")
[ "$p" -ge 0 ] && [ "$p" -le 99 ] && pass "progress while protecting: $p%" || fail "progress $p"
expect_ok cbrfs backup wait slow long
expect_eq "status after backup wait" "$(getfattr --absolute-names --only-values -n user.cbrfs.status "$MNT/slow/long")" "available"
cmp -s "$BIG/huge" "$MNT/slow/long/big/huge" && pass "the long backup reads back exactly" || fail "huge differs"

note "refusals, each with its errno"
expect_eq "bad name" "$(errno_of mkdir "$MNT/v/bad name")" "Invalid argument"
expect_eq "name taken" "$(errno_of mkdir "$MNT/v/b1")" "File exists"
expect_eq "vault without resources" "$(errno_of mkdir "$MNT/empty/x")" "No such file or directory"
expect_eq "mkdir at the top" "$(errno_of mkdir "$MNT/newvault")" "Operation not permitted"
expect_eq "mkdir inside a backup" "$(errno_of mkdir "$MNT/v/b1/src/x")" "Read-only file system"
# A full vault: its packs take its capacity. A sparse stand-in pack of 11 GiB
# makes the used size pass the 10 GB capacity without writing 10 GB.
cbrfs vault create full --type filesystem --capacity 10GB >/dev/null
cbrfs vault associate full --path "$SRC/sub" --name sub >/dev/null
mkdir -p "$STORE/vaults/full/packs/00"
truncate -s 11G "$STORE/vaults/full/packs/00/00000000000000000000000000000000.pack"
wait_for 3 "vault full listed" test -d "$MNT/full"
expect_eq "vault over capacity" "$(errno_of mkdir "$MNT/full/x")" "No space left on device"
grep -q 'full/x.*BackupService.6114' "$STORE/logs/mount.log" && pass "the log says why (BackupService.6114)" || fail "no log line for the refusal"

note "a failing backup"
cbrfs vault create doomed --type filesystem --capacity 10GB >/dev/null
mkdir -p "$T/gone"
cbrfs vault associate doomed --path "$T/gone" --name gone >/dev/null
rm -rf "$T/gone"
wait_for 3 "vault doomed listed" test -d "$MNT/doomed"
mkdir "$MNT/doomed/x" && pass "mkdir accepted (the failure comes later)" || fail "mkdir doomed/x refused"
wait_for 10 "status error" sh -c "getfattr --absolute-names --only-values -n user.cbrfs.status '$MNT/doomed/x' | grep -qx error"
expect_eq "status of the failed backup" "$(getfattr --absolute-names --only-values -n user.cbrfs.status "$MNT/doomed/x")" "error"
why=$(getfattr --absolute-names --only-values -n user.cbrfs.error "$MNT/doomed/x")
[ -n "$why" ] && pass "user.cbrfs.error says why: $why" || fail "no reason in user.cbrfs.error"
expect_eq "lookup inside a failed backup" "$(errno_of ls "$MNT/doomed/x")" "Input/output error"
expect_exit 1 'failed' -- cbrfs backup wait doomed x
cbrfs backup list doomed | grep -q '^x ' && fail "a failed backup is listed by the CLI" || pass "no half-made backup in the CLI listing"

note "several readers and a mkdir backup at once"
for i in 1 2 3; do
	bg cp -a "$MNT/v/b1/src" "$T/reader$i"
	readers="${readers:-} $BG_PID"
done
mkdir "$MNT/v/during" && pass "mkdir during reads accepted" || fail "mkdir during reads"
for p in $readers; do wait "$p" || fail "reader $p failed"; done
for i in 1 2 3; do
	out=$(diff_tree "$SRC" "$T/reader$i") && pass "reader $i copied the backup exactly" || fail "reader $i: $out"
done
expect_ok cbrfs backup wait v during
out=$(diff_tree "$SRC" "$MNT/v/during/src") && pass "the backup taken during reads is exact" || fail "during: $out"

pid=$(pgrep -f -- "mount $MNT --foreground" | head -1)
expect_ok cbrfs umount "$MNT"
[ -n "$pid" ] && wait_exit "$pid" 10 && pass "no process left after unmount"
