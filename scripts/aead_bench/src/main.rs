//! Raw throughput of the AEADs and id hashes cbrfs uses or could use, on
//! one core, per buffer size (issue 15, session 11; figures in
//! docs/bench/session11-enc.md). Not part of cbrfs's build: a package of
//! its own, pinned to the versions cbrfs's Cargo.lock has (aes-gcm is
//! only here, to see whether switching would pay).
//!
//!   cd scripts/aead_bench && CARGO_TARGET_DIR=/tmp/aead-bench cargo run --release
//!
//! "(+copy)" rows copy the sealed bytes into the buffer before each open
//! (an in-place open destroys them): what cbrfs's sealed read does too
//! (out of the mapped pack). The copy is from cache here, so it costs
//! little (the memcpy row). Each figure: MB/s of
//! plaintext, best of 5 rounds of 64 MiB each, in
//! this thread's CPU time.

/// This thread's CPU seconds: the machine is shared, and time on a core
/// is what a figure per core needs (wall time counts others' turns).
fn cpu_s() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn rate(len: usize, mut f: impl FnMut()) -> f64 {
    let iters = ((64usize << 20) / len).max(1);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = cpu_s();
        for _ in 0..iters {
            f();
        }
        best = best.min(cpu_s() - t);
    }
    (iters * len) as f64 / best / 1e6
}

fn zero_nonce() -> ring::aead::Nonce {
    ring::aead::Nonce::assume_unique_for_key([0; 12])
}

/// MB/s of a ring open in place of `len` bytes, the sealed bytes copied
/// back before each (an open destroys them), under a key of `key_for`'s
/// bytes: made once, or (`per_object`) again before every open.
fn ring_open(
    len: usize,
    alg: &'static ring::aead::Algorithm,
    key_for: &dyn Fn() -> Vec<u8>,
    per_object: bool,
) -> f64 {
    use ring::aead::{Aad, LessSafeKey, UnboundKey};
    let make = || LessSafeKey::new(UnboundKey::new(alg, &key_for()).unwrap());
    let k = make();
    let mut buf = vec![3u8; len];
    let tag = k
        .seal_in_place_separate_tag(zero_nonce(), Aad::from(b"ad"), &mut buf)
        .unwrap();
    let sealed = buf.clone();
    rate(len, || {
        buf.copy_from_slice(&sealed);
        let fresh;
        let k = if per_object {
            fresh = make();
            &fresh
        } else {
            &k
        };
        k.open_in_place_separate_tag(zero_nonce(), Aad::from(b"ad"), tag, &mut buf, 0..)
            .unwrap();
    })
}

/// MB/s of a RustCrypto AEAD's open in place, as [`ring_open`].
fn rustcrypto_open<A: aes_gcm::aead::AeadInPlace>(
    len: usize,
    c: &A,
    n: &aes_gcm::aead::Nonce<A>,
) -> f64 {
    let mut buf = vec![3u8; len];
    let tag = c.encrypt_in_place_detached(n, b"ad", &mut buf).unwrap();
    let sealed = buf.clone();
    rate(len, || {
        buf.copy_from_slice(&sealed);
        c.decrypt_in_place_detached(n, b"ad", &mut buf, &tag)
            .unwrap();
    })
}

fn main() {
    let key = [7u8; 32];
    let sizes = [16usize << 10, 64 << 10, 256 << 10, 1 << 20];
    println!(
        "| operation | {} |",
        sizes.map(|s| format!("{} KiB", s >> 10)).join(" | ")
    );
    println!("|---|{}", "---:|".repeat(sizes.len()));
    let mut rows: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut row = |name: &'static str, f: &mut dyn FnMut(usize) -> f64| {
        let v: Vec<f64> = sizes.iter().map(|&s| f(s)).collect();
        println!(
            "| {name} | {} |",
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        rows.push((name, v));
    };
    // memcpy: the copy out of the mapped pack that the sealed path makes.
    row("memcpy (Vec::extend_from_slice)", &mut |len| {
        let src = vec![1u8; len];
        let mut dst = Vec::with_capacity(len);
        rate(len, || {
            dst.clear();
            dst.extend_from_slice(&src);
            std::hint::black_box(&dst);
        })
    });
    // ring ChaCha20-Poly1305 (what SealKey::open_ad runs after HChaCha20).
    {
        use ring::aead::*;
        let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key).unwrap());
        row("ring ChaCha20-Poly1305 seal", &mut |len| {
            let mut buf = vec![3u8; len];
            rate(len, || {
                let t = k
                    .seal_in_place_separate_tag(zero_nonce(), Aad::from(b"ad"), &mut buf)
                    .unwrap();
                let _ = std::hint::black_box(t);
            })
        });
    }
    let chacha = &ring::aead::CHACHA20_POLY1305;
    let aes = &ring::aead::AES_256_GCM;
    row(
        "ring ChaCha20-Poly1305 open, in place (+copy)",
        &mut |len| ring_open(len, chacha, &|| key.to_vec(), false),
    );
    // What cbrfs's SealKey::open_ad does per object: HChaCha20 of the
    // vault key and the nonce's first 16 bytes, a ring key of that
    // subkey, then the open.
    row(
        "XChaCha20-Poly1305 as cbrfs opens it (HChaCha20 + ring key per object, +copy)",
        &mut |len| {
            let subkey = || {
                chacha20::hchacha::<chacha20::cipher::consts::U10>(
                    chacha20::Key::from_slice(&key),
                    chacha20::cipher::generic_array::GenericArray::from_slice(&[1u8; 16]),
                )
                .to_vec()
            };
            ring_open(len, chacha, &subkey, true)
        },
    );
    // AES-GCM's 96-bit nonce needs a key per object (or per pack) in a
    // large vault: the cost of a ring AES-256 key schedule per object.
    row(
        "ring AES-256-GCM, a new key per object (+copy)",
        &mut |len| ring_open(len, aes, &|| std::hint::black_box(key).to_vec(), true),
    );
    row("ring AES-256-GCM open, in place (+copy)", &mut |len| {
        ring_open(len, aes, &|| key.to_vec(), false)
    });
    // RustCrypto XChaCha20-Poly1305 (the crate the issue names).
    {
        use chacha20poly1305::aead::KeyInit;
        let c = chacha20poly1305::XChaCha20Poly1305::new(&key.into());
        let n = chacha20poly1305::XNonce::from([0u8; 24]);
        row(
            "RustCrypto XChaCha20-Poly1305 open, in place (+copy)",
            &mut |len| rustcrypto_open(len, &c, &n),
        );
        // Out of place: Poly1305 over the (mapped) ciphertext, then ChaCha20
        // from it into the buffer: no copy, two passes.
        // (Not the exact AEAD construction: only its cost, two passes.)
        use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        use poly1305::universal_hash::UniversalHash;
        row(
            "RustCrypto ChaCha20 b2b + Poly1305 (out of place, no copy)",
            &mut |len| {
                let src = vec![3u8; len];
                let mut dst = vec![0u8; len];
                rate(len, || {
                    let mut cc = chacha20::ChaCha20::new(&key.into(), &[0u8; 12].into());
                    let mut pk = [0u8; 64];
                    cc.apply_keystream(&mut pk);
                    let mut p = poly1305::Poly1305::new(poly1305::Key::from_slice(&pk[..32]));
                    p.update_padded(&src);
                    std::hint::black_box(p.finalize());
                    cc.seek(64u64);
                    cc.apply_keystream_b2b(&src, &mut dst).unwrap();
                    std::hint::black_box(&dst);
                })
            },
        );
    }
    {
        use aes_gcm::aead::KeyInit;
        let c = aes_gcm::Aes256Gcm::new(&key.into());
        let n = aes_gcm::Nonce::from([0u8; 12]);
        row(
            "RustCrypto AES-256-GCM open, in place (+copy)",
            &mut |len| rustcrypto_open(len, &c, &n),
        );
    }
    // The id hashes: keyed BLAKE3 (encrypted vaults) and keyed XXH3 (plain).
    row("keyed BLAKE3 (one update per chunk)", &mut |len| {
        let src = vec![5u8; len];
        rate(len, || {
            let mut h = blake3::Hasher::new_keyed(&key);
            h.update(&src);
            std::hint::black_box(h.finalize());
        })
    });
    row("XXH3-128 with secret", &mut |len| {
        let src = vec![5u8; len];
        let secret = [9u8; 192];
        rate(len, || {
            std::hint::black_box(xxhash_rust::xxh3::xxh3_128_with_secret(&src, &secret));
        })
    });
}
