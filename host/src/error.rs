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

/// Maps an error of a run that called a model: bad input (from the core, or a model that
/// reports bad input, e.g. an ONNX file whose output does not fit) keeps exit code 2.
pub fn run_error<E: std::fmt::Display + 'static>(e: elbo_core::RunError<E>) -> Error {
    use Error;
    use elbo_core::RunError;
    match e {
        RunError::Core(c) => input(format!("{c}")),
        RunError::Model(m) => {
            let any = &m as &dyn std::any::Any;
            match (any.downcast_ref::<Error>(), any.downcast_ref::<RunError<Error>>()) {
                (Some(Error::Input(msg)), _) | (_, Some(RunError::Model(Error::Input(msg)))) => {
                    input(format!("model: {msg}"))
                }
                (_, Some(RunError::Core(c))) => input(format!("{c}")),
                _ => Error::Internal(anyhow::anyhow!("model: {m}")),
            }
        }
    }
}
