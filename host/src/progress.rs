//! What a user sees while work runs: the verbosity every subcommand shares (`--quiet`,
//! `--verbose`), progress of long work (a bar on a terminal; a one-line note at coarse intervals
//! when stderr is a file or a pipe), and rates and times formatted for people.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How much goes to stderr besides errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only (and what a command was asked to print).
    Quiet = 0,
    /// Progress and one-line summaries.
    Normal = 1,
    /// Also ONNX Runtime's own log and every logged training loss.
    Verbose = 2,
}

static LEVEL: AtomicU8 = AtomicU8::new(Verbosity::Normal as u8);

/// Sets the verbosity of this process (the command line's `--quiet` / `--verbose`).
pub fn set_verbosity(v: Verbosity) {
    LEVEL.store(v as u8, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    LEVEL.load(Ordering::Relaxed) == Verbosity::Quiet as u8
}

/// Whether `--verbose` was given.
pub fn verbose() -> bool {
    LEVEL.load(Ordering::Relaxed) == Verbosity::Verbose as u8
}

/// `eprintln!` unless `--quiet`: the informational lines of every subcommand.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::progress::quiet() {
            eprintln!($($arg)*);
        }
    };
}

/// A count per second for people: `1,234/s`, `56.7/s`, or `8.2 s each` below one a second.
pub fn human_rate(per_sec: f64, unit: &str) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        return String::new();
    }
    if per_sec >= 100.0 {
        format!("{} {unit}/s", thousands(per_sec.round() as u64))
    } else if per_sec >= 1.0 {
        format!("{per_sec:.1} {unit}/s")
    } else {
        format!("{:.1} s per {}", 1.0 / per_sec, unit.trim_end_matches('s'))
    }
}

/// A duration for people: `45 s`, `3 min 05 s`, `2 h 07 min`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 10 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The interval of the one-line notes when stderr is not a terminal: 30 seconds, or
/// `ELBO_PROGRESS_SECS` (for logs that want them more or less often).
fn note_every() -> Duration {
    static EVERY: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *EVERY.get_or_init(|| {
        let secs = std::env::var("ELBO_PROGRESS_SECS").ok().and_then(|v| v.parse::<f64>().ok());
        Duration::from_secs_f64(secs.filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(30.0).min(1e9))
    })
}

/// The progress of one piece of work of `total` units: a bar on a terminal, a line every 30
/// seconds otherwise (see [`note_every`]), nothing with `--quiet`.
pub struct Progress {
    bar: ProgressBar,
    label: String,
    unit: &'static str,
    /// When the last note was written (`None`: notes off, a terminal or `--quiet`).
    notes: Option<Mutex<Instant>>,
    start: Instant,
}

impl Progress {
    /// Progress of `label` over `total` units named `unit` (plural, e.g. "steps").
    pub fn new(label: &str, total: u64, unit: &'static str) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if quiet() || !terminal {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(total)
        };
        let template = format!("{{prefix}} {{bar:30}} {{pos}}/{{len}} {unit} {{msg}} {{rate}} eta {{eta_human}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(
                style
                    .with_key("rate", move |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}", human_rate(s.per_sec(), unit));
                    })
                    .with_key("eta_human", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}", human_duration(s.eta()));
                    }),
            );
        }
        bar.set_prefix(label.to_string());
        let notes = (!quiet() && !terminal).then(|| Mutex::new(Instant::now()));
        Progress { bar, label: label.to_string(), unit, notes, start: Instant::now() }
    }

    /// Starts from `pos` units already done (a resumed run).
    pub fn with_position(self, pos: u64) -> Self {
        self.bar.set_position(pos);
        self.bar.reset_eta();
        self
    }

    /// A short status after the counts (e.g. the loss).
    pub fn set_message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// Moves to `pos` units done.
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
        self.maybe_note();
    }

    /// Adds `n` units done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.maybe_note();
    }

    fn maybe_note(&self) {
        let Some(last) = &self.notes else { return };
        let Ok(mut last) = last.lock() else { return };
        if last.elapsed() < note_every() {
            return;
        }
        *last = Instant::now();
        let (pos, total) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let pct = if total > 0 { 100.0 * pos as f64 / total as f64 } else { 0.0 };
        let msg = self.bar.message();
        eprintln!(
            "{}: {}/{} {} ({pct:.0}%){}{}, {} elapsed, about {} left",
            self.label,
            thousands(pos),
            thousands(total),
            self.unit,
            if msg.is_empty() { String::new() } else { format!(", {msg}") },
            match human_rate(self.bar.per_sec(), self.unit) {
                r if r.is_empty() => r,
                r => format!(", {r}"),
            },
            human_duration(self.start.elapsed()),
            human_duration(self.bar.eta()),
        );
    }

    /// Removes the bar (the caller prints its own summary line).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// A denoiser that counts its calls on a [`Progress`] (one unit per call): the progress of a
/// sampler or a bound without a hook in the core.
pub struct Ticking<'p, D> {
    /// The denoiser.
    pub inner: D,
    /// Where its calls are counted.
    pub progress: &'p Progress,
}

impl<D: Denoiser> Denoiser for Ticking<'_, D> {
    type Error = D::Error;

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn prediction(&self) -> elbo_core::Prediction {
        self.inner.prediction()
    }

    fn classes(&self) -> usize {
        self.inner.classes()
    }

    fn predict(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
    ) -> core::result::Result<(), Self::Error> {
        let r = self.inner.predict(x, level, cond, out);
        self.progress.inc(1);
        r
    }

    fn predict_pair(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        uncond: &mut [f32],
    ) -> core::result::Result<(), Self::Error> {
        let r = self.inner.predict_pair(x, level, cond, out, uncond);
        self.progress.inc(1);
        r
    }

    fn has_variance(&self) -> bool {
        self.inner.has_variance()
    }

    fn predict_with_variance(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        variance: &mut [f32],
    ) -> core::result::Result<(), Self::Error> {
        let r = self.inner.predict_with_variance(x, level, cond, out, variance);
        self.progress.inc(1);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_durations_read_as_people_write_them() {
        assert_eq!(human_rate(147.7943, "steps"), "148 steps/s");
        assert_eq!(human_rate(12_345.6, "examples"), "12,346 examples/s");
        assert_eq!(human_rate(5.25, "steps"), "5.2 steps/s");
        assert_eq!(human_rate(0.25, "steps"), "4.0 s per step");
        assert_eq!(human_duration(Duration::from_millis(640)), "0.6 s");
        assert_eq!(human_duration(Duration::from_secs(45)), "45 s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(human_duration(Duration::from_secs(7620)), "2 h 07 min");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }
}
