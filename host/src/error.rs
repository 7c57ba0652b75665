//! Errors of the command-line tool: bad input (exit code 2, one line naming the file or flag
//! and what was expected) or an internal failure (exit code 1).

/// A failure of a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: the message names the file or flag and what was expected.
    #[error("{0}")]
    Input(String),
    /// Anything else.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    /// The process exit code: 2 for bad input, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Input(_) => 2,
            Error::Internal(_) => 1,
        }
    }
}

/// Bad input, with a message naming what was wrong.
pub fn input(msg: impl Into<String>) -> Error {
    Error::Input(msg.into())
}

/// Maps a core error on a flag's value to bad input naming the flag.
pub fn flag(name: &str, e: elbo_core::Error) -> Error {
    Error::Input(format!("{name}: {e}"))
}

/// The result of a command.
pub type Result<T> = std::result::Result<T, Error>;
