#!/usr/bin/env bash
# Bad input, one case at a time: each is refused with exit code 2 and a
# `cbrfs: error:` line naming the object and the rule broken (with CBR's
# error code where CBR has one), and changes nothing. Valid edge values
# are accepted.
. "$(dirname "$0")/lib.sh"

E='^cbrfs: error: '
S1=$T/src1
S2=$T/src2
mkdir -p "$S1" "$S2"
printf 'one\n' >"$S1/a"
printf 'two\n' >"$S2/b"

# bad CODE PATTERN cmd...: expect exit CODE with a `cbrfs: error:` line
# matching PATTERN, and no change to the vault list.
bad() {
	local code=$1 pattern=$2
	shift 2
	local before after
	before=$(cbrfs vault list --json 2>&1)
	expect_exit "$code" "$pattern" -- "$@"
	after=$(cbrfs vault list --json 2>&1)
	if [ "$before" != "$after" ]; then
		fail "'$*' was refused yet changed the vaults: before $before after $after"
	fi
}

name65=$(printf 'a%.0s' $(seq 1 65))
name64=$(printf 'b%.0s' $(seq 1 64))
desc256=$(printf 'd%.0s' $(seq 1 256))
desc255=$(printf 'd%.0s' $(seq 1 255))
key37=$(printf 'k%.0s' $(seq 1 37))
key36=$(printf 'k%.0s' $(seq 1 36))
val44=$(printf 'v%.0s' $(seq 1 44))
val43=$(printf 'v%.0s' $(seq 1 43))
tags11=()
tags10=()
for i in $(seq 1 11); do tags11+=(--tag "k$i=v$i"); done
for i in $(seq 1 10); do tags10+=(--tag "k$i=v$i"); done
mk() { cbrfs vault create "$@" --type filesystem --capacity 10; }

note "vault names"
bad 2 "${E}BackupService.9900: vault name \"\" is invalid: it must be 1-64 characters of letters, digits, '_' and '-'" mk ""
bad 2 "${E}.*vault name \"$name65\" is invalid: it must be 1-64 characters" mk "$name65"
bad 2 "${E}.*vault name \"my vault\" is invalid: it must be 1-64 characters of letters, digits" mk "my vault"
bad 2 "${E}.*vault name \"my\\.vault\" is invalid" mk "my.vault"
bad 2 "${E}.*vault name \"caf.*\" is invalid" mk "café"
bad 2 "${E}.*vault name \"\\.\\./x\" is invalid" mk "../x"
bad 2 "${E}.*vault name \"a/b\" is invalid" mk "a/b"

note "vault type, description, tags"
bad 2 "${E}.*vault type \"tape\" is invalid: it is one of filesystem, disk, server" \
	cbrfs vault create vt --type tape --capacity 10
bad 2 "${E}.*vault description is 256 characters long: at most 255" mk vd --description "$desc256"
bad 2 "${E}BackupService.6600: a vault has at most 10 tags; this would give it 11" mk vt11 "${tags11[@]}"
bad 2 "${E}.*tag key \"$key37\" is invalid: a key is 1-36 characters" mk vk --tag "$key37=v"
bad 2 "${E}.*tag key \"\" is invalid: a key is 1-36 characters" mk vk --tag "=v"
bad 2 "${E}.*tag \"k\" has an invalid value \"$val44\": a value is 0-43 characters" mk vv --tag "k=$val44"
bad 2 "${E}.*tag key \"k\\.x\" is invalid: a key is 1-36 characters of letters, digits" mk vc --tag "k.x=v"
bad 2 "${E}.*tag \"k\" has an invalid value \"a b\"" mk vc --tag "k=a b"
bad 2 "${E}.*tag \"k\" has an invalid value \"v!\"" mk vc --tag "k=v!"
bad 2 "${E}.*tag \"novalue\" is invalid: write it as KEY=VALUE" mk vn --tag novalue
bad 2 "${E}.*tag key \"k\" is given twice: tag keys are unique" mk vd2 --tag k=1 --tag k=2

note "capacities"
for c in 9 0 10485761; do
	bad 2 "${E}BackupService.6101: capacity \"$c\" is out of range: a vault's capacity is 10 GB to 10485760 GB" \
		cbrfs vault create vcap --type filesystem --capacity "$c"
done
bad 2 "${E}BackupService.6101: capacity \"10241TB\" is out of range" cbrfs vault create vcap --type filesystem --capacity 10241TB
for c in abc 1.5TB 100MB -5 "" GB 10PB " 10 GB x"; do
	bad 2 "${E}BackupService.6101: capacity \"$c\" is invalid: write a whole number of GB or TB" \
		cbrfs vault create vcap --type filesystem --capacity="$c"
done

# Written the way a user writes it, with a space: the rule's message, not
# clap's "unexpected argument '-5'".
bad 2 "${E}BackupService.6101: capacity \"-5GB\" is invalid: write a whole number of GB or TB" \
	cbrfs vault create vcap --type filesystem --capacity -5GB
mk vneg >/dev/null
bad 2 "${E}BackupService.6101: capacity \"-5GB\" is invalid" cbrfs vault update vneg --capacity -5GB
expect_ok cbrfs vault delete vneg

note "usage errors (clap): missing and unknown arguments"
bad 2 "required|--capacity" cbrfs vault create vx --type filesystem
bad 2 "unexpected argument|unrecognized" cbrfs vault create vx --type filesystem --capacity 10 --bogus
bad 2 "unrecognized subcommand" cbrfs vault frobnicate
# The policy name is optional (policy_XXXX): the usage line says so, in the
# help and in the message of a refused call.
matches 'Usage: cbrfs policy create .*\[NAME\]$' "$(cbrfs policy create --help)" &&
	pass "policy create --help: [NAME] is optional" || fail "policy create usage: $(cbrfs policy create --help | grep Usage)"
bad 2 'Usage: cbrfs policy create .*\[NAME\]' cbrfs policy create --schedule 'FREQ=DAILY;BYHOUR=1;BYMINUTE=0'

note "duplicates and updates"
expect_ok cbrfs vault create v1 --type filesystem --capacity 10 --description first
bad 2 "${E}BackupService.6106: vault \"v1\" already exists" cbrfs vault create v1 --type filesystem --capacity 20
expect_eq "the refused duplicate left v1's description" \
	"$(cbrfs vault show v1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["description"])')" first
expect_ok cbrfs vault update v1 --capacity 20
bad 2 "${E}BackupService.6101: vault v1: capacity 10 GB is smaller than the current 20 GB: a vault's capacity can only be expanded" \
	cbrfs vault update v1 --capacity 10
bad 2 "${E}BackupService.6101: capacity \"5\" is out of range" cbrfs vault update v1 --capacity 5
bad 2 "${E}.*vault description is 256 characters long" cbrfs vault update v1 --description "$desc256"
expect_ok cbrfs vault update v1 "${tags10[@]}"
bad 2 "${E}BackupService.6600: a vault has at most 10 tags; this would give it 11" cbrfs vault update v1 --tag k11=v
bad 2 "${E}.*tag \"nope\" is not set on this vault" cbrfs vault update v1 --untag nope
bad 2 "${E}BackupService.6105: vault \"nosuch\" does not exist" cbrfs vault update nosuch --capacity 30
expect_eq "v1's capacity after refused updates" \
	"$(cbrfs vault show v1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["capacity_gb"])')" 20

note "resources: type, one vault only, no duplicates, capacity"
expect_ok cbrfs vault create disk1 --type disk --capacity 10
bad 2 "${E}BackupService.6102: vault disk1 is a disk vault: a directory \\(--path\\) goes into a filesystem vault" \
	cbrfs vault associate disk1 --path "$S1"
expect_ok cbrfs vault create srv1 --type server --capacity 10
bad 2 "${E}BackupService.6102: vault srv1 is a server vault" cbrfs vault associate srv1 --path "$S1"
expect_ok cbrfs vault associate v1 --path "$S1"
expect_ok cbrfs vault create v2 --type filesystem --capacity 10
bad 2 "${E}BackupService.6103: resource $S1 is already associated with vault v1: a resource can be in one vault only" \
	cbrfs vault associate v2 --path "$S1"
bad 2 "${E}BackupService.6103: resource $S1 is already associated with vault v1" \
	cbrfs vault associate v2 --path "$S1/../src1/"
bad 2 "${E}BackupService.6104: resource $S1 is already associated with vault v1" cbrfs vault associate v1 --path "$S1"
mkdir -p "$T/other/src1"
bad 2 "${E}BackupService.6104: vault v1 already has a resource named \"src1\": choose another with --name" \
	cbrfs vault associate v1 --path "$T/other/src1"
bad 2 "${E}.*resource path $T/missing" cbrfs vault associate v2 --path "$T/missing"
bad 2 "${E}.*resource path $S1/a is not a directory" cbrfs vault associate v2 --path "$S1/a"
bad 2 "${E}.*resource name \"has space\" is invalid" cbrfs vault associate v2 --path "$S2" --name "has space"
bad 2 "${E}.*resource path .* is inside the cbrfs store" cbrfs vault associate v2 --path "$STORE/vaults"
bad 2 "${E}BackupService.6105: vault \"nosuch\" does not exist" cbrfs vault associate nosuch --path "$S2"
mkdir -p "$T/$(printf 'bad\377dir')"
bad 2 "${E}.*resource path .*bad.*dir is not valid UTF-8" cbrfs vault associate v2 --path "$T/$(printf 'bad\377dir')"

BIG=$T/big
mkdir -p "$BIG"
truncate -s 11G "$BIG/sparse-11G"
expect_ok cbrfs vault create small --type filesystem --capacity 10
bad 2 "${E}BackupService.6101: vault small: its resources would total 11.0 GiB, more than its capacity of 10.0 GiB" \
	cbrfs vault associate small --path "$BIG"
expect_ok cbrfs vault update small --capacity 12
expect_ok cbrfs vault associate small --path "$BIG"

note "unknown objects"
bad 2 "${E}BackupService.6105: vault \"nosuch\" does not exist" cbrfs vault show nosuch
bad 2 "${E}BackupService.6105: vault \"nosuch\" does not exist" cbrfs vault delete nosuch
bad 2 "${E}BackupService.6105: vault \"nosuch\" does not exist" cbrfs backup create nosuch
bad 2 "${E}BackupService.6105: vault \"nosuch\" does not exist" cbrfs backup list nosuch
bad 2 "${E}BackupService.6105: vault \"nosuch\" does not exist" cbrfs restore nosuch b --to "$T/r-x"
bad 2 "${E}BackupService.6105: vault \"nosuch\" does not exist" cbrfs check nosuch
bad 2 "${E}BackupService.6200: backup \"nob\" does not exist in vault v1" cbrfs backup show v1 nob
bad 2 "${E}BackupService.6200: backup \"nob\" does not exist in vault v1" cbrfs backup delete v1 nob
bad 2 "${E}BackupService.6200: backup \"nob\" does not exist in vault v1" cbrfs restore v1 nob --to "$T/r-x"
[ -e "$T/r-x" ] && fail "a refused restore created its target $T/r-x"
bad 2 "${E}BackupService.6135: resource \"nores\" is not associated with vault v1" \
	cbrfs backup create v1 --resource nores
bad 2 "${E}BackupService.6135: resource \"nores\" is not associated with vault v1" cbrfs vault dissociate v1 nores

note "backups: names, emptiness"
bad 2 "${E}.*backup name \"bad name\" is invalid: it must be 1-64 characters" cbrfs backup create v1 --name "bad name"
bad 2 "${E}.*backup name \"$name65\" is invalid" cbrfs backup create v1 --name "$name65"
bad 2 "${E}.*backup name \"x\\.y\" is invalid" cbrfs backup create v1 --name "x.y"
bad 2 "${E}.*backup name \"latest\" is reserved" cbrfs backup create v1 --name latest
bad 2 "${E}.*backup description is 256 characters long" cbrfs backup create v1 --name bd --description "$desc256"
expect_ok cbrfs backup create v1 --name b1
bad 2 "${E}.*backup \"b1\" already exists in vault v1" cbrfs backup create v1 --name b1
bad 2 "${E}BackupService.0001: vault v2 has no resources to back up" cbrfs backup create v2
nb=$(cbrfs backup list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
expect_eq "backups after the refused ones" "$nb" 1

note "restore targets"
mkdir -p "$T/nonempty"
printf 'keep me\n' >"$T/nonempty/keep"
bad 2 "${E}.*restore target $T/nonempty is not empty: give an empty or new directory" \
	cbrfs restore v1 b1 --to "$T/nonempty"
expect_eq "the non-empty target is untouched" "$(ls -A "$T/nonempty")" keep
bad 2 "${E}.*restore target $S1/a exists and is not a directory" cbrfs restore v1 b1 --to "$S1/a"
bad 2 "${E}.*resource \"nores\" is not in backup b1 of vault v1" cbrfs restore v1 b1 --resource nores --to "$T/r-y"

note "dissociating a resource that backups hold"
r1=$(basename "$S1")
bad 2 "${E}BackupService.7301: resource $r1 of vault v1 is in 1 backups \\(b1\\): dissociating it deletes it from them; add --force" \
	cbrfs vault dissociate v1 "$r1"
expect_ok cbrfs backup show v1 b1

note "deleting a vault that holds backups"
bad 2 "${E}BackupService.7301: vault v1 holds 1 backups: deleting it deletes them; add --force" cbrfs vault delete v1
expect_ok cbrfs backup show v1 b1
expect_ok cbrfs vault delete v1 --force
bad 2 "${E}BackupService.6105: vault \"v1\" does not exist" cbrfs vault show v1
expect_ok cbrfs vault delete v2

note "a vault busy with another backup (its writer lock held): exit 1, BackupService.6125"
expect_ok cbrfs vault create busy --type filesystem --capacity 10
expect_ok cbrfs vault associate busy --path "$S2"
LOCK=$STORE/vaults/busy/backup.lock
# This shell stands in for a running backup: it holds the vault's writer
# lock (a flock, as cbrfs takes it) on a descriptor of its own.
exec {lockfd}>>"$LOCK"
flock -x "$lockfd"
lock_held() { ! flock -n "$LOCK" true; }
if lock_held; then
	pass "the stand-in holds $LOCK"
	expect_exit 1 "${E}BackupService.6125: vault busy: a backup task is in progress" -- cbrfs backup create busy --name nb
	expect_exit 1 "${E}BackupService.6125: vault busy: a backup task is in progress" -- cbrfs vault delete busy --force
	expect_exit 1 "${E}BackupService.6125: vault busy: a backup task is in progress" -- cbrfs vault dissociate busy src2
else
	fail "could not hold $LOCK for the busy case"
fi
flock -u "$lockfd"
exec {lockfd}>&-
expect_ok cbrfs backup create busy --name nb
expect_ok cbrfs vault delete busy --force

note "valid edge values are accepted"
expect_ok cbrfs vault create "$name64" --type filesystem --capacity 10GB --description "$desc255" \
	"${tags10[@]}"
expect_ok cbrfs vault show "$name64" --json
j=$T/edge.json
cp "$T/.out" "$j"
expect_eq "64-character vault name" "$(json_get "$j" 'j["name"]')" "$name64"
expect_eq "10 tags kept" "$(json_get "$j" 'len(j["tags"])')" 10
expect_eq "10 GB capacity" "$(json_get "$j" 'j["capacity_gb"]')" 10
expect_eq "255-character description" "$(json_get "$j" 'len(j["description"])')" 255
expect_ok cbrfs vault create vmax --type filesystem --capacity 10485760GB --tag "$key36=$val43" --tag empty=
expect_ok cbrfs vault show vmax --json
cp "$T/.out" "$j"
expect_eq "10485760 GB capacity" "$(json_get "$j" 'j["capacity_gb"]')" 10485760
expect_eq "36-character key with a 43-character value" \
	"$(json_get "$j" '[t["key"] + "=" + t["value"] for t in j["tags"]][0]')" "$key36=$val43"
expect_eq "a tag with an empty value" "$(json_get "$j" '[t["value"] for t in j["tags"] if t["key"] == "empty"]')" '[""]'
expect_ok cbrfs vault create vtb --type filesystem --capacity 10240TB
expect_ok cbrfs vault create v-_x --type filesystem --capacity 10
expect_ok cbrfs vault associate v-_x --path "$S2"
expect_ok cbrfs backup create v-_x --name "$name64"
expect_ok cbrfs restore v-_x "$name64" --to "$T/r-edge"
expect_ok cbrfs backup create v-_x
if matches 'backup manualbk_[0-9a-z]{4} of vault v-_x' "$OUT"; then
	pass "a backup without --name is called manualbk_XXXX"
else
	fail "default backup name: $OUT"
fi
expect_ok cbrfs vault create --type filesystem --capacity 10
if matches 'created vault vault_[0-9a-z]{4} ' "$OUT"; then
	pass "a vault without a name is called vault_XXXX"
else
	fail "default vault name: $OUT"
fi
