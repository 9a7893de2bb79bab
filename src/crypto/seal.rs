//! Sealed objects (docs/FORMAT.md §16.3): XChaCha20-Poly1305 with a random
//! 24-byte nonce, and associated data that binds each object to its kind
//! and, where the reader knows it, to its name or id, so that an object
//! cannot be passed off as one of another kind or as another object of the
//! same kind.
//!
//! Envelope: `scheme (1) | nonce (24) | ciphertext (n) | tag (16)`.

use super::keys::{random, ID_LEN, KEY_LEN};
use crate::error::{Error, Result};
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

/// First byte of every sealed object: XChaCha20-Poly1305 with the
/// associated data of §16.3. Another scheme gets another byte.
pub const SCHEME_XCHACHA20POLY1305: u8 = 1;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 24;
/// Bytes of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object puts before its ciphertext: scheme, nonce.
pub const PREFIX_LEN: usize = 1 + NONCE_LEN;
/// Bytes a sealed object adds to its plaintext: scheme, nonce, tag.
pub const OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// First 8 bytes of every associated data: no other protocol's AEAD input
/// starts with them.
pub const AD_DOMAIN: &[u8; 8] = b"cbrfs-v2";

/// The kind byte of each sealed object, in the associated data. Never
/// renumbered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// One blob's stored bytes inside a pack.
    PackBlob = 1,
    /// A pack's blob table.
    PackTrailer = 2,
    /// An index file's entries.
    Index = 3,
    /// A backup record's payload.
    Record = 4,
    /// The vault's settings.
    Config = 5,
    /// The master key inside a key slot (§16.4).
    Slot = 6,
    /// The holder's identity inside the writer lease of a vault in a
    /// bucket (§19.5; [`SealKey::seal_lease`]). Not an [`Object`]: the
    /// lease is no object of the store's format, and [`Object`] is matched
    /// exhaustively by the golden tests.
    Lease = 7,
    /// A disk's host-local fingerprint table (§20; [`SealKey::seal_local`]),
    /// not an [`Object`] either: it never leaves the host.
    Fingerprints = 8,
}

/// Which object is sealed or opened: its kind and what the reader knows of
/// its identity, all bound into the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object<'a> {
    /// A blob in a pack, by its id (the reader looked the id up in an
    /// index, so it knows which blob it expects).
    PackBlob(&'a [u8; ID_LEN]),
    /// The blob table of the pack with this id (the pack's file name).
    PackTrailer(&'a [u8; ID_LEN]),
    /// The index with this id (its file name).
    Index(&'a [u8; ID_LEN]),
    /// The record of the backup with this name (its file name).
    Record(&'a str),
    /// The vault's settings: one per vault, and the key is per vault.
    Config,
}

impl Object<'_> {
    /// The kind byte.
    pub fn kind(&self) -> Kind {
        match self {
            Object::PackBlob(_) => Kind::PackBlob,
            Object::PackTrailer(_) => Kind::PackTrailer,
            Object::Index(_) => Kind::Index,
            Object::Record(_) => Kind::Record,
            Object::Config => Kind::Config,
        }
    }

    /// The identity bound with the kind.
    pub fn binding(&self) -> &[u8] {
        match self {
            Object::PackBlob(id) | Object::PackTrailer(id) | Object::Index(id) => &id[..],
            Object::Record(name) => name.as_bytes(),
            Object::Config => &[],
        }
    }
}

impl fmt::Display for Object<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::fsutil::hex;
        match self {
            Object::PackBlob(id) => write!(f, "blob {}", hex(&id[..])),
            Object::PackTrailer(id) => write!(f, "blob table of pack {}", hex(&id[..])),
            Object::Index(id) => write!(f, "index {}", hex(&id[..])),
            Object::Record(name) => write!(f, "record of backup {name}"),
            Object::Config => f.write_str("vault settings"),
        }
    }
}

/// The associated data of §16.3: domain, scheme, kind, binding length (u32
/// little-endian), binding. The length makes the encoding unambiguous.
pub(crate) fn associated_data(kind: Kind, binding: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(AD_DOMAIN.len() + 6 + binding.len());
    ad.extend_from_slice(AD_DOMAIN);
    ad.push(SCHEME_XCHACHA20POLY1305);
    ad.push(kind as u8);
    // Bindings are ids, backup names (≤ 64 bytes) and slot headers; a
    // longer one is a bug of the caller, not input.
    ad.extend_from_slice(&(binding.len() as u32).to_le_bytes());
    ad.extend_from_slice(binding);
    ad
}

/// Append the sealed form of `plaintext` to `out`.
pub(crate) fn seal_raw(
    cipher: &XChaCha20Poly1305,
    ad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let nonce: [u8; NONCE_LEN] = random()?;
    out.reserve(OVERHEAD + plaintext.len());
    out.push(SCHEME_XCHACHA20POLY1305);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), ad, &mut out[start..])
        .map_err(|_| {
            // Only a plaintext beyond 256 GiB makes the cipher refuse.
            Error::failed(format!("sealing {} bytes failed", plaintext.len()))
        })?;
    out.extend_from_slice(&tag);
    Ok(())
}

/// A sealed object's nonce, ciphertext and tag, or an error naming `what`:
/// too short, or an unknown scheme.
fn split_sealed<'a>(
    sealed: &'a [u8],
    what: &dyn fmt::Display,
) -> Result<(&'a [u8; NONCE_LEN], &'a [u8], &'a [u8; TAG_LEN])> {
    if sealed.len() < OVERHEAD {
        return Err(Error::corrupt(format!(
            "{what}: {} bytes, shorter than a sealed object's {OVERHEAD} bytes of envelope",
            sealed.len()
        )));
    }
    if sealed[0] != SCHEME_XCHACHA20POLY1305 {
        return Err(Error::corrupt(format!(
            "{what}: unknown sealing scheme {} (this cbrfs knows {SCHEME_XCHACHA20POLY1305})",
            sealed[0]
        )));
    }
    let (nonce, rest) = sealed[1..].split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    match (nonce.try_into(), tag.try_into()) {
        (Ok(n), Ok(t)) => Ok((n, body, t)),
        // The lengths were checked above.
        _ => Err(Error::corrupt(format!("{what}: damaged envelope"))),
    }
}

fn auth_failed(what: &dyn fmt::Display) -> Error {
    Error::corrupt(format!(
        "{what}: authentication failed: the object is damaged, truncated \
         or not the one expected"
    ))
}

/// The plaintext of a sealed object, or an error naming `what`: too short,
/// an unknown scheme, or a tag that does not verify (damaged, truncated,
/// replaced, another kind or another object). No byte of a failed open is
/// returned.
pub(crate) fn open_raw(
    cipher: &XChaCha20Poly1305,
    ad: &[u8],
    sealed: &[u8],
    what: &dyn fmt::Display,
) -> Result<Vec<u8>> {
    let (nonce, body, tag) = split_sealed(sealed, what)?;
    let mut buf = body.to_vec();
    match cipher.decrypt_in_place_detached(
        XNonce::from_slice(nonce),
        ad,
        &mut buf,
        Tag::from_slice(tag),
    ) {
        Ok(()) => Ok(buf),
        // The crate checks the tag before it decrypts, so `buf` still
        // holds ciphertext: nothing of a failed open is returned or left.
        Err(_) => Err(auth_failed(what)),
    }
}

/// The key that seals every object of one vault (derived from its master
/// key, §16.2), wiped from memory when dropped.
///
/// The envelope is XChaCha20-Poly1305 as the RustCrypto crate computes it
/// (and as key slots still compute it, [`seal_raw`]): a subkey
/// HChaCha20(key, nonce[..16]), then the IETF ChaCha20-Poly1305 of RFC 8439
/// under that subkey with the 12-byte nonce `0000 || nonce[16..]`. The
/// second step runs in ring (BoringSSL's assembly, already in the build
/// through rustls): ChaCha20 and Poly1305 in one pass over the data with
/// AVX2, where the RustCrypto crates make two passes. On 1 MiB blobs this
/// is what keeps an encrypted vault's reads near a plain one's. The
/// subkey ring holds on the stack for one object is not wiped (ring keeps
/// no zeroizing keys); it opens that one object only and does not give
/// the vault's key (HChaCha20 is one-way in the key).
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; KEY_LEN]>);

/// The 16 bytes of a nonce HChaCha20 takes; the 12-byte nonce of the inner
/// ChaCha20-Poly1305 is four zero bytes and the last 8 of the 24.
const HCHACHA_NONCE: usize = 16;

impl SealKey {
    pub(crate) fn new(key: Zeroizing<[u8; KEY_LEN]>) -> Self {
        SealKey(key)
    }

    /// The ChaCha20-Poly1305 key and nonce of the object with this
    /// XChaCha20 nonce.
    fn inner_cipher(
        &self,
        nonce: &[u8; NONCE_LEN],
    ) -> Result<(ring::aead::LessSafeKey, ring::aead::Nonce)> {
        let (head, tail) = nonce.split_at(HCHACHA_NONCE);
        let mut subkey = chacha20::hchacha::<chacha20::cipher::consts::U10>(
            chacha20::Key::from_slice(&self.0[..]),
            chacha20::cipher::generic_array::GenericArray::from_slice(head),
        );
        let key = ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &subkey);
        subkey.zeroize();
        // A 32-byte key is never refused.
        let key = key.map_err(|_| Error::failed("the sealing cipher refused its key"))?;
        let mut inner = [0u8; 12];
        inner[4..].copy_from_slice(tail);
        Ok((
            ring::aead::LessSafeKey::new(key),
            ring::aead::Nonce::assume_unique_for_key(inner),
        ))
    }

    /// `plaintext` sealed as `obj`: a fresh random nonce each time, so
    /// sealing the same bytes twice gives different objects.
    pub fn seal(&self, obj: Object<'_>, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_into(obj, plaintext, &mut out)?;
        Ok(out)
    }

    /// Append `plaintext` sealed as `obj` to `out` (a pack writer appends
    /// blob after blob to one buffer).
    pub fn seal_into(&self, obj: Object<'_>, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let ad = associated_data(obj.kind(), obj.binding());
        self.seal_ad(&ad, plaintext, out)
    }

    /// The holder's identity of the writer lease with token `token`
    /// (kind 7, bound to the token: §19.5), sealed.
    pub fn seal_lease(&self, token: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.seal_local(Kind::Lease, token.as_bytes(), plaintext)
    }

    /// The plaintext of a lease's sealed identity, which must have been
    /// sealed by [`SealKey::seal_lease`] with this key and `token`;
    /// otherwise an error naming the writer lease.
    pub fn open_lease(&self, token: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        self.open_local(Kind::Lease, token.as_bytes(), sealed, &"writer lease")
    }

    /// `plaintext` sealed as a `kind` that is no [`Object`] of the store
    /// (a lease, a fingerprint table), bound to `binding`.
    pub fn seal_local(&self, kind: Kind, binding: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.seal_ad(&associated_data(kind, binding), plaintext, &mut out)?;
        Ok(out)
    }

    /// The plaintext of what [`SealKey::seal_local`] sealed with this key,
    /// `kind` and `binding`; otherwise an error naming `what`.
    pub fn open_local(
        &self,
        kind: Kind,
        binding: &[u8],
        sealed: &[u8],
        what: &dyn fmt::Display,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_ad(&associated_data(kind, binding), sealed, what, &mut out)?;
        Ok(out)
    }

    /// [`SealKey::seal_local`] in place, for a large local object built
    /// where it is written: `buf[at..at + PREFIX_LEN]` is room for the
    /// scheme and nonce, `buf[at + PREFIX_LEN..]` is the plaintext, which
    /// is encrypted where it lies, and the tag is appended. `buf[at..]` is
    /// then what `seal_local` gives; `buf[..at]` is left as it was.
    pub fn seal_local_in_place(
        &self,
        kind: Kind,
        binding: &[u8],
        buf: &mut Vec<u8>,
        at: usize,
    ) -> Result<()> {
        if buf.len() < at + PREFIX_LEN {
            return Err(Error::failed(format!(
                "sealing in place: {} bytes, no room for the envelope at {at}",
                buf.len()
            )));
        }
        self.seal_ad_in_place(&associated_data(kind, binding), buf, at)
    }

    /// Seal `buf[at + PREFIX_LEN..]` under associated data `ad` where it
    /// lies: scheme and nonce written into `buf[at..at + PREFIX_LEN]`, the
    /// tag appended. The one sealing path of every object.
    fn seal_ad_in_place(&self, ad: &[u8], buf: &mut Vec<u8>, at: usize) -> Result<()> {
        let start = at + PREFIX_LEN;
        let nonce: [u8; NONCE_LEN] = random()?;
        let (key, inner) = self.inner_cipher(&nonce)?;
        buf[at] = SCHEME_XCHACHA20POLY1305;
        buf[at + 1..start].copy_from_slice(&nonce);
        let len = buf.len() - start;
        let tag = key
            .seal_in_place_separate_tag(inner, ring::aead::Aad::from(ad), &mut buf[start..])
            .map_err(|_| {
                // Only a plaintext beyond 256 GiB makes the cipher refuse.
                Error::failed(format!("sealing {len} bytes failed"))
            })?;
        buf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// [`SealKey::open_local`] in place: the plaintext of `sealed`,
    /// decrypted where it lies (`sealed[PREFIX_LEN..len - TAG_LEN]`), or an
    /// error naming `what`; a failed open leaves no plaintext there.
    pub fn open_local_in_place<'b>(
        &self,
        kind: Kind,
        binding: &[u8],
        sealed: &'b mut [u8],
        what: &dyn fmt::Display,
    ) -> Result<&'b [u8]> {
        let (nonce, _, tag) = split_sealed(sealed, what)?;
        let (nonce, tag) = (*nonce, *tag);
        let (key, inner) = self.inner_cipher(&nonce)?;
        let end = sealed.len() - TAG_LEN;
        let ad = associated_data(kind, binding);
        match key.open_in_place_separate_tag(
            inner,
            ring::aead::Aad::from(&ad),
            ring::aead::Tag::from(tag),
            &mut sealed[PREFIX_LEN..end],
            0..,
        ) {
            Ok(plain) => Ok(plain),
            Err(_) => Err(auth_failed(what)),
        }
    }

    /// Append `plaintext` sealed under associated data `ad` to `out`.
    fn seal_ad(&self, ad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let at = out.len();
        out.reserve(OVERHEAD + plaintext.len());
        out.extend_from_slice(&[0; PREFIX_LEN]);
        out.extend_from_slice(plaintext);
        let sealed = self.seal_ad_in_place(ad, out, at);
        if sealed.is_err() {
            // Nothing of a failed seal is left in `out`.
            out.truncate(at);
        }
        sealed
    }

    /// The plaintext of `sealed`, which must have been sealed as `obj` with
    /// this key; otherwise an error naming `obj` (exit 1, EIO in the mount).
    /// The plaintext is a plain `Vec`: it is the user's data (the page cache
    /// holds it too), and wiping every blob read would cost the mount a
    /// pass over each; keys are the secrets wiped.
    pub fn open(&self, obj: Object<'_>, sealed: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_into(obj, sealed, &mut out)?;
        Ok(out)
    }

    /// [`SealKey::open`] into `out` (cleared first), for a reader that
    /// reuses one buffer (the compressed form of a blob, decompressed at
    /// once). On failure `out` is left empty.
    pub fn open_into(&self, obj: Object<'_>, sealed: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let ad = associated_data(obj.kind(), obj.binding());
        self.open_ad(&ad, sealed, &obj, out)
    }

    /// Open `sealed` under associated data `ad` into `out` (cleared
    /// first); errors name `what`.
    fn open_ad(
        &self,
        ad: &[u8],
        sealed: &[u8],
        what: &dyn fmt::Display,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        let (nonce, body, tag) = split_sealed(sealed, what)?;
        let (key, inner) = self.inner_cipher(nonce)?;
        // The one copy out of the (read-only, mapped) pack; decrypted in
        // place.
        out.extend_from_slice(body);
        match key.open_in_place_separate_tag(
            inner,
            ring::aead::Aad::from(ad),
            ring::aead::Tag::from(*tag),
            out,
            0..,
        ) {
            Ok(_) => Ok(()),
            // ring zeroes what it decrypted when the tag does not verify:
            // nothing of a failed open is returned or left.
            Err(_) => {
                out.clear();
                Err(auth_failed(what))
            }
        }
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<secret>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;
    use crate::error::Kind as ErrKind;
    use std::collections::HashSet;

    fn key() -> SealKey {
        MasterKey::generate().unwrap().seal_key()
    }

    const ID_A: [u8; 16] = [0xaa; 16];
    const ID_B: [u8; 16] = [0xbb; 16];

    fn every_object() -> Vec<Object<'static>> {
        vec![
            Object::PackBlob(&ID_A),
            Object::PackTrailer(&ID_A),
            Object::Index(&ID_A),
            Object::Record("b1"),
            Object::Config,
        ]
    }

    fn corrupt_err(r: Result<Vec<u8>>, name: &str) {
        let e = match r {
            Ok(_) => panic!("opened a tampered object"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrKind::Corrupt, "{e}");
        assert!(e.to_string().contains(name), "{e} should name {name}");
    }

    /// Sealing and opening in place give and take the same objects as
    /// `seal_local` and `open_local`; a flipped byte does not open.
    #[test]
    fn in_place_is_the_same_envelope() {
        let k = key();
        for len in [0usize, 1, 44, 100_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            let mut buf = b"head".to_vec();
            buf.extend_from_slice(&[0; PREFIX_LEN]);
            buf.extend_from_slice(&plain);
            k.seal_local_in_place(Kind::Fingerprints, b"name", &mut buf, 4)
                .unwrap();
            assert_eq!(&buf[..4], b"head");
            assert_eq!(buf.len(), 4 + plain.len() + OVERHEAD);
            let what = "table";
            let opened = k
                .open_local(Kind::Fingerprints, b"name", &buf[4..], &what)
                .unwrap();
            assert_eq!(opened, plain);
            assert!(k
                .open_local(Kind::Fingerprints, b"other", &buf[4..], &what)
                .is_err());
            let mut sealed = k.seal_local(Kind::Fingerprints, b"name", &plain).unwrap();
            let mut flipped = sealed.clone();
            let got = k
                .open_local_in_place(Kind::Fingerprints, b"name", &mut sealed, &what)
                .unwrap();
            assert_eq!(got, &plain[..]);
            let at = flipped.len() / 2;
            flipped[at] ^= 1;
            let e = k
                .open_local_in_place(Kind::Fingerprints, b"name", &mut flipped, &what)
                .unwrap_err();
            assert!(e.to_string().contains("table"), "{e}");
        }
        let mut short = vec![0u8; PREFIX_LEN - 1];
        assert!(k
            .seal_local_in_place(Kind::Fingerprints, b"", &mut short, 0)
            .is_err());
    }

    #[test]
    fn round_trip_every_kind_and_size() {
        let k = key();
        for obj in every_object() {
            for len in [0usize, 1, 15, 16, 17, 4096, 16384, 100_000] {
                let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
                let sealed = k.seal(obj, &plain).unwrap();
                assert_eq!(sealed.len(), plain.len() + OVERHEAD);
                assert_eq!(sealed[0], SCHEME_XCHACHA20POLY1305);
                assert_eq!(&k.open(obj, &sealed).unwrap()[..], &plain[..], "{obj}");
            }
        }
    }

    /// The RustCrypto XChaCha20-Poly1305 of the same key: what sealed
    /// objects were written with before ring did the inner AEAD.
    fn rustcrypto(k: &SealKey) -> XChaCha20Poly1305 {
        use chacha20poly1305::aead::KeyInit;
        XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&k.0[..]))
    }

    /// The format did not change with the implementation: objects sealed
    /// by the RustCrypto crate open here and the other way round, for every
    /// kind and for lengths across the cipher's block (64) and the AVX2
    /// code's stride (512) boundaries; a tampered object fails both ways.
    #[test]
    fn same_envelope_as_the_rustcrypto_cipher() {
        let k = key();
        let rc = rustcrypto(&k);
        let mut lens: Vec<usize> = (0..300).collect();
        lens.extend([
            511,
            512,
            513,
            1023,
            1024,
            4095,
            16384,
            16385,
            100_000,
            1 << 20,
        ]);
        for obj in every_object() {
            let ad = associated_data(obj.kind(), obj.binding());
            for &len in &lens {
                let plain: Vec<u8> = (0..len).map(|i| (i * 31 + len) as u8).collect();
                let mut theirs = Vec::new();
                seal_raw(&rc, &ad, &plain, &mut theirs).unwrap();
                assert_eq!(k.open(obj, &theirs).unwrap(), plain, "{obj} {len}");
                let ours = k.seal(obj, &plain).unwrap();
                assert_eq!(
                    open_raw(&rc, &ad, &ours, &obj).unwrap(),
                    plain,
                    "{obj} {len}"
                );
                let mut bad = ours.clone();
                let at = bad.len() / 2;
                bad[at] ^= 0x40;
                assert!(open_raw(&rc, &ad, &bad, &obj).is_err());
                corrupt_err(k.open(obj, &bad), &obj.to_string());
            }
        }
    }

    #[test]
    fn seal_into_appends() {
        let k = key();
        let mut buf = b"HEAD".to_vec();
        k.seal_into(Object::PackBlob(&ID_A), b"one", &mut buf)
            .unwrap();
        let first_end = buf.len();
        k.seal_into(Object::PackBlob(&ID_B), b"two", &mut buf)
            .unwrap();
        assert_eq!(&buf[..4], b"HEAD");
        let one = k.open(Object::PackBlob(&ID_A), &buf[4..first_end]).unwrap();
        let two = k.open(Object::PackBlob(&ID_B), &buf[first_end..]).unwrap();
        assert_eq!((&one[..], &two[..]), (&b"one"[..], &b"two"[..]));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let k = key();
        let obj = Object::Record("nightly");
        let sealed = k.seal(obj, b"a backup record's payload").unwrap();
        // Scheme byte, every nonce, ciphertext and tag byte, each bit.
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut t = sealed.clone();
                t[i] ^= 1 << bit;
                corrupt_err(k.open(obj, &t), "record of backup nightly");
            }
        }
    }

    #[test]
    fn truncation_and_extension_are_detected() {
        let k = key();
        let obj = Object::Index(&ID_A);
        let sealed = k.seal(obj, &[5u8; 300]).unwrap();
        for len in 0..sealed.len() {
            corrupt_err(k.open(obj, &sealed[..len]), &crate::fsutil::hex(&ID_A));
        }
        let mut longer = sealed.clone();
        longer.push(0);
        corrupt_err(k.open(obj, &longer), "index");
        // An envelope-sized object whose ciphertext was cut off entirely.
        let mut head = sealed[..1 + NONCE_LEN].to_vec();
        head.extend_from_slice(&sealed[sealed.len() - TAG_LEN..]);
        corrupt_err(k.open(obj, &head), "index");
    }

    #[test]
    fn another_kind_is_refused() {
        let k = key();
        let objs = every_object();
        for a in &objs {
            let sealed = k.seal(*a, b"payload").unwrap();
            for b in &objs {
                if a != b {
                    corrupt_err(k.open(*b, &sealed), &b.to_string());
                }
            }
        }
    }

    #[test]
    fn another_object_of_the_same_kind_is_refused() {
        let k = key();
        let pairs = [
            (Object::PackBlob(&ID_A), Object::PackBlob(&ID_B)),
            (Object::PackTrailer(&ID_A), Object::PackTrailer(&ID_B)),
            (Object::Index(&ID_A), Object::Index(&ID_B)),
            (Object::Record("monday"), Object::Record("tuesday")),
            // Binding lengths are encoded: "ab" + "" never equals "a" + "b".
            (Object::Record("ab"), Object::Record("a")),
        ];
        for (a, b) in pairs {
            let sealed = k.seal(a, b"payload").unwrap();
            corrupt_err(k.open(b, &sealed), &b.to_string());
            assert!(k.open(a, &sealed).is_ok());
        }
    }

    /// A lease's sealed identity opens only with its own token, and is no
    /// object of another kind (nor is one of them a lease identity).
    #[test]
    fn lease_identities_are_bound_to_their_token_and_kind() {
        let k = key();
        let sealed = k.seal_lease("aa", b"host and pid").unwrap();
        assert_eq!(sealed.len(), b"host and pid".len() + OVERHEAD);
        assert_eq!(k.open_lease("aa", &sealed).unwrap(), b"host and pid");
        corrupt_err(k.open_lease("bb", &sealed), "writer lease");
        corrupt_err(k.open(Object::Record("aa"), &sealed), "record of backup aa");
        let record = k.seal(Object::Record("aa"), b"payload").unwrap();
        corrupt_err(k.open_lease("aa", &record), "writer lease");
        let mut bad = sealed.clone();
        bad[OVERHEAD / 2] ^= 1;
        corrupt_err(k.open_lease("aa", &bad), "writer lease");
        corrupt_err(key().open_lease("aa", &sealed), "writer lease");
    }

    #[test]
    fn another_vaults_key_is_refused() {
        let (k1, k2) = (key(), key());
        let sealed = k1.seal(Object::Config, b"settings").unwrap();
        corrupt_err(k2.open(Object::Config, &sealed), "vault settings");
    }

    #[test]
    fn nonces_never_repeat() {
        let k = key();
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let s = k.seal(Object::PackBlob(&ID_A), b"same bytes").unwrap();
            assert!(seen.insert(s[1..1 + NONCE_LEN].to_vec()), "nonce repeated");
        }
    }

    #[test]
    fn plaintext_does_not_appear_in_the_sealed_form() {
        let k = key();
        let marker = b"UNIQUE-MARKER-0123456789".repeat(50);
        let sealed = k.seal(Object::PackBlob(&ID_A), &marker).unwrap();
        assert!(!sealed.windows(12).any(|w| w == &marker[..12]));
    }

    proptest::proptest! {
        /// Any bytes offered as a sealed object of any kind: an error naming
        /// it, never a panic, never plaintext.
        #[test]
        fn any_bytes_never_open(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let k = MasterKey::from_bytes([9; 32]).seal_key();
            for obj in every_object() {
                let e = k.open(obj, &bytes).err();
                proptest::prop_assert!(e.is_some_and(|e| e.to_string().contains(&obj.to_string())));
            }
        }
    }

    /// Seal and open throughput on 16 KiB blobs (the disk chunk size) and
    /// 1 MiB blobs (a file chunk's average), beside the RustCrypto cipher
    /// alone and the keyed BLAKE3 id a read also computes. Run with
    /// `cargo test --release --lib crypto::seal -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_seal_open() {
        let k = key();
        let rc = rustcrypto(&k);
        let ad = associated_data(Kind::PackBlob, &ID_A);
        let rate = |n: usize, size: usize, f: &mut dyn FnMut()| {
            let t = std::time::Instant::now();
            for _ in 0..n {
                f();
            }
            (n * size) as f64 / 1e6 / t.elapsed().as_secs_f64()
        };
        for size in [16 * 1024usize, 1 << 20] {
            let blob = vec![0x5au8; size];
            let n = (256 << 20) / size;
            let mut sealed = Vec::new();
            let seal = rate(n, size, &mut || {
                sealed = k.seal(Object::PackBlob(&ID_A), &blob).unwrap()
            });
            let open = rate(n, size, &mut || {
                let p = k.open(Object::PackBlob(&ID_A), &sealed).unwrap();
                assert_eq!(p.len(), size);
            });
            let rc_open = rate(n, size, &mut || {
                let p = open_raw(&rc, &ad, &sealed, &"blob").unwrap();
                assert_eq!(p.len(), size);
            });
            let ids = crate::crypto::MasterKey::generate().unwrap().blob_id_key();
            let id = rate(n, size, &mut || {
                std::hint::black_box(ids.id(&blob));
            });
            let copy = rate(n, size, &mut || {
                std::hint::black_box(blob.to_vec());
            });
            println!(
                "{} KiB blobs: seal {seal:.0} MB/s, open {open:.0} MB/s (RustCrypto alone \
                 {rc_open:.0}), keyed BLAKE3 id {id:.0} MB/s, copy {copy:.0} MB/s",
                size / 1024,
            );
        }
    }
}
