#!/usr/bin/env bash
# tests/prune_readers.sh: restores beside prune never lose a blob (issue
# #12, finding 7). A writer loop takes a backup, deletes an old one and
# prunes (which replaces every index by one new one, and rewrites packs
# that hold deleted blobs), round after round, while a reader loop restores
# the first backup and the newest one again and again; every restore must
# succeed and match the source it was taken of. A bounded
# race (PRUNE_RACE_SECONDS, default 15), and a narrow one: it did not catch
# the old reader (463cdcb) in 20 s runs. The deterministic proof is the
# in-process test tests/store_readers.rs and the unit test in
# src/store/reader.rs; this one keeps the whole CLI path honest.
. "$(dirname "$0")/lib.sh"

SECS=${PRUNE_RACE_SECONDS:-15}
S=$T/src
mkdir -p "$S/d"
for i in 1 2 3 4 5 6; do random_file "$S/d/f$i" 400000; done
random_file "$S/churn" 300000
random_file "$S/slow" 200000
cp -a "$S" "$T/src-b0"

expect_ok cbrfs vault create v --type filesystem --capacity 10GB
expect_ok cbrfs vault associate v --path "$S" --name src
expect_ok cbrfs backup create v --name b0

# The writer, each round: new content (churn always, slow every other
# round, so that packs are partly live and prune rewrites them, moving
# their blobs), a backup, a snapshot of the source it read, the backup of
# three rounds ago deleted, and a prune rewriting every pack that is not
# wholly live.
writer() {
	local i=1 end=$((SECONDS + SECS))
	mkdir -p "$T/snap"
	while [ "$SECONDS" -lt "$end" ]; do
		random_file "$S/churn" 300000
		[ $((i % 2)) = 0 ] && random_file "$S/slow" 200000
		"$CBRFS_BIN" --store "$STORE" backup create v --name "w$i" >/dev/null 2>&1 || echo "backup w$i failed" >>"$T/writer.err"
		cp -a "$S" "$T/snap/w$i"
		echo "w$i" >"$T/latest.tmp" && mv "$T/latest.tmp" "$T/latest"
		if [ "$i" -gt 3 ]; then
			"$CBRFS_BIN" --store "$STORE" backup delete v "w$((i - 3))" >/dev/null 2>&1
		fi
		rm -rf "$T/snap/w$((i - 6))"
		"$CBRFS_BIN" --store "$STORE" prune v --repack-threshold 100 >/dev/null 2>>"$T/writer.err" ||
			echo "prune round $i failed" >>"$T/writer.err"
		i=$((i + 1))
	done
	echo "$((i - 1))" >"$T/rounds"
}

bg writer
WRITER=$BG_PID
n=0 bad=0
# The reader: the first backup (never deleted) and the newest one (kept
# three rounds, its blobs moved by the prunes of those rounds), in turn.
while kill -0 "$WRITER" 2>/dev/null; do
	n=$((n + 1))
	if [ $((n % 2)) = 0 ] && [ -f "$T/latest" ]; then
		b=$(cat "$T/latest")
		ref=$T/snap/$b
	else
		b=b0
		ref=$T/src-b0
	fi
	rm -rf "$T/r"
	if ! timeout -s KILL 60 "$CBRFS_BIN" --store "$STORE" restore v "$b" --to "$T/r" >/dev/null 2>"$T/restore.err"; then
		bad=$((bad + 1))
		[ "$bad" -le 3 ] && note "restore $n of $b failed: $(head -c 300 "$T/restore.err")"
	elif ! out=$(diff_tree "$ref" "$T/r" 2>&1); then
		bad=$((bad + 1))
		[ "$bad" -le 3 ] && note "restore $n of $b differs: $(head -c 300 <<<"$out")"
	fi
done
wait "$WRITER" 2>/dev/null
rounds=$(cat "$T/rounds" 2>/dev/null || echo 0)
if [ -s "$T/writer.err" ]; then
	fail "the writer failed: $(head -c 400 "$T/writer.err")"
fi
[ "$rounds" -ge 2 ] && [ "$n" -ge 2 ] || fail "too few rounds to mean anything: $rounds prunes, $n restores"
expect_eq "failed restores in $n restores beside $rounds prunes" "$bad" 0
expect_ok cbrfs check --read-data
