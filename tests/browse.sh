#!/usr/bin/env bash
# Browsing without mounting (issue #16): `cbrfs ls`, `find`, `diff --json`,
# and partial restore with --include/--exclude, on the real binary.
. "$(dirname "$0")/lib.sh"

S=$T/data
mkdir -p "$S/home/alice" "$S/home/bob" "$S/etc"
printf 'first notes\n' >"$S/home/alice/notes.txt"
printf 'kept\n' >"$S/home/alice/keep.txt"
printf "bob's\n" >"$S/home/bob/a.txt"
printf 'x=1\n' >"$S/etc/conf"
# A name that would rewrite the terminal if printed raw.
printf 'evil\n' >"$S/etc/$(printf 'bad\033[2Kname')"
chmod 750 "$S/home/alice"

expect_ok cbrfs vault create v --type filesystem --capacity 10
expect_ok cbrfs vault associate v --path "$S" --name data
expect_ok cbrfs backup create v --name b1
printf 'other notes\n' >"$S/home/alice/notes.txt"
printf 'new\n' >"$S/home/alice/new.txt"
rm "$S/home/bob/a.txt"
chmod 600 "$S/etc/conf"
expect_ok cbrfs backup create v --name b2

note "ls"
expect_ok cbrfs ls v b1
expect_eq "ls v b1" "$OUT" "data"
expect_ok cbrfs ls v b1 data/home
expect_eq "ls v b1 data/home" "$OUT" "data/home/alice
data/home/bob"
expect_ok cbrfs ls v latest data/home/alice
expect_eq "ls v latest data/home/alice" "$OUT" "data/home/alice/keep.txt
data/home/alice/new.txt
data/home/alice/notes.txt"
expect_ok cbrfs ls --long v b1 data/home
if matches '^drwxr-x--- +[0-9]+ +[0-9]+ +[0-9]+ [0-9T:-]+Z data/home/alice$' "$OUT"; then
	pass "ls --long shows mode, owner, size, time"
else
	fail "ls --long: $OUT"
fi
expect_ok cbrfs ls --recursive v b1 data
if matches '^data/home/bob/a.txt$' "$OUT"; then pass "ls --recursive lists the tree"; else fail "ls -R: $OUT"; fi
if matches $'\033' "$OUT"; then
	fail "ls printed a control character raw"
elif matches 'bad\\e\[2Kname' "$OUT"; then
	pass "ls quotes names"
else
	fail "ls: no quoted name in $OUT"
fi
expect_ok cbrfs ls v b1 data/home/alice/notes.txt --json
expect_eq "ls --json size" "$(json_get "$T/.out" 'j["entries"][0]["size"]')" 12
expect_eq "ls --json type" "$(json_get "$T/.out" 'j["entries"][0]["type"]')" file
expect_eq "ls --json backup" "$(json_get "$T/.out" 'j["backup"]')" b1
expect_exit 2 'has no entry "carol"' -- cbrfs ls v b1 data/home/carol
expect_exit 2 'has no resource "nope"' -- cbrfs ls v b1 nope
expect_exit 2 'b9' -- cbrfs ls v b9

note "find"
expect_ok cbrfs find v notes.txt
expect_eq "find notes.txt: one line per backup" "$(grep -c 'data/home/alice/notes.txt' <<<"$OUT")" 2
expect_ok cbrfs find v 'home/*/a.txt' --json
expect_eq "find --json: only in b1" "$(json_get "$T/.out" '[m["backup"] for m in j["matches"]]')" '["b1"]'
expect_eq "find --json: size" "$(json_get "$T/.out" 'j["matches"][0]["size"]')" 6

note "diff"
expect_ok cbrfs diff v b1 b2
if matches '^\+ +data/home/alice/new.txt$' "$OUT" && matches '^- +data/home/bob/a.txt$' "$OUT" &&
	matches '^M +data/home/alice/notes.txt +\(content, mtime\)$' "$OUT"; then
	pass "diff shows added, removed, changed"
else
	fail "diff: $OUT"
fi
expect_ok cbrfs diff v b1 latest --json
expect_eq "diff --json added" "$(json_get "$T/.out" 'j["added"]')" 1
expect_eq "diff --json removed" "$(json_get "$T/.out" 'j["removed"]')" 1
expect_eq "diff --json conf" "$(json_get "$T/.out" '[(c["change"], c["metadata"]) for c in j["changes"] if c["path"] == "data/etc/conf"]')" '[["changed", ["mode"]]]'

note "restore --include / --exclude"
expect_ok cbrfs restore v b1 --to "$T/one" --include home/alice/notes.txt
expect_eq "one file restored" "$(cd "$T/one" && find . | sort | tr '\n' ' ')" ". ./home ./home/alice ./home/alice/notes.txt "
expect_eq "its content" "$(cat "$T/one/home/alice/notes.txt")" "first notes"
expect_eq "its parent's recorded mode" "$(stat -c %a "$T/one/home/alice")" 750
expect_ok cbrfs restore v latest --to "$T/glob" --include '*.txt' --exclude keep.txt
expect_eq "glob restore" "$(cd "$T/glob" && find . -type f | sort | tr '\n' ' ')" "./home/alice/new.txt ./home/alice/notes.txt "
expect_exit 2 'no entry "nots.txt"' -- cbrfs restore v b1 --to "$T/none" --include home/alice/nots.txt
if [ -e "$T/none" ]; then fail "a refused restore made its target"; else pass "a refused restore made nothing"; fi
expect_exit 1 'matches it' -- cbrfs restore v b1 --to "$T/pdf" --include '*.pdf'
