//! The one error type of the core. Constructors and samplers validate their input and return it;
//! nothing in the core panics on caller data.

use core::fmt;

/// What was wrong with the caller's input. (Variant fields are named for what they hold.)
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Error {
    /// A schedule with `T = 0` steps.
    ZeroSteps,
    /// More steps than the fixed capacity of the table.
    Capacity { requested: usize, capacity: usize },
    /// A beta outside the open interval (0, 1) (only the zero-terminal-SNR rescale may reach 1).
    InvalidBeta { t: usize, beta: f64 },
    /// log-SNR must strictly decrease with t.
    NonMonotoneSnr { t: usize },
    /// A parameter outside its domain; `reason` says what was expected.
    InvalidParameter { name: &'static str, reason: &'static str },
    /// A timestep outside `1..=steps`.
    TimestepOutOfRange { t: usize, steps: usize },
    /// More sampling steps than the schedule has timesteps.
    TooManySteps { steps: usize, timesteps: usize },
    /// A buffer whose length does not fit the data dimension or the batch.
    DimensionMismatch { expected: usize, got: usize },
    /// Guidance or a class label was given to a model without classes.
    Unconditional,
    /// A class label outside `0..classes`.
    ClassOutOfRange { class: u32, classes: usize },
    /// A name (schedule, weighting, prediction, ...) that is not known; `what` names the kind.
    UnknownName { what: &'static str },
    /// A combination the method does not support; the text says which.
    Unsupported(&'static str),
    /// A computation produced an infinity or NaN (from extreme or damaged input); `what` names
    /// where.
    NonFinite { what: &'static str },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::ZeroSteps => write!(f, "the schedule needs at least one timestep (T = 0 given)"),
            Error::Capacity { requested, capacity } => {
                write!(f, "{requested} timesteps exceed the table capacity of {capacity}")
            }
            Error::InvalidBeta { t, beta } => {
                write!(f, "beta_{t} = {beta} is outside the open interval (0, 1)")
            }
            Error::NonMonotoneSnr { t } => {
                write!(f, "log-SNR does not strictly decrease at t = {t}")
            }
            Error::InvalidParameter { name, reason } => write!(f, "{name}: expected {reason}"),
            Error::TimestepOutOfRange { t, steps } => {
                write!(f, "timestep {t} is outside 1..={steps}")
            }
            Error::TooManySteps { steps, timesteps } => {
                write!(f, "{steps} sampling steps exceed the {timesteps} timesteps of the schedule")
            }
            Error::DimensionMismatch { expected, got } => {
                write!(f, "buffer length {got} does not fit: expected {expected}")
            }
            Error::Unconditional => write!(f, "the model has no classes (it is unconditional)"),
            Error::ClassOutOfRange { class, classes } => {
                write!(f, "class {class} is outside 0..{classes}")
            }
            Error::UnknownName { what } => write!(f, "unknown {what} name"),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::NonFinite { what } => write!(f, "{what} produced a non-finite value (extreme or damaged input)"),
        }
    }
}

impl core::error::Error for Error {}

/// Result with the core's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// Checks that `got == expected`.
pub(crate) fn check_len(expected: usize, got: usize) -> Result<()> {
    if expected == got { Ok(()) } else { Err(Error::DimensionMismatch { expected, got }) }
}

/// An error from a run that calls a model: the core's own, or the model's.
#[derive(Debug, Clone, PartialEq)]
pub enum RunError<E> {
    /// Bad input to the core.
    Core(Error),
    /// The denoiser (or classifier) failed.
    Model(E),
}

impl<E> From<Error> for RunError<E> {
    fn from(e: Error) -> Self {
        RunError::Core(e)
    }
}

impl<E: fmt::Display> fmt::Display for RunError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Core(e) => e.fmt(f),
            RunError::Model(e) => write!(f, "model: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for RunError<E> {}
