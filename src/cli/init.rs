//! `cbrfs init`: create an empty store.

use crate::catalog::{self, Store};
use crate::error::Result;
use crate::quote::quote;
use std::path::PathBuf;

/// Create the store at `store` (else the default); an existing one is left
/// as it is.
pub(super) fn init_cmd(store: &Option<PathBuf>) -> Result<i32> {
    let p = store.clone().unwrap_or_else(catalog::default_store_path);
    let existed = p.join("cbrfs-store.json").exists();
    let store = Store::init(&p)?;
    println!(
        "{} cbrfs store at {}",
        if existed { "existing" } else { "created" },
        quote(&store.root().display().to_string())
    );
    Ok(0)
}
