//! Reproducible test bytes, for both kinds of tests: integration tests
//! reach it as `common::pseudo_random`, the unit tests as
//! `testkit::pseudo_random` (src/testkit.rs includes this file by path),
//! so that both read the same bytes from one generator.

/// `n` bytes from a xorshift generator seeded with `seed`: the same bytes
/// on every run, and not compressible.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
