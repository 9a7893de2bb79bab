#!/usr/bin/env bash
# scripts/deb.sh: build the Debian package, $CARGO_TARGET_DIR/debian/cbrfs_*.deb
# (target/debian/ by default).
#
# Builds the release binary, generates what the package installs besides it
# (man pages gzipped, bash/zsh/fish completions, the systemd units of
# docs/systemd with the binary at /usr/bin), then runs `cargo deb` with the
# metadata of [package.metadata.deb] in Cargo.toml. --strip: the release
# profile keeps debug info for profiling (52 MB); the package needs none
# (6 MB). Needs cargo-deb (`cargo install cargo-deb`). Prints the package's
# path and its contents.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || {
	echo "deb.sh: cargo-deb is missing: cargo install cargo-deb" >&2
	exit 2
}
target=${CARGO_TARGET_DIR:-target}
cargo build --release --locked
bin=$target/release/cbrfs
assets=$target/release/deb-assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions" "$assets/systemd"
"$bin" man "$assets/man" >/dev/null
# -n: no name or time stamp in the gzip header, so the package is reproducible.
gzip -9n "$assets"/man/*.1
"$bin" completions bash >"$assets/completions/cbrfs"
"$bin" completions zsh >"$assets/completions/_cbrfs"
"$bin" completions fish >"$assets/completions/cbrfs.fish"
# The units in docs/ name /usr/local/bin (where `cargo install --root
# /usr/local` puts it); the package installs it in /usr/bin.
for u in docs/systemd/*.service docs/systemd/*.timer; do
	sed 's|/usr/local/bin/cbrfs|/usr/bin/cbrfs|g' "$u" >"$assets/systemd/${u##*/}"
done
deb=$(cargo deb --no-build --strip | tail -1)
echo "$deb"
dpkg -c "$deb"
