#!/usr/bin/env bash
# tests/reliability/concurrency.sh: for SOAK_SECONDS [default 60], all at
# once, each in a loop:
#   - backups of vault a and of vault b (two vaults at the same time);
#   - a second backup of the busy vault a: it succeeds (it waited or found
#     a free) or is refused with BackupService.6125, nothing else;
#   - mkdir backups of vault m through the mount, followed by `backup wait`;
#   - two readers copying committed backups of m through the mount and
#     comparing each copy with the source (m's source does not change);
#   - retention on vault a (`policy run-due --now` a day later each pass,
#     --keep-last 2) and `cbrfs prune`, which may be refused (6125) beside a
#     backup.
# At the end every read matched, nothing failed otherwise, and
# `cbrfs check --read-data` passes.
. "$(dirname "$0")/../lib.sh"

SOAK=${SOAK_SECONDS:-60}
note "SOAK_SECONDS=$SOAK"
MNT=$T/mnt
mkdir -p "$MNT" "$T/sa" "$T/sb" "$T/sm/d" "$T/log"
on_exit "'$CBRFS_BIN' --store '$STORE' umount --lazy '$MNT'; fusermount3 -uz '$MNT'"
for i in $(seq 1 60); do printf 'm file %d\n' "$i" >"$T/sm/d/f$i"; done
head -c 20000000 /dev/urandom >"$T/sm/blob"
ln -s d/f1 "$T/sm/link"

for v in a b m; do
	cbrfs vault create $v --type filesystem --capacity 100GB >/dev/null || die "vault $v"
	cbrfs vault associate $v --path "$T/s$v" --name src >/dev/null || die "associate $v"
done
expect_ok cbrfs policy create keep2 --schedule 'FREQ=DAILY;BYHOUR=1;BYMINUTE=0' --keep-last 2
expect_ok cbrfs policy apply keep2 a
expect_ok cbrfs backup create m --name m0
expect_ok cbrfs mount "$MNT" --wait-seconds 5
wait_mounted "$MNT"

END=$((SECONDS + SOAK))

# outcome WHAT OUT RC: the line of an operation WHAT that exited RC and
# wrote OUT: refused is exit 1 with BackupService.6125 (the vault busy).
outcome() {
	if [ "$3" = 0 ]; then
		echo "ok $1"
	elif [ "$3" = 1 ] && grep -q 'BackupService.6125' "$2"; then
		echo "refused $1"
	else
		echo "BAD $1 exit $3: $(tr '\n' ' ' <"$2" | head -c 400)"
	fi
}

# Each loop appends one line per operation to $T/log/NAME: "ok ...",
# "refused ..." or "BAD ..." (a failure).
backups() { # backups VAULT LOG
	local n=0
	while [ "$SECONDS" -lt "$END" ]; do
		n=$((n + 1))
		# New data, but never while a backup of the vault reads it (that
		# is exit 3, "changed during the backup", not what this tests):
		# writers take the vault's lock file exclusively, backups shared.
		flock -x "$T/lock-$1" sh -c 'head -c 8000000 /dev/urandom >"$1"' sh "$T/s$1/data.$2"
		flock -s "$T/lock-$1" "$CBRFS_BIN" --store "$STORE" backup create "$1" --name "$2-$n" >"$T/out-$2" 2>&1
		outcome "$2-$n" "$T/out-$2" $?
	done >>"$T/log/$2"
}

mkdirs() {
	local n=0 out
	while [ "$SECONDS" -lt "$END" ]; do
		n=$((n + 1))
		if ! out=$(mkdir "$MNT/m/mk$n" 2>&1); then
			if matches 'busy' "$out"; then echo "refused mk$n"; else echo "BAD mkdir mk$n: $out"; fi
			continue
		fi
		if out=$("$CBRFS_BIN" --store "$STORE" backup wait m "mk$n" 2>&1); then
			echo "ok mk$n"
		else
			echo "BAD mk$n: backup wait: $out"
		fi
	done >>"$T/log/mkdir"
}

reader() { # reader ID
	local n=0 name names out d=$T/read$1
	while [ "$SECONDS" -lt "$END" ]; do
		n=$((n + 1))
		names=$("$CBRFS_BIN" --store "$STORE" backup list m --json | json_get /dev/stdin '" ".join(b["name"] for b in j)')
		set -- $names
		[ $# -gt 0 ] || continue
		shift $((RANDOM % $#))
		name=$1
		rm -rf "$d"
		if ! out=$(cp -a "$MNT/m/$name/src" "$d" 2>&1); then
			echo "BAD read $name: cp: $out"
			continue
		fi
		if out=$(diff_tree "$T/sm" "$d"); then
			echo "ok read $name"
		else
			echo "BAD read $name differs: $(head -c 400 <<<"$out")"
		fi
	done >>"$T/log/reader$1"
	rm -rf "$d"
}

retention() {
	local day=0 now
	while [ "$SECONDS" -lt "$END" ]; do
		day=$((day + 1))
		now=$(date -u -d "2027-01-01 01:00:00 UTC + $day days" +%Y-%m-%dT%H:%M:%SZ)
		"$CBRFS_BIN" --store "$STORE" policy run-due --now "$now" >"$T/out-ret" 2>&1
		outcome "run-due $now" "$T/out-ret" $?
		"$CBRFS_BIN" --store "$STORE" prune >"$T/out-prune" 2>&1
		outcome "prune" "$T/out-prune" $?
	done >>"$T/log/retention"
}

note "soaking for ${SOAK}s"
pids=()
backups a a1 &
pids+=($!)
backups a a2 &
pids+=($!)
backups b b1 &
pids+=($!)
mkdirs &
pids+=($!)
reader 1 &
pids+=($!)
reader 2 &
pids+=($!)
retention &
pids+=($!)
_BG_PIDS+=("${pids[@]}")
for p in "${pids[@]}"; do
	wait "$p"
done

for f in a1 a2 b1 mkdir reader1 reader2 retention; do
	touch "$T/log/$f"
	ok=$(grep -c '^ok' "$T/log/$f")
	refused=$(grep -c '^refused' "$T/log/$f")
	bad=$(grep -c '^BAD' "$T/log/$f")
	note "$f: $ok ok, $refused refused, $bad failed"
	if [ "$bad" -gt 0 ]; then
		fail "$f: $(grep '^BAD' "$T/log/$f" | head -n 3)"
	elif [ "$ok" -gt 0 ]; then
		pass "$f: $ok operations succeeded, $refused refused as busy, none failed"
	else
		fail "$f: nothing succeeded in ${SOAK}s ($refused refused)"
	fi
done
reads=$(cat "$T/log/reader1" "$T/log/reader2" | grep -c '^ok read')
both=$(grep -c '^ok' "$T/log/a1" "$T/log/b1" | cut -d: -f2 | sort -n | head -n 1)
[ "$both" -gt 0 ] && pass "backups of two vaults ran side by side" || fail "vault a or b never backed up"
autos=$(cbrfs backup list a --json | json_get /dev/stdin 'len([b for b in j if b["origin"] == "policy"])')
[ "$autos" -le 2 ] && pass "retention keeps at most 2 automatic backups of a ($autos)" || fail "retention: $autos automatic backups of a"
expect_ok cbrfs umount "$MNT"
expect_ok cbrfs check --read-data
note "SUMMARY: ${SOAK}s, $reads reads through the mount matched, $(cat "$T"/log/* 2>/dev/null | grep -c '^ok') operations ok, $(cat "$T"/log/* | grep -c '^refused') refused as busy, failures $FAILS"
