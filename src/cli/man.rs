//! `cbrfs man`: write the man pages.

use super::Cli;
use crate::error::{Error, Result};
use crate::quote::quote;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(super) struct ManArgs {
    /// The directory, e.g. /usr/local/share/man/man1.
    pub(super) dir: PathBuf,
}

/// Write a man page for the command and each of its subcommands (the
/// hidden ones and `help` excepted) into `dir`.
pub(super) fn man_cmd(dir: &std::path::Path) -> Result<i32> {
    fn pages(cmd: clap::Command, dir: &std::path::Path, n: &mut usize) -> Result<()> {
        for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
            pages(sub.clone(), dir, n)?;
        }
        // Subcommands have no version of their own: name the program's.
        let man = clap_mangen::Man::new(cmd)
            .source(format!("cbrfs {}", env!("CARGO_PKG_VERSION")))
            .manual("cbrfs manual");
        let mut page = Vec::new();
        man.render(&mut page)
            .map_err(|e| Error::io(format!("render man page {}", man.get_filename()), e))?;
        // Not clap_mangen's generate_to, which opens the final path and
        // follows a symlink there: a temporary file renamed into place.
        crate::fsutil::write_atomic_public(&dir.join(man.get_filename()), &page)?;
        *n += 1;
        Ok(())
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("create {}", quote(&dir.display().to_string())), e))?;
    let mut cmd = <Cli as clap::CommandFactory>::command().disable_help_subcommand(true);
    // build() gives each subcommand its full name (cbrfs-vault-create).
    cmd.build();
    let mut n = 0;
    pages(cmd, dir, &mut n)?;
    println!(
        "wrote {n} man pages to {}",
        quote(&dir.display().to_string())
    );
    Ok(0)
}
