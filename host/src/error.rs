//! Errors of the command-line tool and the library. The variant decides the exit code: bad
//! input (2, one line naming the file or flag and what was expected) or an internal failure
//! (1, with its cause).

/// A failure of a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: the message names the file or flag and what was expected.
    #[error("{0}")]
    Input(String),
    /// An error of the core, in the context of a flag, a file or a run (empty context).
    #[error("{}{source}", if context.is_empty() { String::new() } else { format!("{context}: ") })]
    Core {
        /// What the error concerns (a flag or file), if anything.
        context: String,
        /// The core's error.
        #[source]
        source: elbo_core::Error,
    },
    /// Anything else.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    /// The process exit code: 2 for bad input, 1 otherwise. A core error is bad input unless
    /// it can only come from the tool itself (a buffer of the wrong length, a timestep outside
    /// the schedule), which is an internal failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Input(_) => 2,
            Error::Core { source, .. } if is_internal(source) => 1,
            Error::Core { .. } => 2,
            Error::Internal(_) => 1,
        }
    }
}

/// Core errors that the tool's own code causes, never the user's input.
fn is_internal(e: &elbo_core::Error) -> bool {
    matches!(e, elbo_core::Error::DimensionMismatch { .. } | elbo_core::Error::TimestepOutOfRange { .. })
}

/// Bad input, with a message naming what was wrong.
pub fn input(msg: impl Into<String>) -> Error {
    Error::Input(msg.into())
}

/// An internal failure (exit code 1), with its cause.
pub fn internal(msg: impl Into<String>) -> Error {
    Error::Internal(anyhow::anyhow!(msg.into()))
}

/// A core error on a flag's (or file's) value, naming it.
pub fn flag(name: &str, e: elbo_core::Error) -> Error {
    Error::Core { context: name.to_string(), source: e }
}

/// The result of a command.
pub type Result<T> = std::result::Result<T, Error>;

/// Maps an error of a run that called a model: the core's keeps its kind; a model's error of
/// bad input (an ONNX file whose output does not fit, a non-finite prediction) stays bad input.
pub fn run_error<E: std::fmt::Display + 'static>(e: elbo_core::RunError<E>) -> Error {
    use elbo_core::RunError;
    match e {
        RunError::Core(c) => Error::Core { context: String::new(), source: c },
        RunError::Model(m) => {
            let any = &m as &dyn std::any::Any;
            match (any.downcast_ref::<Error>(), any.downcast_ref::<RunError<Error>>()) {
                (Some(Error::Input(msg)), _) | (_, Some(RunError::Model(Error::Input(msg)))) => {
                    input(format!("model: {msg}"))
                }
                (Some(Error::Core { context, source }), _)
                | (_, Some(RunError::Model(Error::Core { context, source }))) => Error::Core {
                    context: format!("model{}", if context.is_empty() { "" } else { ": " }) + context,
                    source: *source,
                },
                (_, Some(RunError::Core(c))) => Error::Core { context: String::new(), source: *c },
                _ => Error::Internal(anyhow::anyhow!("model: {m}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elbo_core::RunError;

    /// The variant, not the message, decides the exit code; the core's errors keep their kind.
    #[test]
    fn exit_codes_follow_the_kind() {
        assert_eq!(input("--n: expected at least 1").exit_code(), 2);
        assert_eq!(flag("--timesteps", elbo_core::Error::ZeroSteps).exit_code(), 2);
        let internal = run_error::<Error>(RunError::Core(elbo_core::Error::DimensionMismatch { expected: 4, got: 3 }));
        assert_eq!(internal.exit_code(), 1);
        let overflow = run_error::<Error>(RunError::Core(elbo_core::Error::NonFinite { what: "sampling" }));
        assert_eq!(overflow.exit_code(), 2);
        assert_eq!(overflow.to_string(), "sampling produced a non-finite value (extreme or damaged input)");
        let model = run_error::<Error>(RunError::Model(flag("--model optimal", elbo_core::Error::Unconditional)));
        assert_eq!(model.exit_code(), 2);
        assert!(model.to_string().starts_with("model: --model optimal: "), "{model}");
        assert_eq!(Error::Internal(anyhow::anyhow!("disk")).exit_code(), 1);
    }
}
