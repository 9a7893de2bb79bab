//! The sealed settings of an encrypted vault (docs/FORMAT.md §16.5): the
//! description, tags and resources of its `vault.json` — the settings that
//! name its data (source paths, resource names, what the user wrote about
//! it) — sealed with the vault's key as one object of kind 5 and kept,
//! base64-encoded, in the `sealed` member of the same file. The rest of the
//! file stays clear because it is read without the password: the name, the
//! type and capacity (listing, quota), compression, the times, the policy
//! applied (the scheduler), where the vault is kept, and that it is
//! encrypted. The file is copied to the bucket, so what is sealed here is
//! never clear there either.

use super::{Resource, VaultConfig};
use crate::error::{Error, Result};
use crate::store::Key;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The plaintext of the sealed member: JSON of these fields.
#[derive(Serialize, Deserialize)]
struct SealedSettings {
    description: String,
    tags: Vec<(String, String)>,
    resources: Vec<Resource>,
}

/// Upper bound of the `sealed` member's base64 text: 10 tags, a 255-char
/// description and thousands of resources fit many times over; a longer
/// one is damage, refused before it is decoded.
const MAX_SEALED_TEXT: usize = 16 << 20;

/// `cfg` as stored: description, tags and resources sealed with `key` into
/// `sealed` and emptied in the clear. A vault without a sealing key (not
/// encrypted) is stored as it is.
pub(super) fn seal(cfg: &VaultConfig, key: &Key) -> Result<VaultConfig> {
    let Some(k) = key.seal_key() else {
        return Ok(cfg.clone());
    };
    let plain = serde_json::to_vec(&SealedSettings {
        description: cfg.description.clone(),
        tags: cfg.tags.clone(),
        resources: cfg.resources.clone(),
    })
    .map_err(|e| Error::failed(format!("encode vault {}: {e}", cfg.name)))?;
    let sealed = k.seal(crate::crypto::Object::Config, &plain)?;
    let mut out = cfg.clone();
    out.description = String::new();
    out.tags = Vec::new();
    out.resources = Vec::new();
    out.sealed = Some(base64::engine::general_purpose::STANDARD.encode(sealed));
    out.locked = None;
    Ok(out)
}

/// `cfg` as read from `label` with its sealed member opened with `key`.
/// Settings both sealed and clear are refused: whoever wrote the clear
/// ones was not this vault's writer, and they would not be authenticated.
pub(super) fn open(mut cfg: VaultConfig, key: &Key, label: &str) -> Result<VaultConfig> {
    let Some(text) = cfg.sealed.take() else {
        return Ok(cfg);
    };
    let damaged = |why: String| {
        Error::corrupt(format!(
            "vault {}: {label} is damaged: its sealed settings {why}",
            cfg.name
        ))
    };
    if !cfg.description.is_empty() || !cfg.tags.is_empty() || !cfg.resources.is_empty() {
        return Err(damaged(
            "sit beside clear description, tags or resources, which the vault never writes".into(),
        ));
    }
    let Some(k) = key.seal_key() else {
        return Err(damaged("are in a vault that is not encrypted".into()));
    };
    if text.len() > MAX_SEALED_TEXT {
        return Err(damaged(format!(
            "are {} bytes long, more than the {MAX_SEALED_TEXT} a vault's settings may take",
            text.len()
        )));
    }
    let sealed = base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|e| damaged(format!("are not base64: {e}")))?;
    let plain = k
        .open(crate::crypto::Object::Config, &sealed)
        .map_err(|e| damaged(format!("do not open: {e}")))?;
    let s: SealedSettings =
        serde_json::from_slice(&plain).map_err(|e| damaged(format!("do not decode: {e}")))?;
    cfg.description = s.description;
    cfg.tags = s.tags;
    cfg.resources = s.resources;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Compression, VaultType, VAULT_FORMAT_ENCRYPTED};

    fn cfg() -> VaultConfig {
        VaultConfig {
            format: VAULT_FORMAT_ENCRYPTED,
            name: "ev".into(),
            vault_type: VaultType::Filesystem,
            capacity_gb: 10,
            description: "SECRET-description".into(),
            tags: vec![("SECRETKEY".into(), "SECRETVALUE".into())],
            compression: Compression::Zstd,
            created: "2026-11-26T12:00:00Z".into(),
            resources: vec![Resource {
                name: "SECRETNAME".into(),
                kind: crate::model::ResourceKind::Directory,
                path: "/srv/SECRETPATH".into(),
                excludes: vec!["SECRETGLOB".into()],
                size: 1,
                added: "2026-11-26T12:00:00Z".into(),
                one_file_system: false,
                exclude_caches: false,
                exclude_if_present: Vec::new(),
            }],
            policy: None,
            policy_applied_ns: 0,
            auto_expand: false,
            threshold: 80,
            storage: None,
            encrypted: true,
            sealed: None,
            locked: None,
        }
    }

    fn key(b: u8) -> Key {
        Key::from_master(&crate::crypto::MasterKey::from_bytes([b; 32]))
    }

    /// What is stored holds none of the sealed settings in the clear, and
    /// opens back to them; another vault's key, a flipped byte or clear
    /// settings planted beside the sealed ones are refused naming the file.
    #[test]
    fn sealed_settings_hold_nothing_clear_and_refuse_tampering() {
        let c = cfg();
        let stored = seal(&c, &key(1)).unwrap();
        let json = serde_json::to_string(&stored).unwrap();
        assert!(!json.contains("SECRET"), "{json}");
        assert_eq!(open(stored.clone(), &key(1), "vault.json").unwrap(), c);
        let e = open(stored.clone(), &key(2), "vault.json").unwrap_err();
        assert!(e.to_string().contains("vault.json is damaged"), "{e}");
        assert_eq!(e.exit_code(), 1);
        let mut flipped = stored.clone();
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(flipped.sealed.as_deref().unwrap())
            .unwrap();
        raw[30] ^= 1;
        flipped.sealed = Some(base64::engine::general_purpose::STANDARD.encode(raw));
        assert!(open(flipped, &key(1), "vault.json").is_err());
        let mut planted = stored;
        planted.description = "clear".into();
        let e = open(planted, &key(1), "vault.json").unwrap_err();
        assert!(e.to_string().contains("beside clear"), "{e}");
    }
}
