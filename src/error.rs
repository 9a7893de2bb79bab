//! The one error type of cbrfs, and how it maps to exit codes.
//!
//! Every error names the object it is about (vault, backup, path, pack) and,
//! where CBR has one, carries the service's error code (`BackupService.NNNN`)
//! so that a user who knows CBR recognises the case.

use std::fmt;
use std::io;

/// What kind of failure this is; decides the exit code and the errno a
/// FUSE reply gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad input from the user: a name, size, tag, path or option (exit 2).
    Invalid,
    /// A named object does not exist (exit 2).
    NotFound,
    /// The object exists already or is in a state that forbids the act (exit 2).
    Conflict,
    /// The vault is busy: another backup holds it (exit 1).
    Busy,
    /// The vault's capacity is exhausted (exit 1).
    NoSpace,
    /// Stored data is damaged: a checksum, id or structure does not match (exit 1).
    Corrupt,
    /// An operating-system I/O failure (exit 1).
    Io,
    /// The operation was started but could not be completed (exit 1).
    Failed,
}

/// An error with a kind, an optional CBR error code and a message that names
/// the object concerned.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    code: Option<&'static str>,
    msg: String,
    source: Option<io::Error>,
}

/// The result type of cbrfs.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            code: None,
            msg: msg.into(),
            source: None,
        }
    }
    /// Bad input.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, msg)
    }
    /// Bad input that CBR answers with a parameter-verification error.
    pub fn param(msg: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, msg).code("BackupService.9900")
    }
    /// A missing object.
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, msg)
    }
    /// A conflicting object or state.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, msg)
    }
    /// Damaged stored data.
    pub fn corrupt(msg: impl Into<String>) -> Self {
        Self::new(Kind::Corrupt, msg)
    }
    /// An operation that failed for a reason other than I/O or input.
    pub fn failed(msg: impl Into<String>) -> Self {
        Self::new(Kind::Failed, msg)
    }
    /// An I/O error with what was being done to which path.
    pub fn io(context: impl Into<String>, err: io::Error) -> Self {
        let kind = if err.raw_os_error() == Some(libc::ENOSPC) {
            Kind::NoSpace
        } else {
            Kind::Io
        };
        Error {
            kind,
            code: None,
            msg: context.into(),
            source: Some(err),
        }
    }
    /// Attach a CBR error code.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    /// The error's kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }
    /// The CBR error code, if any.
    pub fn cbr_code(&self) -> Option<&'static str> {
        self.code
    }
    /// The underlying OS error, if any.
    pub fn os_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
    /// The same error again (kind, code, message and the OS error's kind
    /// and text): for an outcome that several callers each get, such as a
    /// refused writer lease (store/lease.rs).
    pub fn duplicate(&self) -> Self {
        Error {
            kind: self.kind,
            code: self.code,
            msg: self.msg.clone(),
            source: self.source.as_ref().map(|e| match e.raw_os_error() {
                Some(n) => io::Error::from_raw_os_error(n),
                None => io::Error::new(e.kind(), e.to_string()),
            }),
        }
    }
    /// Prefix the message with more context, keeping kind and code.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
    /// The process exit code for this error: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Invalid | Kind::NotFound | Kind::Conflict => 2,
            _ => 1,
        }
    }
    /// The errno a FUSE reply carries for this error.
    pub fn errno(&self) -> i32 {
        match self.kind {
            Kind::Invalid => libc::EINVAL,
            Kind::NotFound => libc::ENOENT,
            Kind::Conflict => libc::EEXIST,
            Kind::Busy => libc::EBUSY,
            Kind::NoSpace => libc::ENOSPC,
            Kind::Corrupt | Kind::Failed => libc::EIO,
            Kind::Io => self
                .source
                .as_ref()
                .and_then(|e| e.raw_os_error())
                .unwrap_or(libc::EIO),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(code) = self.code {
            write!(f, "{code}: ")?;
        }
        // Messages name files and backups from sources and stores that
        // other users write: never let their control characters reach a
        // terminal or a log raw (issue #12, finding 10).
        f.write_str(&crate::quote::quote(&self.msg))?;
        if let Some(src) = &self.source {
            write!(f, ": {}", crate::quote::quote(&src.to_string()))?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Attach path context to I/O results: `file.read(..).ctx(|| format!(..))`.
pub trait IoContext<T> {
    /// Turn an `io::Error` into an [`Error`] saying what was being done.
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, io::Error> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}
