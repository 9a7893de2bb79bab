//! Policies (`policies/<policy>.json`) and servers (`servers/<server>.json`):
//! the store-wide definitions beside the vaults.

use super::*;

impl Store {
    pub(super) fn policy_path(&self, name: &str) -> PathBuf {
        self.root.join("policies").join(format!("{name}.json"))
    }

    /// Every policy, sorted by name.
    pub fn policies(&self) -> Result<Vec<PolicyConfig>> {
        names_in(&self.root.join("policies"), ".json")?
            .iter()
            .map(|n| self.policy(n))
            .collect()
    }

    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Result<PolicyConfig> {
        rules::check_name("policy name", name)?;
        read_record(
            &self.policy_path(name),
            "policy",
            name,
            "BackupService.6000",
        )
    }

    /// Write a policy atomically. Caller holds the catalog lock.
    pub fn save_policy(&self, p: &PolicyConfig) -> Result<()> {
        fsutil::create_dir_all(&self.root.join("policies"))?;
        let json = serde_json::to_vec_pretty(p)
            .map_err(|e| Error::failed(format!("encode policy {}: {e}", p.name)))?;
        fsutil::write_atomic(&self.policy_path(&p.name), &json)
    }

    /// Remove a policy's record. Caller holds the catalog lock.
    pub fn delete_policy(&self, name: &str) -> Result<()> {
        let p = self.policy_path(name);
        fs::remove_file(&p).ctx(|| format!("delete {}", p.display()))?;
        fsutil::sync_dir(&self.root.join("policies"))
    }

    pub(super) fn server_path(&self, name: &str) -> PathBuf {
        self.root.join("servers").join(format!("{name}.json"))
    }

    /// Every server, sorted by name.
    pub fn servers(&self) -> Result<Vec<ServerConfig>> {
        names_in(&self.root.join("servers"), ".json")?
            .iter()
            .map(|n| self.server(n))
            .collect()
    }

    /// The server named `name`.
    pub fn server(&self, name: &str) -> Result<ServerConfig> {
        rules::check_name("server name", name)?;
        read_record(
            &self.server_path(name),
            "server",
            name,
            "BackupService.6302",
        )
    }

    /// Write a server atomically. Caller holds the catalog lock.
    pub fn save_server(&self, s: &ServerConfig) -> Result<()> {
        fsutil::create_dir_all(&self.root.join("servers"))?;
        let json = serde_json::to_vec_pretty(s)
            .map_err(|e| Error::failed(format!("encode server {}: {e}", s.name)))?;
        fsutil::write_atomic(&self.server_path(&s.name), &json)
    }

    /// Remove a server's record. Caller holds the catalog lock.
    pub fn delete_server(&self, name: &str) -> Result<()> {
        let p = self.server_path(name);
        fs::remove_file(&p).ctx(|| format!("delete {}", p.display()))?;
        fsutil::sync_dir(&self.root.join("servers"))
    }
}
