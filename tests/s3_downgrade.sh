#!/usr/bin/env bash
# A downgrade of an encrypted vault in a bucket (issue 14): someone with
# write access to the bucket (not the password) replaces its settings by a
# clear vault's `vault.json` and a clear `key`, removing the key slots, or
# deletes the settings and keys. On the real SeaweedFS cluster of
# scripts/seaweed.sh; the bucket's objects are changed through the filer's
# HTTP API, which the S3 gateway serves.
# - the host that attached the vault as encrypted keeps it encrypted (its
#   registration says so): its next backup fails naming the vault and the
#   clear key, or the missing key slots; nothing is added to the bucket;
# - a new host's `vault attach` refuses settings that say "clear" beside
#   sealed indexes (or key slots), naming the bucket and the object, and
#   registers nothing.
. "$(dirname "$0")/lib.sh"
. "$REPO/scripts/seaweed.sh"

export CBRFS_KDF_PARAMS=m=256,t=1,p=1
export CBRFS_PASSWORD=downgrade-test-password

seaweed_start || die "cannot start the SeaweedFS cluster"
on_exit seaweed_stop
EP=$SEAWEED_S3_ENDPOINT
ENC=down-$$
PLAIN=plain-$$
URL=s3://$SEAWEED_BUCKET/$ENC
FILER=http://127.0.0.1:$SEAWEED_FILER_PORT/buckets/$SEAWEED_BUCKET

# The bucket's objects, through the filer: get, put (checked by reading it
# back), delete, and the names under a prefix.
obj_get() { curl -sf "$FILER/$1"; }
obj_put() {
	curl -sf -X PUT --data-binary "@$2" "$FILER/$1" >/dev/null || return 1
	cmp -s <(obj_get "$1") "$2"
}
obj_del() { curl -sf -X DELETE "$FILER/$1" >/dev/null; }
obj_names() {
	curl -sf -H 'Accept: application/json' "$FILER/$1/?limit=1000" |
		python3 -c 'import json, sys; print("\n".join(sorted(e["FullPath"].rsplit("/", 1)[1] for e in (json.load(sys.stdin).get("Entries") or []))))'
}

S=$T/src
mkdir -p "$S"
printf 'secret contents\n' >"$S/file"

note "an encrypted vault in the bucket, and a clear one beside it"
expect_ok cbrfs vault create ev --type filesystem --capacity 10GB --storage "$URL" --s3-endpoint "$EP"
expect_ok cbrfs vault associate ev --path "$S" --name src
expect_ok cbrfs backup create ev --name b1
P=$T/storeP
expect_ok env "$CBRFS_BIN" --store "$P" vault create ev --type filesystem --capacity 10GB --storage "s3://$SEAWEED_BUCKET/$PLAIN" --s3-endpoint "$EP" --no-encrypt
obj_get "$PLAIN/vault.json" >"$T/plain.json" && obj_get "$PLAIN/key" >"$T/plain.key" ||
	die "cannot read the clear vault's objects through the filer"
slots=$(obj_names "$ENC/keys")
[ -n "$slots" ] && pass "the encrypted vault has key slots: $slots" || die "no key slots listed under $ENC/keys"
indexes_before=$(obj_names "$ENC/index")

note "downgrade: clear settings and a clear key in place of the slots"
obj_put "$ENC/vault.json" "$T/plain.json" && obj_put "$ENC/key" "$T/plain.key" ||
	die "cannot put objects through the filer"
for s in $slots; do obj_del "$ENC/keys/$s"; done
[ -z "$(obj_names "$ENC/keys")" ] && pass "the key slots are gone" || fail "key slots left: $(obj_names "$ENC/keys")"

expect_exit 1 'vault ev is encrypted but .* holds a clear `key` object' -- cbrfs backup create ev --name b2
expect_eq "no index added to the bucket" "$(obj_names "$ENC/index")" "$indexes_before"
expect_exit 1 'vault ev is encrypted but .* holds a clear `key` object' -- cbrfs restore ev b1 --to "$T/never"
expect_eq "this host's registration still says encrypted" "$(json_get "$STORE/vaults/ev/vault.json" 'j["encrypted"]')" True

STORE_B=$T/storeB
expect_exit 1 "$URL: vault.json says the vault is not encrypted, but index index/.* is sealed" -- env "$CBRFS_BIN" --store "$STORE_B" vault attach "$URL" --s3-endpoint "$EP"
[ ! -e "$STORE_B/vaults/ev/vault.json" ] && pass "the refused attach registered nothing" || fail "the refused attach registered a vault"

note "the same with the key slots left: attach names a slot"
obj_put "$ENC/keys/0.slot" "$T/plain.key" || die "cannot put a slot through the filer"
expect_exit 1 "$URL: vault.json says the vault is not encrypted, but the bucket holds key slot keys/0.slot" -- env "$CBRFS_BIN" --store "$STORE_B" vault attach "$URL" --s3-endpoint "$EP"
obj_del "$ENC/keys/0.slot"

note "deletion: no settings, no key, no slots"
obj_del "$ENC/vault.json"
obj_del "$ENC/key"
# This host keeps the planted clear key it fetched: it still says so.
expect_exit 1 'vault ev is encrypted but .* holds a clear `key` object' -- cbrfs backup create ev --name b3
expect_eq "no index added to the bucket" "$(obj_names "$ENC/index")" "$indexes_before"
expect_exit 2 'no cbrfs vault there' -- env "$CBRFS_BIN" --store "$STORE_B" vault attach "$URL" --s3-endpoint "$EP"
# Another encrypted vault, its settings and slots deleted (nothing planted).
ENC2=down2-$$
expect_ok cbrfs vault create ev2 --type filesystem --capacity 10GB --storage "s3://$SEAWEED_BUCKET/$ENC2" --s3-endpoint "$EP"
expect_ok cbrfs vault associate ev2 --path "$S" --name src
expect_ok cbrfs backup create ev2 --name c1
indexes2=$(obj_names "$ENC2/index")
obj_del "$ENC2/vault.json"
for s in $(obj_names "$ENC2/keys"); do obj_del "$ENC2/keys/$s"; done
expect_exit 1 'vault ev2' -- cbrfs backup create ev2 --name c2
matches 'slot|key' "$ERR" && pass "the failure names the keys: $(tail -n 1 <<<"$ERR")" || fail "backup said: $ERR"
expect_eq "no index added to the bucket" "$(obj_names "$ENC2/index")" "$indexes2"
expect_eq "ev2's registration still says encrypted" "$(json_get "$STORE/vaults/ev2/vault.json" 'j["encrypted"]')" True
