//! The error type of the library, with the exit code each error maps to.
//!
//! Exit codes follow the LSB init-script conventions: 1 generic failure, 2 invalid arguments,
//! 4 insufficient privilege, 5 not installed, 6 not configured.

use std::path::PathBuf;

use crate::config::ConfigError;

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

    /// One engine operation failed; `what` names the operation and its object.
    #[error("{what}: {source}")]
    Engine {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },

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

    /// Wraps a failed engine call with what it was doing.
    pub fn engine(what: impl Into<String>, source: bollard::errors::Error) -> Self {
        Error::Engine {
            what: what.into(),
            source,
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

pub type Result<T, E = Error> = std::result::Result<T, E>;
