//! `cbrfs completions`: a shell completion script.

use super::Cli;
use crate::error::Result;
use clap::Args;

#[derive(Args, Debug)]
pub(super) struct CompletionsArgs {
    /// The shell.
    pub(super) shell: clap_complete::Shell,
}

/// Completions describe the program, not a store: they work on a build host.
pub(super) fn completions_cmd(a: &CompletionsArgs) -> Result<i32> {
    clap_complete::generate(
        a.shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "cbrfs",
        &mut std::io::stdout(),
    );
    Ok(0)
}
