//! Link options of the `cbrfs` binary (not of the library or the tests).
//!
//! Pack the binary's relative relocations (`-z pack-relative-relocs`,
//! DT_RELR): as a position-independent executable, cbrfs has about 12,000
//! of them, 296 KB of `.rela.dyn` that the dynamic loader reads at every
//! start, in every process; packed they take 3 KB. Issue 13 measured each
//! command's memory against the old code; with this, on one build, 5 runs
//! each alternating with the binary's pages evicted first (medians): peak
//! RSS of an unchanged re-backup of a 128 MiB image 8684 -> 8288 KiB, the
//! mount's idle RSS 7644 -> 7460 KiB. ASLR is unchanged (still PIE).
//!
//! It needs GNU ld 2.38+ or lld 15+ to link and glibc 2.36+ to run (Debian
//! 12 has both): the binary then asks for the symbol version
//! GLIBC_ABI_DT_RELR (`objdump -p`), so an older loader refuses it at once
//! with that name instead of running it with unrelocated pointers, and
//! `dpkg-shlibdeps` makes the package depend on such a glibc.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
