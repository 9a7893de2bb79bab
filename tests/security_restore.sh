#!/usr/bin/env bash
# tests/security_restore.sh: restore as root into a directory an ordinary
# user owns, while that user races it (issue #12, finding 3), and targets
# others made (finding 5).
#
# The user (made by this test) keeps replacing each file restore creates
# with a symlink to a root-owned file outside the target, or with a file of
# their own holding their program, while root restores a backup of
# setuid-root programs. The property, not a message: the file outside keeps
# its bytes, mode and owner, and no setuid root-owned file holds the
# user's bytes. Also: such a target is refused without
# --allow-untrusted-target (exit 2), and a disk is not restored into an
# empty file the user made beforehand.
. "$(dirname "$0")/lib.sh"

# The user runs a system python: root's PATH may lead to one under /root.
PY=
for p in /usr/bin/python3 /usr/local/bin/python3; do
	[ -x "$p" ] && PY=$p && break
done
if ! is_root || ! command -v setpriv >/dev/null || [ -z "$PY" ]; then
	skip "needs root, setpriv and a python3 in /usr/bin or /usr/local/bin"
	exit 0
fi

ATK=cbrfs-rst
if ! id -u "$ATK" >/dev/null 2>&1; then
	useradd --system --no-create-home --shell /usr/sbin/nologin "$ATK" >/dev/null 2>&1 ||
		die "cannot create user $ATK"
	on_exit "userdel '$ATK'"
fi
AUID=$(id -u "$ATK")
AGID=$(id -g "$ATK")
as_atk() { setpriv --reuid="$AUID" --regid="$AGID" --clear-groups "$@"; }
# The user must reach the directories made for them inside $T.
chmod 0711 "$T"

ROUNDS=${ROUNDS:-6}
SRC=$T/src
mkdir -p "$SRC/sub"
note "a backup of 120 setuid-root programs"
for i in $(seq 1 120); do
	{
		printf '#!/bin/sh\necho backed-up program %s\n' "$i"
		head -c 32768 /dev/zero | tr '\0' '#'
	} >"$SRC/prog$i"
	chown 0:0 "$SRC/prog$i"
	chmod 4755 "$SRC/prog$i"
done
printf 'inside\n' >"$SRC/sub/file"
cbrfs vault create v --type filesystem --capacity 10GB >/dev/null
cbrfs vault associate v --path "$SRC" --name src >/dev/null
expect_ok cbrfs backup create v --name b

VICTIM=$T/victim
printf 'root secret\n' >"$VICTIM"
chmod 0600 "$VICTIM"
victim_state() { printf '%s %s\n' "$(stat -c '%a %u %g %s' "$VICTIM")" "$(sha256sum <"$VICTIM" | cut -d' ' -f1)"; }
V0=$(victim_state)

# The user's program: what they would like to see run as root.
ATKDIR=$T/atk
mkdir -p "$ATKDIR"
chown "$AUID:$AGID" "$ATKDIR"

# The attacker: for a bounded time, every regular file in the target that
# is not theirs is replaced, in turn, by a symlink to the victim or by a
# file of theirs with their bytes (renamed over it). Stops when the stop
# file appears or after 120 s.
cat >"$ATKDIR/race.py" <<'EOF'
import os, sys, time
target, victim, stop = sys.argv[1], sys.argv[2], sys.argv[3]
me = os.getuid()
payload = b"#!/bin/sh\necho ATTACKER-PAYLOAD\n"
deadline = time.time() + 120
n = 0
while not os.path.exists(stop) and time.time() < deadline:
    try:
        entries = list(os.scandir(target))
    except OSError:
        continue
    for e in entries:
        try:
            st = e.stat(follow_symlinks=False)
        except OSError:
            continue
        if not e.is_file(follow_symlinks=False) or st.st_uid == me:
            continue
        n += 1
        p = e.path
        try:
            if n % 2:
                os.unlink(p)
                os.symlink(victim, p)
            else:
                tmp = os.path.join(target, ".x%d" % n)
                with open(tmp, "wb") as f:
                    f.write(payload)
                os.chmod(tmp, 0o755)
                os.rename(tmp, p)
        except OSError:
            pass
print(n)
EOF

has_flag=0
"$CBRFS_BIN" restore --help 2>&1 | grep -q -- --allow-untrusted-target && has_flag=1
flag=()
[ "$has_flag" = 1 ] && flag=(--allow-untrusted-target)

note "$ROUNDS rounds: root restores into a directory of $ATK while $ATK swaps entries"
bad=0
swaps=0
for r in $(seq 1 "$ROUNDS"); do
	TGT=$ATKDIR/t$r
	mkdir "$TGT"
	chown "$AUID:$AGID" "$TGT"
	STOP=$T/stop$r
	bg as_atk "$PY" "$ATKDIR/race.py" "$TGT" "$VICTIM" "$STOP" >"$T/swaps$r"
	apid=$BG_PID
	cbrfs restore v b --to "$TGT" "${flag[@]}" >/dev/null 2>&1
	touch "$STOP"
	wait "$apid" 2>/dev/null
	swaps=$((swaps + $(cat "$T/swaps$r" 2>/dev/null || echo 0)))
	if [ "$(victim_state)" != "$V0" ]; then
		fail "round $r: the root-owned file outside the target changed: $(victim_state) (was $V0)"
		bad=1
	fi
	# Every setuid file owned by root anywhere under $T holds backed-up bytes.
	while IFS= read -r -d '' f; do
		if grep -q ATTACKER-PAYLOAD "$f"; then
			fail "round $r: $f is setuid root and holds the user's program"
			bad=1
		fi
	done < <(find "$T" -xdev -type f -user root -perm -4000 -print0)
done
# A race that never swapped anything would prove nothing.
if [ "$swaps" -eq 0 ]; then
	fail "the user's process swapped no entry in $ROUNDS rounds: the race did not run"
elif [ "$bad" = 0 ]; then
	pass "$ROUNDS rounds, $swaps swaps: nothing outside the target changed, no setuid-root file holds the user's bytes"
fi

note "targets another user controls"
OTHER=$T/other
mkdir "$OTHER"
chown "$AUID:$AGID" "$OTHER"
expect_exit 2 'owned by uid' -- cbrfs restore v b --to "$OTHER"
expect_eq "nothing was restored into it" "$(ls -A "$OTHER" | wc -l)" "0"
expect_ok cbrfs restore v b --to "$OTHER" --allow-untrusted-target
expect_eq "with the flag the restore is whole" "$(cat "$OTHER/sub/file" 2>&1)" "inside"
OPEN=$T/open
mkdir -m 0777 "$OPEN"
chmod 0777 "$OPEN"
expect_exit 2 'mode 0777' -- cbrfs restore v b --to "$OPEN"

note "a disk restore into a file the user made beforehand"
truncate -s 4M "$T/disk.img"
printf 'disk secret' | dd of="$T/disk.img" conv=notrunc status=none
cbrfs vault create d --type disk --capacity 10GB >/dev/null
cbrfs vault associate d --disk "$T/disk.img" --name root >/dev/null
expect_ok cbrfs backup create d --name db
as_atk touch "$ATKDIR/waiting.img"
expect_exit 2 'owned by uid' -- cbrfs restore d db --resource root --to "$ATKDIR/waiting.img"
expect_eq "the user's file stays empty" "$(stat -c %s "$ATKDIR/waiting.img")" "0"
as_atk ln -s "$T/disk-out.img" "$ATKDIR/link.img"
expect_exit 2 'symbolic link' -- cbrfs restore d db --resource root --to "$ATKDIR/link.img"
expect_eq "nothing was written where the link points" "$(ls "$T/disk-out.img" 2>/dev/null | wc -l)" "0"
expect_ok cbrfs restore d db --resource root --to "$T/new.img"
expect_eq "a new image is the disk" "$(sha256sum <"$T/new.img")" "$(sha256sum <"$T/disk.img")"
expect_eq "a new image is closed to others" "$(stat -c %a "$T/new.img")" "600"
