//! Where the secret of an encrypted vault comes from: `--key-file FILE`
//! (the whole file, for a key-file slot: no argon2id), else the password:
//! `--password-file FILE` (its first line), else the variable
//! `CBRFS_PASSWORD`, else a prompt when standard input is a terminal;
//! otherwise an error saying which option or variable to give. Never from
//! an argument: arguments are visible to every user in `ps` and
//! `/proc/<pid>/cmdline`. Passwords and key files live in wiped buffers
//! ([`Zeroizing`]).

use super::slot::{Secret, KEY_FILE_MAX};
use crate::error::{Error, IoContext, Result};
use std::ffi::OsString;
use std::fmt;
use std::io::{IsTerminal, Read};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use zeroize::Zeroizing;

/// The variable holding the password.
pub const PASSWORD_ENV: &str = "CBRFS_PASSWORD";
/// Longest password accepted (bytes of the first line of a file).
pub const MAX_PASSWORD_LEN: usize = 4096;

/// A password: not empty, at most [`MAX_PASSWORD_LEN`] bytes, wiped when
/// dropped, never printed.
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// Check a password from `source` (for messages).
    fn new(bytes: Zeroizing<Vec<u8>>, source: &str) -> Result<Password> {
        if bytes.is_empty() {
            return Err(Error::invalid(format!(
                "{source}: the password is empty; an empty password is refused"
            )));
        }
        if bytes.len() > MAX_PASSWORD_LEN {
            return Err(Error::invalid(format!(
                "{source}: the password is longer than {MAX_PASSWORD_LEN} bytes"
            )));
        }
        Ok(Password(bytes))
    }

    /// The password's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As a slot secret.
    pub fn secret(&self) -> Secret<'_> {
        Secret::Password(&self.0)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<secret>)")
    }
}

/// Where a command looks for a password.
#[derive(Debug, Clone, Copy)]
pub struct Sources<'a> {
    /// The file given with `option`, if any.
    pub file: Option<&'a Path>,
    /// The option's name, for messages (`--password-file`,
    /// `--new-password-file`).
    pub option: &'a str,
    /// The environment variable to read, if this password may come from one
    /// (a new password for `key add` may not: it would be the old one).
    pub env: Option<&'a str>,
    /// A new password: asked twice on a terminal.
    pub confirm: bool,
}

impl Sources<'_> {
    /// The password that opens a vault: `--password-file`, `CBRFS_PASSWORD`
    /// or a prompt.
    pub fn unlock(file: Option<&Path>) -> Sources<'_> {
        Sources {
            file,
            option: "--password-file",
            env: Some(PASSWORD_ENV),
            confirm: false,
        }
    }
}

/// The terminal a password is asked on (a trait so that tests can answer).
pub trait Terminal {
    /// Whether there is a user to ask.
    fn is_terminal(&self) -> bool;
    /// Show `prompt` and read a line with echo off.
    fn ask(&self, prompt: &str) -> std::io::Result<Zeroizing<String>>;
}

/// The process's terminal: standard input decides whether one is there
/// (a cron job or a pipe has none, even if /dev/tty would open);
/// `rpassword` prompts and reads on /dev/tty with echo off.
pub struct Tty;

impl Terminal for Tty {
    fn is_terminal(&self) -> bool {
        std::io::stdin().is_terminal()
    }
    fn ask(&self, prompt: &str) -> std::io::Result<Zeroizing<String>> {
        rpassword::prompt_password(prompt).map(Zeroizing::new)
    }
}

/// The password for `vault` from the first of `src` given, using the real
/// environment and terminal.
pub fn read_password(vault: &str, src: &Sources<'_>) -> Result<Password> {
    read_password_with(vault, src, &|name| std::env::var_os(name), &Tty)
}

/// The master key of `vault`, unlocked with the password from `file`,
/// `CBRFS_PASSWORD` or the terminal: what every command on an encrypted
/// vault and the mount start with. Returns the slot number that opened.
pub fn unlock_with_password(
    storage: &dyn super::slot::SlotStorage,
    vault: &str,
    file: Option<&Path>,
) -> Result<(u32, super::MasterKey)> {
    let pw = read_password(vault, &Sources::unlock(file))?;
    super::slot::unlock_vault(storage, vault, pw.secret())
}

/// [`read_password`] with the environment and the terminal given.
pub fn read_password_with(
    vault: &str,
    src: &Sources<'_>,
    env: &dyn Fn(&str) -> Option<OsString>,
    tty: &dyn Terminal,
) -> Result<Password> {
    if let Some(path) = src.file {
        return read_password_file(path, src.option);
    }
    if let Some(var) = src.env {
        if let Some(v) = env(var) {
            return Password::new(
                Zeroizing::new(v.into_vec()),
                &format!("environment variable {var}"),
            );
        }
    }
    if !tty.is_terminal() {
        let via = match src.env {
            Some(var) => format!("set {var} or give {} FILE", src.option),
            None => format!("give {} FILE", src.option),
        };
        return Err(Error::invalid(format!(
            "vault {vault} is encrypted and no terminal is there to ask for its \
             password: {via}"
        )));
    }
    let what = if src.confirm {
        "new password"
    } else {
        "password"
    };
    // restic's wording: "enter password for repository:".
    let prompt = format!("enter {what} for vault {}: ", crate::quote::quote(vault));
    let ask = |p: &str| -> Result<Zeroizing<Vec<u8>>> {
        let s = tty
            .ask(p)
            .ctx(|| format!("read the {what} for vault {vault} from the terminal"))?;
        Ok(Zeroizing::new(s.as_bytes().to_vec()))
    };
    let first = ask(&prompt)?;
    let pw = Password::new(first, &format!("the {what} typed for vault {vault}"))?;
    if src.confirm {
        let again = ask(&format!("repeat the {what}: "))?;
        if again[..] != pw.as_bytes()[..] {
            return Err(Error::invalid(format!(
                "the two {what}s typed for vault {vault} differ"
            )));
        }
    }
    Ok(pw)
}

/// The password in `path`: its first line, without the line end (`\n` or
/// `\r\n`). The file is the user's own choice, so a symlink to it is
/// followed (`<(cmd)` gives one to a pipe, which is read like a file).
pub fn read_password_file(path: &Path, option: &str) -> Result<Password> {
    let what = || format!("{option} {}", path.display());
    let bytes = read_bounded(path, MAX_PASSWORD_LEN + 2, &what)?;
    let line_end = bytes.iter().position(|&b| b == b'\n');
    let mut line = match line_end {
        Some(i) => Zeroizing::new(bytes[..i].to_vec()),
        None if bytes.len() > MAX_PASSWORD_LEN => {
            return Err(Error::invalid(format!(
                "{}: the first line is longer than {MAX_PASSWORD_LEN} bytes",
                what()
            )))
        }
        None => Zeroizing::new(bytes.to_vec()),
    };
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Password::new(line, &what())
}

/// The bytes of a key file (whole, at most [`KEY_FILE_MAX`]).
pub fn read_key_file(path: &Path, option: &str) -> Result<Zeroizing<Vec<u8>>> {
    let what = || format!("{option} {}", path.display());
    let bytes = read_bounded(path, KEY_FILE_MAX + 1, &what)?;
    if bytes.len() > KEY_FILE_MAX {
        return Err(Error::invalid(format!(
            "{}: longer than {KEY_FILE_MAX} bytes, too long for a key file",
            what()
        )));
    }
    // Refused here, naming the file, rather than as a "wrong key file"
    // after every slot was tried (unlock) or as a nameless length error
    // (a new slot).
    super::slot::check_key_file_len(bytes.len()).map_err(|e| e.context(what()))?;
    Ok(bytes)
}

/// What opens an encrypted vault, as given to this process: a password
/// (an argon2id slot) or the bytes of a key file (a key-file slot). Wiped
/// when dropped, never printed.
pub enum Given {
    /// A password, from a file, the variable or the terminal.
    Password(Password),
    /// A key file's bytes.
    KeyFile(Zeroizing<Vec<u8>>),
}

impl Given {
    /// As a slot secret.
    pub fn secret(&self) -> Secret<'_> {
        match self {
            Given::Password(p) => p.secret(),
            Given::KeyFile(b) => Secret::KeyFile(b),
        }
    }
}

impl fmt::Debug for Given {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Given::Password(_) => "Given::Password(<secret>)",
            Given::KeyFile(_) => "Given::KeyFile(<secret>)",
        })
    }
}

/// The secret that opens `vault`: the key file `key_file` when one is
/// given (`--key-file`: only the vault's key-file slots are tried, and no
/// argon2id runs; a scheduled or scripted command's choice), else the
/// password from `src`. A key file given wins over `CBRFS_PASSWORD` (an
/// option says more than the environment); the CLI refuses `--key-file`
/// beside `--password-file`.
pub fn read_secret(vault: &str, key_file: Option<&Path>, src: &Sources<'_>) -> Result<Given> {
    match key_file {
        Some(path) => read_key_file(path, "--key-file").map(Given::KeyFile),
        None => read_password(vault, src).map(Given::Password),
    }
}

/// At most `limit` bytes of `path` (a regular file, a pipe or a character
/// device; never a directory), into a wiped buffer.
fn read_bounded(
    path: &Path,
    limit: usize,
    what: &dyn Fn() -> String,
) -> Result<Zeroizing<Vec<u8>>> {
    let file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(format!("{}: no such file", what()))
        } else {
            Error::io(what(), e)
        }
    })?;
    // The type of what was opened, not of the path (which may change).
    let meta = file.metadata().ctx(what)?;
    let ft = meta.file_type();
    if ft.is_dir() {
        return Err(Error::invalid(format!("{}: is a directory", what())));
    }
    if ft.is_file() && meta.mode() & 0o077 != 0 {
        log::warn!(
            "{}: readable or writable by other users than its owner (mode {:o})",
            crate::quote::quote(&what()),
            meta.mode() & 0o7777
        );
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(limit.min(64 * 1024)));
    file.take(limit as u64).read_to_end(&mut buf).ctx(what)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::io::Write;

    struct FakeTty {
        there: bool,
        answers: RefCell<Vec<&'static str>>,
        prompts: RefCell<Vec<String>>,
    }

    impl FakeTty {
        fn new(there: bool, answers: &[&'static str]) -> Self {
            FakeTty {
                there,
                answers: RefCell::new(answers.iter().rev().copied().collect()),
                prompts: RefCell::default(),
            }
        }
    }

    impl Terminal for FakeTty {
        fn is_terminal(&self) -> bool {
            self.there
        }
        fn ask(&self, prompt: &str) -> std::io::Result<Zeroizing<String>> {
            self.prompts.borrow_mut().push(prompt.into());
            let a = self.answers.borrow_mut().pop().expect("asked too often");
            Ok(Zeroizing::new(a.into()))
        }
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn file_with(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f
    }

    #[test]
    fn file_first_line_without_its_end() {
        for (content, want) in [
            (&b"secret\n"[..], &b"secret"[..]),
            (b"secret", b"secret"),
            (b"secret\r\nsecond line\n", b"secret"),
            (b" spaces kept \n", b" spaces kept "),
        ] {
            let f = file_with(content);
            let pw = read_password_file(f.path(), "--password-file").unwrap();
            assert_eq!(pw.as_bytes(), want);
        }
    }

    #[test]
    fn empty_long_missing_and_directory_files_are_refused() {
        for content in [&b""[..], b"\n", b"\r\n", b"\nsecond"] {
            let f = file_with(content);
            let e = read_password_file(f.path(), "--password-file").unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("empty password is refused"), "{e}");
            assert!(
                e.to_string().contains(&f.path().display().to_string()),
                "{e}"
            );
        }
        let f = file_with(&vec![b'x'; MAX_PASSWORD_LEN + 1]);
        let e = read_password_file(f.path(), "--password-file").unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        let mut exact = vec![b'x'; MAX_PASSWORD_LEN];
        exact.extend_from_slice(b"\r\n");
        let f = file_with(&exact);
        assert_eq!(
            read_password_file(f.path(), "--password-file")
                .unwrap()
                .as_bytes()
                .len(),
            MAX_PASSWORD_LEN
        );
        let e = read_password_file(Path::new("/nonexistent/pw"), "--password-file").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("--password-file /nonexistent/pw"),
            "{e}"
        );
        let d = tempfile::tempdir().unwrap();
        let e = read_password_file(d.path(), "--password-file").unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn order_file_then_variable_then_terminal() {
        let f = file_with(b"from-file\n");
        let env = |n: &str| (n == PASSWORD_ENV).then(|| OsString::from("from-env"));
        let tty = FakeTty::new(true, &["from-tty"]);
        let pw = read_password_with("v", &Sources::unlock(Some(f.path())), &env, &tty).unwrap();
        assert_eq!(pw.as_bytes(), b"from-file");
        let pw = read_password_with("v", &Sources::unlock(None), &env, &tty).unwrap();
        assert_eq!(pw.as_bytes(), b"from-env");
        let pw = read_password_with("v", &Sources::unlock(None), &no_env, &tty).unwrap();
        assert_eq!(pw.as_bytes(), b"from-tty");
        assert_eq!(tty.prompts.borrow()[0], "enter password for vault v: ");
    }

    #[test]
    fn empty_variable_is_refused_not_skipped() {
        let env = |_: &str| Some(OsString::new());
        let tty = FakeTty::new(true, &["typed"]);
        let e = read_password_with("v", &Sources::unlock(None), &env, &tty).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("CBRFS_PASSWORD"), "{e}");
    }

    #[test]
    fn no_terminal_says_what_to_give() {
        let tty = FakeTty::new(false, &[]);
        let e = read_password_with("home", &Sources::unlock(None), &no_env, &tty).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains("vault home"), "{msg}");
        assert!(msg.contains("CBRFS_PASSWORD"), "{msg}");
        assert!(msg.contains("--password-file FILE"), "{msg}");
        let new = Sources {
            file: None,
            option: "--new-password-file",
            env: None,
            confirm: true,
        };
        let e = read_password_with("home", &new, &no_env, &tty).unwrap_err();
        assert!(
            e.to_string().contains("give --new-password-file FILE"),
            "{e}"
        );
    }

    #[test]
    fn new_password_is_asked_twice_and_must_match() {
        let new = Sources {
            file: None,
            option: "--new-password-file",
            env: None,
            confirm: true,
        };
        // The variable is not consulted for a new password.
        let env = |_: &str| Some(OsString::from("old"));
        let tty = FakeTty::new(true, &["n3w", "n3w"]);
        let pw = read_password_with("v", &new, &env, &tty).unwrap();
        assert_eq!(pw.as_bytes(), b"n3w");
        assert_eq!(tty.prompts.borrow().len(), 2);
        let tty = FakeTty::new(true, &["n3w", "typo"]);
        let e = read_password_with("v", &new, &env, &tty).unwrap_err();
        assert!(e.to_string().contains("differ"), "{e}");
        let tty = FakeTty::new(true, &[""]);
        let e = read_password_with("v", &new, &env, &tty).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn key_files_are_bounded() {
        let f = file_with(&[1u8; 64]);
        assert_eq!(read_key_file(f.path(), "--key-file").unwrap().len(), 64);
        let f = file_with(&vec![0u8; KEY_FILE_MAX + 1]);
        let e = read_key_file(f.path(), "--key-file").unwrap_err();
        assert!(e.to_string().contains("too long for a key file"), "{e}");
        // Too short: exit 2 naming the file, before any slot is tried.
        let f = file_with(b"hunter2\n");
        let e = read_key_file(f.path(), "--key-file").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(msg.contains("a key file has 32 to"), "{msg}");
        assert!(
            msg.contains(&format!("--key-file {}", f.path().display())),
            "{msg}"
        );
    }

    /// A key file given is what unlocks, whatever the variable or the
    /// terminal hold; without one the password sources are read as before.
    #[test]
    fn a_key_file_given_opens_its_slot_and_wins_over_the_password() {
        use crate::crypto::slot::{add_slot, create_vault_key, tests::MemStorage, tests::CHEAP};
        let s = MemStorage::default();
        let m = create_vault_key(&s, "v", Secret::Password(b"pw"), CHEAP).unwrap();
        let key = [7u8; 64];
        assert_eq!(
            add_slot(&s, "v", &m, Secret::KeyFile(&key), CHEAP).unwrap(),
            1
        );
        let kf = file_with(&key);
        let pwf = file_with(b"pw\n");
        let given = read_secret("v", Some(kf.path()), &Sources::unlock(Some(pwf.path()))).unwrap();
        assert!(matches!(given, Given::KeyFile(_)), "{given:?}");
        let (n, got) = crate::crypto::slot::unlock_vault(&s, "v", given.secret()).unwrap();
        assert_eq!((n, got.key_id()), (1, m.key_id()));
        let given = read_secret("v", None, &Sources::unlock(Some(pwf.path()))).unwrap();
        assert!(matches!(given, Given::Password(_)), "{given:?}");
        let (n, _) = crate::crypto::slot::unlock_vault(&s, "v", given.secret()).unwrap();
        assert_eq!(n, 0);
        // Another key file: only the key-file slot is tried, exit 2.
        let other = file_with(&[8u8; 64]);
        let given = read_secret("v", Some(other.path()), &Sources::unlock(None)).unwrap();
        let e = crate::crypto::slot::unlock_vault(&s, "v", given.secret()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "wrong key file for vault v (tried key slots 1)"
        );
        assert_eq!(e.exit_code(), 2);
        assert!(!format!("{given:?}").contains('8'));
    }

    #[test]
    fn unlock_with_a_password_file() {
        use crate::crypto::slot::{create_vault_key, tests::MemStorage, tests::CHEAP};
        let s = MemStorage::default();
        let m = create_vault_key(&s, "v", Secret::Password(b"pw"), CHEAP).unwrap();
        let f = file_with(b"pw\n");
        let (n, got) = unlock_with_password(&s, "v", Some(f.path())).unwrap();
        assert_eq!((n, got.key_id()), (0, m.key_id()));
        let f = file_with(b"not it\n");
        let e = unlock_with_password(&s, "v", Some(f.path())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "wrong password for vault v (tried key slots 0)"
        );
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn debug_hides_the_password() {
        let f = file_with(b"hunter2\n");
        let pw = read_password_file(f.path(), "--password-file").unwrap();
        assert!(!format!("{pw:?}").contains("hunter2"));
    }
}
