//! Encryption of vaults (issue 15; byte layouts in docs/FORMAT.md §16):
//! the master key and its derived keys ([`keys`]), sealed objects
//! ([`seal`]), key slots ([`slot`]) and where passwords come from
//! ([`password`]). This module owns the cryptography and its byte format
//! only; the store calls it to seal what it writes and open what it reads.
//!
//! # Design
//!
//! - **One random master key per vault** (32 bytes from the OS), never
//!   stored in clear: each key slot (`keys/<n>.slot`) holds it sealed under
//!   a key-encryption key derived from a password with argon2id (memory-hard,
//!   parameters recorded in the slot) or from a key file. Several slots open
//!   the same vault; adding or removing one never touches the data.
//! - **Derived keys**: BLAKE3 `derive_key` of the master key with distinct
//!   context strings gives the sealing key, the blob-id key, the chunker
//!   seed and the key's public id. One derivation per purpose, so a key used
//!   for one never doubles as another.
//! - **Blob ids** of an encrypted vault are keyed BLAKE3 truncated to 16
//!   bytes, since object names and (once wired) ids in the bucket are
//!   visible: without the key nobody can test whether a known file is
//!   stored. Unencrypted vaults keep keyed XXH3 (faster, and their key file
//!   sits beside the data anyway).
//! - **Sealing**: XChaCha20-Poly1305, a fresh 24-byte random nonce per
//!   object (a collision needs ~2^96 objects: no counter to keep, which
//!   matters when several hosts or a crashed writer would have to agree on
//!   one). Envelope `scheme | nonce | ciphertext | tag`, 41 bytes of overhead.
//! - **Compress, then seal**: ciphertext does not compress, and the stored
//!   length of a compressed blob leaks less than the plaintext's would.
//!
//! # What is sealed how
//!
//! | object | sealed | associated data binds |
//! |---|---|---|
//! | pack blob (data, tree, chunk list) | one by one, so a byte-range read of one blob needs only its own bytes | kind, blob id |
//! | pack blob table (trailer) | whole | kind, pack id (file name) |
//! | index | whole | kind, index id (file name) |
//! | backup record | whole | kind, backup name (file name) |
//! | vault settings | whole | kind (one per vault; the key is per vault) |
//! | a writer lease's holder (host, pid) | whole | kind, the lease's token |
//! | a disk's fingerprint table (host-local, never in the storage) | whole | kind, header and file name |
//! | key slot's master key | whole | kind, slot header (KDF and parameters, salt, key id), slot number |
//!
//! # Which tampering is detected, and how
//!
//! - A flipped bit anywhere, a truncation or extension: the tag fails.
//! - An object of one kind put in place of another kind (an index renamed
//!   to a record, a trailer read as a blob): the kind byte differs.
//! - Two objects of the same kind swapped: blobs (in one pack or across
//!   packs) are bound to their id, which the reader got from the index;
//!   trailers, indexes and records to their file name; slots to their
//!   number. The reader passes what it expects, so a swap fails the tag.
//!   This requires pack and index names that do not depend on their sealed
//!   bytes (random ids, §16.5), since a name cannot be inside its own hash.
//! - An object from another vault: another master key, so the tag fails.
//! - **Not detected by sealing**: deletion of an object (the reader reports
//!   it missing), and replay of an *older authentic* object under its own
//!   name (e.g. a deleted backup's record put back, an index from before a
//!   prune). Detecting rollback needs a signed list of live objects, which
//!   this format does not have yet; the reader still never returns wrong
//!   bytes for a blob, since each blob is bound to its id.
//!
//! A wrong password and a damaged slot look the same to the cipher (both
//! fail the tag): unlocking reports "wrong password", naming the vault.

pub mod keys;
pub mod password;
pub mod seal;
pub mod slot;

pub use keys::{BlobIdKey, FingerprintKey, MasterKey};
pub use seal::{Object, SealKey};
