//! The error type of the library, with the exit code each error maps to.
//!
//! Exit codes follow the LSB init-script conventions: 1 generic failure, 2 invalid arguments,
//! 4 insufficient privilege, 5 not installed, 6 not configured.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::engine::EngineError;

/// Everything that can make an action fail before or while it reaches the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed command line: the message is printed with the usage text.
    #[error("{0}")]
    Usage(String),

    /// One or more bad lines in configuration files; every one is reported.
    #[error("{}", join_lines(.0))]
    Config(Vec<ConfigError>),

    /// A value that is well-formed but unusable (a release with no build tree, a root user...).
    #[error("{0}")]
    Invalid(String),

    /// The engine did not answer at all.
    #[error("cannot reach the Docker engine at {addr}: is dockerd running? ({reason})")]
    EngineUnreachable { addr: String, reason: String },

    /// One engine operation failed, with the engine's HTTP status.
    #[error(transparent)]
    Engine(#[from] EngineError),

    /// A host file operation failed; the path is part of the message.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The compile-server image could not be made.
    #[error("cannot build the image {image}: {reason}")]
    Image { image: String, reason: String },

    /// Something the action needs is missing on this host.
    #[error("{0}")]
    NotInstalled(String),

    /// The action was interrupted by a signal after cleaning up.
    #[error("interrupted")]
    Interrupted,
}

fn join_lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    /// The process exit status for this error (LSB conventions).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Config(_) => 6,
            Error::NotInstalled(_) => 5,
            Error::Interrupted => 130,
            _ => 1,
        }
    }

    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// How an action ended when it ended without an error. [`Exit::code`] and
/// [`Error::exit_code`] are where every exit status of an action is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked was done (for `status`: every server shown runs).
    Success,
    /// Something asked could not be done, and was said.
    Failed,
    /// `status`: a server shown does not run.
    Dead,
    /// `status`: none runs, or one named does not exist.
    NotRunning,
    /// `reload` is not implemented.
    Unimplemented,
    /// `status`: the engine cannot be reached, so the state cannot be known.
    Unknown,
}

impl Exit {
    /// The process exit status (LSB init-script conventions).
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failed | Exit::Dead => 1,
            Exit::NotRunning | Exit::Unimplemented => 3,
            Exit::Unknown => 4,
        }
    }

    /// The exit status of a command line that clap answered itself (`clap_code`): help and
    /// version are successes, everything else is a usage error (LSB: 2).
    pub fn of_command_line(clap_code: i32) -> u8 {
        if clap_code == 0 { 0 } else { 2 }
    }

    /// Success when `ok`, else a failure.
    pub fn of(ok: bool) -> Exit {
        if ok { Exit::Success } else { Exit::Failed }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
