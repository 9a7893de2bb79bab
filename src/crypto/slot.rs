//! Key slots (docs/FORMAT.md §16.4): the master key of an encrypted vault,
//! sealed under a key-encryption key (KEK) derived from a password
//! (argon2id) or a key file, one small object per slot, `keys/<n>.slot`.
//!
//! Crash safety of `key add` and `key remove` rests on two rules of this
//! module, whatever the storage: a slot is published by one atomic `put`
//! under a new name (a kill at any instant leaves it absent or complete,
//! and every old slot untouched), and a slot is deleted only after another
//! slot of the same master key has been read back from the storage (never
//! the last one). The caller holds the vault's writer lock, so that two
//! concurrent removals cannot each believe the other's slot remains.

use super::keys::{random, MasterKey, ID_LEN, KEY_LEN};
use super::seal::{associated_data, open_raw, seal_raw, Kind, OVERHEAD};
use crate::error::{Error, Result};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use zeroize::Zeroizing;

/// Magic of a slot. Like the other magics it carries a digit for
/// recognition only; readers dispatch on the version.
pub const MAGIC: &[u8; 8] = b"CBRSLOT1";
/// Slot version: slots exist from vault format 2 on, and carry its number.
pub const VERSION: u32 = 2;
/// Bytes of the clear header (bound into the associated data).
pub const HEADER_LEN: usize = 80;
/// Bytes of a whole slot: header and the sealed 32-byte master key.
pub const SLOT_LEN: usize = HEADER_LEN + OVERHEAD + KEY_LEN;
/// Bytes of the salt.
pub const SALT_LEN: usize = 32;
/// Most slots a vault may have (as LUKS2): bounds the work of an unlock,
/// which tries each slot.
pub const MAX_SLOTS: u32 = 32;
/// Where slots live, relative to the vault root.
pub const PREFIX: &str = "keys/";
/// Key files: at least this long (a key file is random bytes, not a
/// password), at most `KEY_FILE_MAX`.
pub const KEY_FILE_MIN: usize = 32;
/// Largest key file read.
pub const KEY_FILE_MAX: usize = 1 << 20;
/// Environment variable with the argon2id parameters of new slots,
/// `m=KIB,t=N,p=N`: for tests, which would otherwise spend seconds per
/// slot. Readers always use what the slot records.
pub const KDF_PARAMS_ENV: &str = "CBRFS_KDF_PARAMS";
/// Context of the KEK derived from a key file.
pub const CTX_KEY_FILE: &str = "cbrfs 2026-11-26 v2 key file KEK";

const _: () = assert!(SLOT_LEN == 153);

/// How a slot's KEK is derived: the byte at offset 12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kdf {
    /// argon2id (version 0x13) of a password, with the recorded parameters.
    Argon2id,
    /// keyed derivation of a key file's bytes (no stretching: the file is
    /// random).
    KeyFile,
}

impl Kdf {
    fn byte(self) -> u8 {
        match self {
            Kdf::Argon2id => 1,
            Kdf::KeyFile => 2,
        }
    }
}

/// argon2id's cost parameters, as recorded in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// For new slots: 64 MiB, 3 passes, 4 lanes: RFC 9106's second
    /// recommended option exactly (§4), and OWASP's argon2id figures are
    /// weaker (19 MiB, 2 passes). The lanes are computed on rayon's threads
    /// (argon2's `parallel` feature): the same memory and the same CPU
    /// (about 0.13 s) as one lane, in half the wall time on 2 idle cores,
    /// a quarter on 4. Slots made with 1 lane (before session 8) keep
    /// their recorded parameters and still open.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };
    /// Largest memory a reader spends on a slot (2 GiB), so a hostile slot
    /// cannot make an unlock allocate without bound.
    pub const MAX_M_KIB: u32 = 2 * 1024 * 1024;
    /// Most passes a reader runs.
    pub const MAX_T: u32 = 64;
    /// Most lanes a reader accepts.
    pub const MAX_P: u32 = 16;

    /// Refuse parameters argon2 rejects or that exceed the reader's bounds.
    pub fn check(&self) -> Result<()> {
        let ok = (1..=Self::MAX_P).contains(&self.p)
            && (1..=Self::MAX_T).contains(&self.t)
            && self.m_kib >= 8 * self.p
            && self.m_kib <= Self::MAX_M_KIB;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "argon2id parameters m={} KiB, t={}, p={}: want 1 ≤ p ≤ {}, 1 ≤ t ≤ {}, \
                 8·p ≤ m ≤ {} KiB",
                self.m_kib,
                self.t,
                self.p,
                Self::MAX_P,
                Self::MAX_T,
                Self::MAX_M_KIB
            )))
        }
    }

    /// The parameters for a new slot: [`KDF_PARAMS_ENV`] when set (tests),
    /// else [`KdfParams::DEFAULT`].
    pub fn for_new_slot() -> Result<KdfParams> {
        match std::env::var(KDF_PARAMS_ENV) {
            Ok(s) => {
                let p = Self::parse(&s)
                    .map_err(|e| e.context(format!("environment variable {KDF_PARAMS_ENV}")))?;
                if p.m_kib < Self::DEFAULT.m_kib || p.t < Self::DEFAULT.t {
                    // Meant for tests; a production slot made this way is
                    // cheap to attack, so say so where an admin looks.
                    log::warn!(
                        "{KDF_PARAMS_ENV} is set: new key slots use argon2id m={} KiB, t={}, \
                         p={}, weaker than the default m={} KiB, t={}",
                        p.m_kib,
                        p.t,
                        p.p,
                        Self::DEFAULT.m_kib,
                        Self::DEFAULT.t
                    );
                }
                Ok(p)
            }
            Err(std::env::VarError::NotPresent) => Ok(Self::DEFAULT),
            Err(std::env::VarError::NotUnicode(_)) => Err(Error::invalid(format!(
                "environment variable {KDF_PARAMS_ENV} is not UTF-8"
            ))),
        }
    }

    /// `m=KIB,t=N,p=N`, every key given once.
    pub fn parse(s: &str) -> Result<KdfParams> {
        let bad = || Error::invalid(format!("{s:?}: want m=KIB,t=PASSES,p=LANES"));
        let (mut m, mut t, mut p) = (None, None, None);
        for part in s.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or_else(bad)?;
            let v: u32 = v.trim().parse().map_err(|_| bad())?;
            let slot = match k.trim() {
                "m" => &mut m,
                "t" => &mut t,
                "p" => &mut p,
                _ => return Err(bad()),
            };
            if slot.replace(v).is_some() {
                return Err(bad());
            }
        }
        let params = KdfParams {
            m_kib: m.ok_or_else(bad)?,
            t: t.ok_or_else(bad)?,
            p: p.ok_or_else(bad)?,
        };
        params.check()?;
        Ok(params)
    }
}

/// What opens a slot.
#[derive(Clone, Copy)]
pub enum Secret<'a> {
    /// A password (any bytes but none: an empty one is refused earlier).
    Password(&'a [u8]),
    /// The bytes of a key file.
    KeyFile(&'a [u8]),
}

impl Secret<'_> {
    fn kdf(&self) -> Kdf {
        match self {
            Secret::Password(_) => Kdf::Argon2id,
            Secret::KeyFile(_) => Kdf::KeyFile,
        }
    }
}

/// A slot's clear header, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SlotHeader {
    /// How the KEK is derived.
    pub kdf: Kdf,
    /// argon2id parameters (`None` for a key-file slot).
    pub params: Option<KdfParams>,
    /// The salt.
    #[serde(skip)]
    pub salt: [u8; SALT_LEN],
    /// The public id of the master key the slot holds.
    #[serde(skip)]
    pub key_id: [u8; ID_LEN],
}

impl SlotHeader {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12] = self.kdf.byte();
        if let Some(p) = self.params {
            h[16..20].copy_from_slice(&p.m_kib.to_le_bytes());
            h[20..24].copy_from_slice(&p.t.to_le_bytes());
            h[24..28].copy_from_slice(&p.p.to_le_bytes());
        }
        h[32..64].copy_from_slice(&self.salt);
        h[64..80].copy_from_slice(&self.key_id);
        h
    }

    /// Decode and check the header of `slot` (the whole slot's bytes):
    /// exact length, magic, version, known KDF, zero reserved bytes,
    /// parameters within the reader's bounds (checked before any memory is
    /// spent on them).
    pub fn decode(slot: &[u8], what: &str) -> Result<SlotHeader> {
        let bad = |why: String| Error::corrupt(format!("{what}: {why}"));
        if slot.len() != SLOT_LEN {
            return Err(bad(format!(
                "{} bytes, a key slot has {SLOT_LEN}",
                slot.len()
            )));
        }
        if &slot[0..8] != MAGIC {
            return Err(bad("not a key slot (wrong magic)".into()));
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([slot[o], slot[o + 1], slot[o + 2], slot[o + 3]]);
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!(
                "unknown key slot version {version} (this cbrfs reads {VERSION})"
            )));
        }
        if slot[13..16] != [0; 3] || slot[28..32] != [0; 4] {
            return Err(bad("reserved bytes are not zero".into()));
        }
        let (m, t, p) = (u32_at(16), u32_at(20), u32_at(24));
        let (kdf, params) = match slot[12] {
            1 => {
                let params = KdfParams { m_kib: m, t, p };
                // Stored bytes that break the bounds are damage, not usage.
                params
                    .check()
                    .map_err(|e| Error::corrupt(format!("{what}: {e}")))?;
                (Kdf::Argon2id, Some(params))
            }
            2 if (m, t, p) == (0, 0, 0) => (Kdf::KeyFile, None),
            2 => return Err(bad("a key-file slot with argon2id parameters".into())),
            k => return Err(bad(format!("unknown key derivation {k}"))),
        };
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&slot[32..64]);
        let mut key_id = [0u8; ID_LEN];
        key_id.copy_from_slice(&slot[64..80]);
        Ok(SlotHeader {
            kdf,
            params,
            salt,
            key_id,
        })
    }
}

/// argon2id's working memory (m KiB, 64 MiB by default): an anonymous
/// mapping advised to take transparent huge pages. In 4 KiB pages, 64 MiB
/// is 16,384 page faults and a TLB miss on most of argon2's data-dependent
/// reads; in 2 MiB pages, 32 faults. One unlock went from 0.144 to 0.100 s
/// of CPU (user 0.104 → 0.084, sys 0.040 → 0.016; medians of 6 runs of 5
/// unlocks, m=64 MiB, t=3, p=4, alternating). Same memory, same passes,
/// same output: only where the kernel puts the pages changes. Where the
/// kernel gives no huge pages (THP off) the advice is a no-op and the
/// mapping is as before. The mapping goes back to the kernel when dropped
/// (munmap, as the heap did with argon2's own 64 MiB allocation), which
/// clears the pages before any other use.
struct KdfMemory {
    map: memmap2::MmapMut,
    blocks: usize,
}

impl KdfMemory {
    fn new(blocks: usize) -> Result<KdfMemory> {
        let len = blocks
            .checked_mul(argon2::Block::SIZE)
            .filter(|&l| l > 0)
            .ok_or_else(|| Error::invalid(format!("argon2id: {blocks} blocks of memory")))?;
        let map = memmap2::MmapMut::map_anon(len)
            .map_err(|e| Error::io(format!("argon2id: map {} MiB of memory", len >> 20), e))?;
        // A hint: refused (no THP in this kernel) changes nothing but speed.
        let _ = map.advise(memmap2::Advice::HugePage);
        Ok(KdfMemory { map, blocks })
    }

    fn blocks(&mut self) -> &mut [argon2::Block] {
        // SAFETY: the mapping is `blocks * Block::SIZE` bytes, page-aligned
        // (more than Block's 64-byte alignment), zero-filled by the kernel
        // (an all-zero Block, a [u64; 128], is valid), and borrowed
        // exclusively through `&mut self` for the slice's lifetime.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.map.as_mut_ptr().cast::<argon2::Block>(),
                self.blocks,
            )
        }
    }
}

/// The KEK of `header` from `secret`.
fn derive_kek(header: &SlotHeader, secret: Secret<'_>) -> Result<XChaCha20Poly1305> {
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    match (secret, header.params) {
        (Secret::Password(pw), Some(p)) => {
            let params = argon2::Params::new(p.m_kib, p.t, p.p, Some(KEY_LEN))
                .map_err(|e| Error::invalid(format!("argon2id parameters: {e}")))?;
            let mut memory = KdfMemory::new(params.block_count())?;
            let hash = || {
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                    .hash_password_into_with_memory(pw, &header.salt, &mut kek[..], memory.blocks())
            };
            // The lanes run on a pool of this unlock's own, ended when it
            // is dropped: rayon's global pool would keep its threads for
            // the life of the process (a mount daemon's). When no thread
            // can start, this thread computes the lanes one after another.
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads((p.p as usize).clamp(1, cpus))
                .thread_name(|i| format!("argon2id-{i}"))
                .build()
                .or_else(|_| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .use_current_thread()
                        .build()
                })
                .map_err(|e| Error::failed(format!("argon2id: no thread to run on: {e}")))?;
            pool.install(hash)
                .map_err(|e| Error::invalid(format!("argon2id: {e}")))?;
        }
        (Secret::KeyFile(bytes), None) => {
            let mut h = blake3::Hasher::new_derive_key(CTX_KEY_FILE);
            h.update(&header.salt);
            h.update(bytes);
            kek.copy_from_slice(h.finalize().as_bytes());
        }
        // Callers match the secret's kind to the slot's before this.
        _ => {
            return Err(Error::invalid(
                "the secret does not fit the key slot's kind",
            ))
        }
    }
    Ok(XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(
        &kek[..],
    )))
}

/// The associated data of slot `number` with header `header`.
fn slot_ad(header: &[u8; HEADER_LEN], number: u32) -> Vec<u8> {
    let mut binding = header.to_vec();
    binding.extend_from_slice(&number.to_le_bytes());
    associated_data(Kind::Slot, &binding)
}

/// The bytes of slot `number` holding `master`, opened by `secret`.
/// argon2id gets `params`; a fresh random salt per slot.
pub fn create_slot(
    secret: Secret<'_>,
    params: KdfParams,
    master: &MasterKey,
    number: u32,
) -> Result<Vec<u8>> {
    if let Secret::KeyFile(b) = secret {
        check_key_file_len(b.len())?;
    }
    params.check()?;
    let header = SlotHeader {
        kdf: secret.kdf(),
        params: (secret.kdf() == Kdf::Argon2id).then_some(params),
        salt: random()?,
        key_id: master.key_id(),
    };
    let kek = derive_kek(&header, secret)?;
    let head = header.encode();
    let mut out = head.to_vec();
    seal_raw(&kek, &slot_ad(&head, number), master.bytes(), &mut out)?;
    debug_assert_eq!(out.len(), SLOT_LEN);
    Ok(out)
}

/// A key file of `len` bytes is accepted, or an error saying the bounds.
pub(crate) fn check_key_file_len(len: usize) -> Result<()> {
    if (KEY_FILE_MIN..=KEY_FILE_MAX).contains(&len) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "a key file has {KEY_FILE_MIN} to {KEY_FILE_MAX} bytes (random bytes, e.g. \
             head -c 64 /dev/urandom), this one {len}"
        )))
    }
}

/// The master key in slot `number` of vault `vault`, opened by `secret`.
/// A secret that does not open it is "wrong password for vault V" (exit
/// 2): the cipher cannot tell a wrong password from a damaged slot.
pub fn unlock(slot: &[u8], number: u32, secret: Secret<'_>, vault: &str) -> Result<MasterKey> {
    let what = format!("vault {vault}: key slot {number}");
    let header = SlotHeader::decode(slot, &what)?;
    if header.kdf != secret.kdf() {
        return Err(Error::invalid(match header.kdf {
            Kdf::Argon2id => format!("{what} takes a password, not a key file"),
            Kdf::KeyFile => format!("{what} takes a key file, not a password"),
        }));
    }
    let kek = derive_kek(&header, secret)?;
    let mut head = [0u8; HEADER_LEN];
    head.copy_from_slice(&slot[..HEADER_LEN]);
    let plain = Zeroizing::new(
        open_raw(&kek, &slot_ad(&head, number), &slot[HEADER_LEN..], &what)
            .map_err(|_| wrong_secret(vault, secret))?,
    );
    let mut bytes = [0u8; KEY_LEN];
    if plain.len() != KEY_LEN {
        return Err(Error::corrupt(format!(
            "{what}: the sealed key is not {KEY_LEN} bytes"
        )));
    }
    bytes.copy_from_slice(&plain);
    let master = MasterKey::from_bytes(bytes);
    zeroize::Zeroize::zeroize(&mut bytes);
    if master.key_id() != header.key_id {
        return Err(Error::corrupt(format!(
            "{what}: the key it holds does not match its recorded key id"
        )));
    }
    Ok(master)
}

fn wrong_secret(vault: &str, secret: Secret<'_>) -> Error {
    Error::invalid(match secret {
        Secret::Password(_) => format!("wrong password for vault {vault}"),
        Secret::KeyFile(_) => format!("wrong key file for vault {vault}"),
    })
}

/// The storage a vault's slots live in: the subset of the store's
/// `Storage` trait (src/store/storage.rs) that slots need, with the same
/// promises (`put` publishes all or nothing, `get` of an absent object is
/// `None`, `list` may miss objects published moments ago, `delete` of an
/// absent object is no error). The store implements it for every `Storage`
/// when the two are wired together.
pub trait SlotStorage {
    /// For messages.
    fn describe(&self) -> String;
    /// Publish `data` under `name` atomically.
    fn put(&self, name: &str, data: &[u8]) -> Result<()>;
    /// The whole object, or None when absent.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Names of the objects whose name starts with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    /// Remove; absent is not an error.
    fn delete(&self, name: &str) -> Result<()>;
}

/// The object name of slot `n`.
pub fn slot_name(n: u32) -> String {
    format!("{PREFIX}{n}.slot")
}

/// The slot number of an object name: `keys/<n>.slot` with `n` decimal,
/// no leading zero, below [`MAX_SLOTS`]; anything else (a temporary file,
/// a stray name) is not a slot.
pub fn parse_slot_name(name: &str) -> Option<u32> {
    let n = name.strip_prefix(PREFIX)?.strip_suffix(".slot")?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    n.parse().ok().filter(|&n| n < MAX_SLOTS)
}

/// One slot as `vault key list` shows it.
#[derive(Debug, serde::Serialize)]
pub struct SlotInfo {
    /// Its number.
    pub number: u32,
    /// Its header, when it decodes.
    pub header: Option<SlotHeader>,
    /// Why the slot is unreadable (damaged, absent since listed).
    pub problem: Option<String>,
}

fn listed_numbers(storage: &dyn SlotStorage) -> Result<Vec<u32>> {
    let mut ns: Vec<u32> = storage
        .list(PREFIX)?
        .iter()
        .filter_map(|n| parse_slot_name(n))
        .collect();
    ns.sort_unstable();
    ns.dedup();
    Ok(ns)
}

/// Every slot of the vault, by number, with its header (no secret needed).
pub fn list_slots(storage: &dyn SlotStorage, vault: &str) -> Result<Vec<SlotInfo>> {
    let mut out = Vec::new();
    for number in listed_numbers(storage)? {
        let what = format!("vault {vault}: key slot {number}");
        let (header, problem) = match storage.get(&slot_name(number))? {
            None => continue, // deleted since the listing
            Some(bytes) => match SlotHeader::decode(&bytes, &what) {
                Ok(h) => (Some(h), None),
                Err(e) => (None, Some(e.to_string())),
            },
        };
        out.push(SlotInfo {
            number,
            header,
            problem,
        });
    }
    Ok(out)
}

/// The master key of a new encrypted vault, held by slot 0 opened by
/// `secret`. Refused when the storage already holds a slot (another vault's
/// keys must never be mixed in). The caller writes the vault's settings only
/// after this returns, so a vault is never visible without its key.
pub fn create_vault_key(
    storage: &dyn SlotStorage,
    vault: &str,
    secret: Secret<'_>,
    params: KdfParams,
) -> Result<MasterKey> {
    if !listed_numbers(storage)?.is_empty() || storage.get(&slot_name(0))?.is_some() {
        return Err(Error::conflict(format!(
            "vault {vault}: {} already holds key slots",
            storage.describe()
        )));
    }
    let master = MasterKey::generate()?;
    add_slot(storage, vault, &master, secret, params)?;
    Ok(master)
}

/// Add a slot holding `master`, opened by `secret`; returns its number.
/// The caller has unlocked the vault (it holds `master`) and holds the
/// vault's writer lock. The slot is written by one atomic `put` under a
/// number no slot has, then read back and compared.
pub fn add_slot(
    storage: &dyn SlotStorage,
    vault: &str,
    master: &MasterKey,
    secret: Secret<'_>,
    params: KdfParams,
) -> Result<u32> {
    let existing = listed_numbers(storage)?;
    for &n in &existing {
        // A damaged slot is skipped (list and check report it): it must not
        // stop the user from adding the key that replaces it.
        let header = storage
            .get(&slot_name(n))?
            .and_then(|bytes| SlotHeader::decode(&bytes, "").ok());
        if let Some(h) = header {
            if h.key_id != master.key_id() {
                return Err(Error::corrupt(format!(
                    "vault {vault}: key slot {n} holds another key than the one unlocked \
                     (the slot belongs to another vault)"
                )));
            }
        }
    }
    // The next number after the highest listed; a listing may lag behind
    // a put, so a number is taken only if `get` finds nothing there.
    let mut number = existing.last().map_or(0, |n| n + 1);
    while number < MAX_SLOTS && storage.get(&slot_name(number))?.is_some() {
        number += 1;
    }
    if number >= MAX_SLOTS {
        return Err(Error::conflict(format!(
            "vault {vault} has no free key slot (numbers 0 to {}): remove one first",
            MAX_SLOTS - 1
        )));
    }
    let bytes = create_slot(secret, params, master, number)?;
    let name = slot_name(number);
    storage.put(&name, &bytes)?;
    match storage.get(&name)? {
        Some(back) if back == bytes => Ok(number),
        _ => Err(Error::failed(format!(
            "vault {vault}: key slot {number} did not read back as written to {}",
            storage.describe()
        ))),
    }
}

/// Remove slot `number`. Refused when it is the last slot: another slot
/// must be read back from the storage now (not merely listed, since a
/// listing may still show a slot deleted moments ago), decode, and hold the
/// same master key. The caller holds the vault's writer lock.
pub fn remove_slot(
    storage: &dyn SlotStorage,
    vault: &str,
    number: u32,
    master: &MasterKey,
) -> Result<()> {
    let name = slot_name(number);
    if storage.get(&name)?.is_none() {
        return Err(Error::not_found(format!(
            "vault {vault} has no key slot {number}"
        )));
    }
    let mut other = None;
    for n in listed_numbers(storage)? {
        if n == number {
            continue;
        }
        let Some(bytes) = storage.get(&slot_name(n))? else {
            continue;
        };
        if let Ok(h) = SlotHeader::decode(&bytes, "") {
            if h.key_id == master.key_id() {
                other = Some(n);
                break;
            }
        }
    }
    if other.is_none() {
        return Err(Error::conflict(format!(
            "key slot {number} is the last working key slot of vault {vault}: add another \
             before removing it"
        )));
    }
    storage.delete(&name)
}

/// Unlock the vault with `secret`: try each slot of the secret's kind in
/// number order; the first that opens gives the master key and its number.
pub fn unlock_vault(
    storage: &dyn SlotStorage,
    vault: &str,
    secret: Secret<'_>,
) -> Result<(u32, MasterKey)> {
    let (mut tried, mut other_kind) = (Vec::new(), 0);
    // Slots skipped as damaged, said in the final error: a tampered slot
    // is named, not only "wrong password".
    let mut damaged = Vec::new();
    for number in listed_numbers(storage)? {
        let Some(bytes) = storage.get(&slot_name(number))? else {
            continue;
        };
        let what = format!("key slot {number}");
        match SlotHeader::decode(&bytes, &what) {
            Ok(h) if h.kdf == secret.kdf() => {}
            Ok(_) => {
                other_kind += 1;
                continue;
            }
            // A damaged slot must not lock the others out: skip it (check
            // reports it).
            Err(e) => {
                damaged.push(e.to_string());
                continue;
            }
        }
        tried.push(number);
        match unlock(&bytes, number, secret, vault) {
            Ok(m) => return Ok((number, m)),
            Err(e) if e.kind() == crate::error::Kind::Invalid => continue,
            Err(e) => return Err(e),
        }
    }
    let tried_n = tried.len();
    let detail = || {
        let mut d = String::new();
        if !tried.is_empty() {
            let list: Vec<String> = tried.iter().map(u32::to_string).collect();
            d.push_str(&format!(" (tried key slots {}", list.join(", ")));
        }
        for why in &damaged {
            d.push_str(if d.is_empty() { " (" } else { "; " });
            d.push_str(why);
        }
        if !d.is_empty() {
            d.push(')');
        }
        d
    };
    let tried = tried_n;
    if tried == 0 && other_kind > 0 {
        return Err(Error::invalid(match secret {
            Secret::Password(_) => {
                format!("vault {vault} has no password key slot: give its key file")
            }
            Secret::KeyFile(_) => {
                format!("vault {vault} has no key-file key slot: give its password")
            }
        }));
    }
    if tried == 0 {
        return Err(Error::corrupt(format!(
            "vault {vault} is encrypted but {} holds no readable key slot {}{}",
            storage.describe(),
            match secret {
                Secret::Password(_) => "for a password",
                Secret::KeyFile(_) => "for a key file",
            },
            detail()
        )));
    }
    let e = wrong_secret(vault, secret);
    Err(Error::new(e.kind(), format!("{e}{}", detail())))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::error::Kind as ErrKind;
    use parking_lot::Mutex;
    use std::collections::BTreeMap;

    /// Cheap parameters: tests stay fast; the slot records them.
    pub const CHEAP: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    /// An in-memory storage with the trait's promises; `lagging` names
    /// objects that `list` still shows after deletion or does not show yet.
    #[derive(Default)]
    pub struct MemStorage {
        pub objects: Mutex<BTreeMap<String, Vec<u8>>>,
        pub list_extra: Mutex<Vec<String>>,
        pub list_hidden: Mutex<Vec<String>>,
    }

    impl SlotStorage for MemStorage {
        fn describe(&self) -> String {
            "memory".into()
        }
        fn put(&self, name: &str, data: &[u8]) -> Result<()> {
            self.objects.lock().insert(name.into(), data.to_vec());
            Ok(())
        }
        fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.objects.lock().get(name).cloned())
        }
        fn list(&self, prefix: &str) -> Result<Vec<String>> {
            let hidden = self.list_hidden.lock().clone();
            let mut v: Vec<String> = self
                .objects
                .lock()
                .keys()
                .filter(|k| k.starts_with(prefix) && !hidden.contains(k))
                .cloned()
                .collect();
            v.extend(self.list_extra.lock().iter().cloned());
            Ok(v)
        }
        fn delete(&self, name: &str) -> Result<()> {
            self.objects.lock().remove(name);
            Ok(())
        }
    }

    const PW: Secret<'static> = Secret::Password(b"correct horse battery staple");
    const PW2: Secret<'static> = Secret::Password(b"second password");

    fn new_vault() -> (MemStorage, MasterKey) {
        let s = MemStorage::default();
        let m = create_vault_key(&s, "v", PW, CHEAP).unwrap();
        assert_eq!(listed_numbers(&s).unwrap(), [0]);
        (s, m)
    }

    #[test]
    fn a_new_vault_key_never_joins_existing_slots() {
        let (s, m) = new_vault();
        assert_eq!(unlock_vault(&s, "v", PW).unwrap().1.key_id(), m.key_id());
        let e = create_vault_key(&s, "v", PW2, CHEAP).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("already holds key slots"), "{e}");
        // Two new vaults: two different keys.
        let (_, m2) = new_vault();
        assert_ne!(m.key_id(), m2.key_id());
    }

    #[test]
    fn slot_round_trip_password_and_key_file() {
        let m = MasterKey::generate().unwrap();
        let slot = create_slot(PW, CHEAP, &m, 3).unwrap();
        assert_eq!(slot.len(), SLOT_LEN);
        let back = unlock(&slot, 3, PW, "v").unwrap();
        assert_eq!(back.bytes(), m.bytes());
        let kf = [9u8; 64];
        let slot = create_slot(Secret::KeyFile(&kf), CHEAP, &m, 0).unwrap();
        let h = SlotHeader::decode(&slot, "s").unwrap();
        assert_eq!((h.kdf, h.params), (Kdf::KeyFile, None));
        assert_eq!(slot[16..28], [0; 12]);
        let back = unlock(&slot, 0, Secret::KeyFile(&kf), "v").unwrap();
        assert_eq!(back.bytes(), m.bytes());
        // The master key is not in the slot in clear.
        assert!(!slot.windows(8).any(|w| w == &m.bytes()[..8]));
    }

    #[test]
    fn wrong_password_is_a_distinct_exit_2_error_naming_the_vault() {
        let m = MasterKey::generate().unwrap();
        let slot = create_slot(PW, CHEAP, &m, 0).unwrap();
        let e = unlock(&slot, 0, PW2, "home").unwrap_err();
        assert_eq!(e.kind(), ErrKind::Invalid);
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "wrong password for vault home");
        let e = unlock(&slot, 0, Secret::KeyFile(&[0; 32]), "home").unwrap_err();
        assert!(e.to_string().contains("takes a password"), "{e}");
        let kf = create_slot(Secret::KeyFile(&[1; 32]), CHEAP, &m, 1).unwrap();
        let e = unlock(&kf, 1, Secret::KeyFile(&[2; 32]), "home").unwrap_err();
        assert_eq!(e.to_string(), "wrong key file for vault home");
    }

    #[test]
    fn short_key_files_are_refused() {
        let m = MasterKey::generate().unwrap();
        let e = create_slot(Secret::KeyFile(b"hunter2"), CHEAP, &m, 0).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
    }

    #[test]
    fn every_tampered_slot_is_refused() {
        let m = MasterKey::generate().unwrap();
        let slot = create_slot(PW, CHEAP, &m, 2).unwrap();
        for i in 0..slot.len() {
            for bit in [0, 3, 7] {
                let mut t = slot.clone();
                t[i] ^= 1 << bit;
                let e = match unlock(&t, 2, PW, "v") {
                    Ok(_) => panic!("byte {i} bit {bit}: a tampered slot opened"),
                    Err(e) => e,
                };
                assert!(e.to_string().contains("vault v"), "{e}");
            }
        }
        for len in 0..slot.len() {
            assert!(unlock(&slot[..len], 2, PW, "v").is_err());
        }
        // Another number: a slot renamed (swapped with another) is refused.
        assert!(unlock(&slot, 1, PW, "v").is_err());
    }

    #[test]
    fn hostile_parameters_are_refused_before_any_work() {
        let m = MasterKey::generate().unwrap();
        let mut slot = create_slot(PW, CHEAP, &m, 0).unwrap();
        slot[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let e = unlock(&slot, 0, PW, "v").unwrap_err();
        assert_eq!(e.kind(), ErrKind::Corrupt, "{e}");
        assert!(e.to_string().contains("argon2id parameters"), "{e}");
    }

    #[test]
    fn params_parse_and_check() {
        assert_eq!(
            KdfParams::parse("m=64,t=1,p=1").unwrap(),
            KdfParams {
                m_kib: 64,
                t: 1,
                p: 1
            }
        );
        for bad in [
            "",
            "m=64",
            "m=64,t=1,p=1,m=2",
            "m=4,t=1,p=1",
            "m=64,t=0,p=1",
            "x=1",
        ] {
            assert!(KdfParams::parse(bad).is_err(), "{bad}");
        }
        KdfParams::DEFAULT.check().unwrap();
    }

    proptest::proptest! {
        /// Any bytes as a slot header: an error or a header within the
        /// bounds, never a panic, and never parameters past the bounds.
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(h) = SlotHeader::decode(&bytes, "s") {
                if let Some(p) = h.params {
                    proptest::prop_assert!(p.check().is_ok());
                }
            }
        }

        /// A valid header with any sealed part: never opens.
        #[test]
        fn any_sealed_part_never_opens(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), OVERHEAD + KEY_LEN)) {
            let m = MasterKey::from_bytes([3; 32]);
            let mut slot = create_slot(PW, CHEAP, &m, 0).unwrap();
            slot[HEADER_LEN..].copy_from_slice(&tail);
            proptest::prop_assert!(unlock(&slot, 0, PW, "v").is_err());
        }
    }

    /// argon2id with several lanes, computed in parallel (argon2 0.6,
    /// `parallel`), gives what argon2 0.5 computed one lane after another:
    /// the vectors below are 0.5.3's output, so slots made by either open
    /// with the other. Password "correct horse battery staple", salt 32 ×
    /// 0x5a, 32-byte output.
    #[test]
    fn lanes_computed_in_parallel_give_the_sequential_output() {
        let vectors = [
            (
                (256, 2, 4),
                "846bf81f432f9e1ec09c15795f067796bac703c48c93187e6dd8e203fc19784d",
            ),
            (
                (1024, 1, 2),
                "0e509b961f9e53ae661c185fbdaa0db5513c14984f28b74f8de6c37530f507ea",
            ),
            (
                (64 * 1024, 3, 4),
                "e34e61849ebb79eb1c08337e36c50bc83a00164c44f542da8cc5971fa78e2d22",
            ),
        ];
        for ((m, t, p), want) in vectors {
            let params = argon2::Params::new(m, t, p, Some(KEY_LEN)).unwrap();
            let mut out = [0u8; KEY_LEN];
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password_into(b"correct horse battery staple", &[0x5a; 32], &mut out)
                .unwrap();
            let got: String = out.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, want, "m={m} KiB, t={t}, p={p}");
        }
        assert_eq!(
            KdfParams::DEFAULT,
            KdfParams {
                m_kib: 64 * 1024,
                t: 3,
                p: 4
            }
        );
    }

    /// Time of one unlock with the default parameters. Run with
    /// `cargo test --release --lib crypto::slot -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_default_kdf() {
        let m = MasterKey::generate().unwrap();
        let slot = create_slot(PW, KdfParams::DEFAULT, &m, 0).unwrap();
        let t = std::time::Instant::now();
        unlock(&slot, 0, PW, "v").unwrap();
        println!(
            "argon2id m=64 MiB, t=3, p=4: one unlock {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }

    #[test]
    fn slot_names() {
        assert_eq!(slot_name(0), "keys/0.slot");
        assert_eq!(parse_slot_name("keys/0.slot"), Some(0));
        assert_eq!(parse_slot_name("keys/31.slot"), Some(31));
        for bad in [
            "keys/32.slot",
            "keys/01.slot",
            "keys/.slot",
            "keys/+1.slot",
            "keys/1.slot.tmp",
            "keys/.tmp-1.slot",
            "key/1.slot",
        ] {
            assert_eq!(parse_slot_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn add_list_remove() {
        let (s, m) = new_vault();
        assert_eq!(add_slot(&s, "v", &m, PW2, CHEAP).unwrap(), 1);
        let kf = [7u8; 40];
        assert_eq!(
            add_slot(&s, "v", &m, Secret::KeyFile(&kf), CHEAP).unwrap(),
            2
        );
        let l = list_slots(&s, "v").unwrap();
        assert_eq!(l.iter().map(|i| i.number).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(l[2].header.as_ref().unwrap().kdf, Kdf::KeyFile);
        assert_eq!(l[0].header.as_ref().unwrap().params, Some(CHEAP));
        // Each secret opens; the slot that opened is reported.
        assert_eq!(unlock_vault(&s, "v", PW).unwrap().0, 0);
        assert_eq!(unlock_vault(&s, "v", PW2).unwrap().0, 1);
        assert_eq!(unlock_vault(&s, "v", Secret::KeyFile(&kf)).unwrap().0, 2);
        // Removed: that password no longer opens, the others still do.
        remove_slot(&s, "v", 1, &m).unwrap();
        let e = unlock_vault(&s, "v", PW2).unwrap_err();
        // The slots tried are named: a damaged one is told apart by the
        // user, if not by the cipher.
        assert_eq!(
            e.to_string(),
            "wrong password for vault v (tried key slots 0)"
        );
        assert_eq!(e.exit_code(), 2);
        assert!(unlock_vault(&s, "v", PW).is_ok());
        // A removed number is not reused while a higher one exists.
        assert_eq!(add_slot(&s, "v", &m, PW2, CHEAP).unwrap(), 3);
        let e = remove_slot(&s, "v", 1, &m).unwrap_err();
        assert_eq!(e.kind(), ErrKind::NotFound, "{e}");
    }

    #[test]
    fn the_last_slot_cannot_be_removed() {
        let (s, m) = new_vault();
        let e = remove_slot(&s, "v", 0, &m).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("last working key slot of vault v"),
            "{e}"
        );
        assert!(s.get("keys/0.slot").unwrap().is_some());
        // A listing that still shows a slot deleted moments ago does not
        // count it; nor does a damaged slot or another vault's.
        s.list_extra.lock().push("keys/5.slot".into());
        s.put("keys/6.slot", b"damaged").unwrap();
        let other = MasterKey::generate().unwrap();
        s.put("keys/7.slot", &create_slot(PW, CHEAP, &other, 7).unwrap())
            .unwrap();
        assert!(remove_slot(&s, "v", 0, &m).is_err());
        assert!(unlock_vault(&s, "v", PW).is_ok());
        // Adding refuses to mix in a slot of another key.
        let e = add_slot(&s, "v", &m, PW2, CHEAP).unwrap_err();
        assert!(e.to_string().contains("another key"), "{e}");
    }

    #[test]
    fn add_takes_a_number_a_lagging_listing_does_not_show() {
        let (s, m) = new_vault();
        s.list_hidden.lock().push("keys/0.slot".into());
        assert_eq!(add_slot(&s, "v", &m, PW2, CHEAP).unwrap(), 1);
        s.list_hidden.lock().clear();
        assert_eq!(unlock_vault(&s, "v", PW).unwrap().0, 0);
        assert_eq!(unlock_vault(&s, "v", PW2).unwrap().0, 1);
    }

    #[test]
    fn a_crash_at_any_point_of_add_or_remove_leaves_the_vault_openable() {
        // add_slot's only change is one atomic put of a new name: before it
        // the vault is as it was, after it the new slot is complete. A
        // storage that dies at the put (kill -9) leaves the old slots.
        struct DyingStorage(MemStorage);
        impl SlotStorage for DyingStorage {
            fn describe(&self) -> String {
                self.0.describe()
            }
            fn put(&self, _: &str, _: &[u8]) -> Result<()> {
                Err(Error::failed("killed"))
            }
            fn get(&self, n: &str) -> Result<Option<Vec<u8>>> {
                self.0.get(n)
            }
            fn list(&self, p: &str) -> Result<Vec<String>> {
                self.0.list(p)
            }
            fn delete(&self, _: &str) -> Result<()> {
                Err(Error::failed("killed"))
            }
        }
        let (s, m) = new_vault();
        add_slot(&s, "v", &m, PW2, CHEAP).unwrap();
        let d = DyingStorage(s);
        assert!(add_slot(&d, "v", &m, Secret::Password(b"third"), CHEAP).is_err());
        assert!(remove_slot(&d, "v", 0, &m).is_err());
        assert_eq!(unlock_vault(&d.0, "v", PW).unwrap().0, 0);
        assert_eq!(unlock_vault(&d.0, "v", PW2).unwrap().0, 1);
        assert_eq!(list_slots(&d.0, "v").unwrap().len(), 2);
    }

    #[test]
    fn unlock_without_slots_or_with_damaged_ones() {
        let s = MemStorage::default();
        let e = unlock_vault(&s, "v", PW).unwrap_err();
        assert!(e.to_string().contains("no readable key slot"), "{e}");
        let (s, m) = new_vault();
        // A damaged slot 0 does not lock out a good slot 1.
        add_slot(&s, "v", &m, PW, CHEAP).unwrap();
        s.objects.lock().get_mut("keys/0.slot").unwrap()[100] ^= 1;
        assert_eq!(unlock_vault(&s, "v", PW).unwrap().0, 1);
        let l = list_slots(&s, "v").unwrap();
        assert!(l[0].problem.is_none(), "the header is intact");
        // Only password slots, a key file given: say what to give instead.
        let e = unlock_vault(&s, "v", Secret::KeyFile(&[1; 32])).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("give its password"), "{e}");
        // A slot that does not decode is listed with why.
        s.put("keys/9.slot", b"short").unwrap();
        let l = list_slots(&s, "v").unwrap();
        let bad = l.iter().find(|i| i.number == 9).unwrap();
        assert!(bad.header.is_none());
        assert!(
            bad.problem.as_deref().unwrap().contains("key slot 9"),
            "{bad:?}"
        );
    }
}
