//! The writer lease of an encrypted vault in a bucket (docs/FORMAT.md
//! §19.5): its holder's identity — host name, pid, boot id, pid namespace,
//! start time — is sealed with the vault's key, so the bucket does not
//! learn which hosts write the vault. The fields the lease protocol decides
//! by (format, token, times) stay clear, with placeholders where the
//! identity was: a cbrfs that reads leases in the clear (before this
//! change) still sees a well-formed lease, held until it expires, and
//! waits for it instead of taking it over as damaged.
//!
//! Only the encoding lives here; store/lease.rs calls [`encode`] where it
//! writes the lease and [`decode`] before it parses one.

use super::lease::{LeaseRecord, ProcessId};
use crate::crypto::SealKey;
use crate::error::{Error, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// The host name a sealed lease shows in the clear.
pub const SEALED_HOST: &str = "(sealed)";

/// The sealed part: who holds the lease.
#[derive(Serialize, Deserialize)]
struct Identity {
    host: String,
    pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<ProcessId>,
}

/// The lease object for record `r`: clear JSON, or with `seal` (an
/// encrypted vault) the holder's identity sealed (kind 7, bound to the
/// token) into a `sealed` member and placeholders in its place.
pub fn encode(r: &LeaseRecord, seal: Option<&SealKey>) -> Result<Vec<u8>> {
    let enc = |e: serde_json::Error| Error::failed(format!("encode lease: {e}"));
    let Some(k) = seal else {
        return serde_json::to_vec(r).map_err(enc);
    };
    let who = serde_json::to_vec(&Identity {
        host: r.host.clone(),
        pid: r.pid,
        process: r.process.clone(),
    })
    .map_err(enc)?;
    let sealed = k.seal_lease(&r.token, &who)?;
    let clear = LeaseRecord {
        host: SEALED_HOST.into(),
        pid: 0,
        process: None,
        ..r.clone()
    };
    let mut v = serde_json::to_value(&clear).map_err(enc)?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert(
            "sealed".into(),
            base64::engine::general_purpose::STANDARD
                .encode(sealed)
                .into(),
        );
    }
    serde_json::to_vec(&v).map_err(enc)
}

/// The clear JSON of lease object `bytes` (at most a lease's size, checked
/// by the caller): a sealed identity opened with `seal` and put back in
/// its fields, anything else as it is (the caller's decoder reports what
/// is not a lease). The error says why the object is damaged: a sealed
/// identity in a vault without a key, or one that does not open. A clear
/// lease in an encrypted vault is read as it is: cbrfs wrote them so
/// before leases were sealed.
pub fn decode<'a>(
    bytes: &'a [u8],
    seal: Option<&SealKey>,
) -> std::result::Result<Cow<'a, [u8]>, String> {
    let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice(bytes) else {
        return Ok(Cow::Borrowed(bytes));
    };
    let Some(sealed) = m.remove("sealed") else {
        return Ok(Cow::Borrowed(bytes));
    };
    let Some(k) = seal else {
        return Err("it holds a sealed identity, in a vault that is not encrypted".into());
    };
    let (Some(text), Some(token)) = (sealed.as_str(), m.get("token").and_then(|t| t.as_str()))
    else {
        return Err("its sealed identity or its token is not a string".into());
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("its sealed identity is not base64: {e}"))?;
    let plain = k.open_lease(token, &raw).map_err(|e| e.to_string())?;
    let who: Identity = serde_json::from_slice(&plain)
        .map_err(|e| format!("its sealed identity does not decode: {e}"))?;
    m.insert("host".into(), who.host.into());
    m.insert("pid".into(), who.pid.into());
    match who.process {
        Some(p) => {
            let p = serde_json::to_value(p).map_err(|e| e.to_string())?;
            m.insert("process".into(), p);
        }
        None => {
            m.remove("process");
        }
    }
    serde_json::to_vec(&m)
        .map(Cow::Owned)
        .map_err(|e| e.to_string())
}

/// The sealing key of the vault in `storage` if it is encrypted (unlocked
/// once per process, store/keyring.rs; every writer of an encrypted vault
/// needs it anyway), else `None`.
pub fn key_of(storage: &dyn super::Storage, vault: &str) -> Result<Option<SealKey>> {
    Ok(super::keyring::sealing_key(storage, vault)?.and_then(|k| k.seal_key().cloned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn record() -> LeaseRecord {
        LeaseRecord {
            format: 1,
            host: "HOSTMARKER-b33f".into(),
            pid: 424242,
            token: "0123456789abcdef0123456789abcdef".into(),
            acquired_ns: 1_795_000_000_000_000_000,
            renewed_ns: 1_795_000_060_000_000_000,
            expires_ns: 1_795_000_360_000_000_000,
            process: Some(ProcessId {
                boot_id: "BOOTMARKER-5d3f".into(),
                pid_ns: 4026531836,
                start_ticks: 123456,
            }),
        }
    }

    fn parse(b: &[u8]) -> LeaseRecord {
        serde_json::from_slice(b).unwrap()
    }

    #[test]
    fn the_holder_is_sealed_and_opens_with_the_key() {
        let k = MasterKey::generate().unwrap().seal_key();
        let r = record();
        let stored = encode(&r, Some(&k)).unwrap();
        let text = String::from_utf8(stored.clone()).unwrap();
        for secret in [
            "HOSTMARKER",
            "424242",
            "BOOTMARKER",
            "4026531836",
            "123456,",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // What a reader of clear leases sees: a lease held until it
        // expires, by nobody it can name, with the same token and times.
        let clear = parse(&stored);
        assert_eq!((clear.host.as_str(), clear.pid), (SEALED_HOST, 0));
        assert_eq!(clear.process, None);
        assert_eq!(
            (clear.token.as_str(), clear.expires_ns),
            (r.token.as_str(), r.expires_ns)
        );
        assert_eq!(parse(&decode(&stored, Some(&k)).unwrap()), r);
        // Clear, without a key: as before.
        let plain = encode(&r, None).unwrap();
        assert_eq!(parse(&plain), r);
        assert_eq!(parse(&decode(&plain, None).unwrap()), r);
        // A clear lease in an encrypted vault (written before leases were
        // sealed) is read as it is.
        assert_eq!(parse(&decode(&plain, Some(&k)).unwrap()), r);
        let no_process = LeaseRecord {
            process: None,
            ..r.clone()
        };
        let stored = encode(&no_process, Some(&k)).unwrap();
        assert_eq!(parse(&decode(&stored, Some(&k)).unwrap()), no_process);
    }

    /// Through the lease protocol: the lease an encrypted vault's writer
    /// leaves in its storage names no host; a second writer is told who
    /// holds it (the identity opened), and the holder renews and releases
    /// its sealed lease.
    #[test]
    fn an_encrypted_vaults_lease_names_its_holder_only_to_key_holders() {
        use super::super::lease::{Fence, Lease, Timing, LEASE_OBJECT};
        use super::super::{LocalDir, Storage};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Storage> = Arc::new(LocalDir::new(dir.path()));
        s.put("vault.json", br#"{"format": 2, "encrypted": true}"#)
            .unwrap();
        let master = MasterKey::generate().unwrap();
        super::super::keyring::remember(&*s, Ok(&master));
        let timing = Timing::from_values(Some("20"), Some("1"), Some("500")).unwrap();
        let a = Lease::acquire(s.clone(), "v", timing, Arc::new(Fence::default())).unwrap();
        let host = a.record().host;
        assert!(!host.is_empty() && host != SEALED_HOST, "{host}");
        let stored = s.get(LEASE_OBJECT).unwrap().unwrap();
        let clear = parse(&stored);
        assert_eq!(clear.host, SEALED_HOST);
        assert!(
            !stored.windows(host.len()).any(|w| w == host.as_bytes()),
            "the host name is in the clear: {}",
            String::from_utf8_lossy(&stored)
        );
        let e = Lease::acquire(s.clone(), "v", timing, Arc::new(Fence::default())).unwrap_err();
        let want = format!("in progress on host {}", crate::quote::quote(&host));
        assert!(e.to_string().contains(&want), "{e}");
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        // Renewed (the expiry moves) and still sealed.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let now = s.get(LEASE_OBJECT).unwrap().unwrap();
            let r = parse(&now);
            if r.expires_ns > clear.expires_ns {
                assert_eq!(
                    (r.host.as_str(), r.token),
                    (SEALED_HOST, clear.token.clone())
                );
                break;
            }
            assert!(std::time::Instant::now() < end, "never renewed");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        a.check().unwrap();
        drop(a);
        assert!(s.get(LEASE_OBJECT).unwrap().is_none(), "not released");
        super::super::keyring::forget(&*s);
    }

    #[test]
    fn a_sealed_identity_that_does_not_open_is_damage() {
        let k = MasterKey::generate().unwrap().seal_key();
        let stored = encode(&record(), Some(&k)).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&stored).unwrap();
        // Another vault's key, no key, another token (an identity moved
        // from another lease), a flipped byte, garbage.
        let other = MasterKey::generate().unwrap().seal_key();
        let e = decode(&stored, Some(&other)).unwrap_err();
        assert!(e.contains("writer lease: authentication failed"), "{e}");
        let e = decode(&stored, None).unwrap_err();
        assert!(e.contains("not encrypted"), "{e}");
        v["token"] = "ffffffffffffffffffffffffffffffff".into();
        let moved = serde_json::to_vec(&v).unwrap();
        assert!(decode(&moved, Some(&k)).is_err());
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(v["sealed"].as_str().unwrap())
            .unwrap();
        raw[30] ^= 1;
        v["token"] = record().token.into();
        v["sealed"] = base64::engine::general_purpose::STANDARD.encode(raw).into();
        assert!(decode(&serde_json::to_vec(&v).unwrap(), Some(&k)).is_err());
        v["sealed"] = "not base64!".into();
        let e = decode(&serde_json::to_vec(&v).unwrap(), Some(&k)).unwrap_err();
        assert!(e.contains("not base64"), "{e}");
        v["sealed"] = 7.into();
        assert!(decode(&serde_json::to_vec(&v).unwrap(), Some(&k)).is_err());
        // Not JSON at all: left to the lease decoder, which says so.
        assert_eq!(&decode(b"[", Some(&k)).unwrap()[..], b"[");
    }
}
