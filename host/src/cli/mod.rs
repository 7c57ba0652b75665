//! The command line: parsing (clap) is kept apart from the validated options each command uses.
//! One module per subcommand; `main` maps errors to an exit code and a one-line message.

mod data;
mod demo;
mod eval;
mod export;
mod merge;
pub(crate) mod model_arg;
mod sample;
mod schedule;
pub(crate) mod train;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::HostSchedule;
use crate::error::{Result, flag, input};
use crate::kinds::ScheduleKind;

/// Diffusion models as latent-variable models: schedules, likelihood bounds, samplers.
#[derive(Debug, Parser)]
#[command(name = "elbo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Errors only on stderr: no progress, no summaries (what a command writes to stdout or to
    /// its files is unchanged).
    #[arg(long, short, global = true)]
    quiet: bool,
    /// More on stderr: ONNX Runtime's own log, and every logged training loss as a line.
    #[arg(long, short, global = true, conflicts_with = "quiet")]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a sample of a data set (.npy or .csv).
    Data(data::DataArgs),
    /// Train a denoiser.
    Train(train::TrainCliArgs),
    /// Train a noise-conditional classifier on labelled data (for `sample --classifier`).
    TrainClassifier(train::TrainCliArgs),
    /// Draw samples from a trained model or the exact denoiser of a mixture.
    Sample(sample::SampleArgs),
    /// Evaluate the likelihood bound (nats, bits/dim) and sample quality.
    Eval(eval::EvalArgs),
    /// Merge the parts of a sharded `eval --shard I/N --json` into the whole run's JSON (exact).
    Merge(merge::MergeArgs),
    /// Export a trained model: FILE.onnx (ONNX), FILE.bin (a weight blob for no_std devices) or
    /// FILE.safetensors (the EMA weights alone).
    Export(export::ExportArgs),
    /// Run an experiment of the seeds and write a report (likelihood, rb-variance, invariance,
    /// weighting, parameterization, vdm, guidance, vae, samplers).
    Experiment(crate::experiments::ExperimentArgs),
    /// Print the tables of a noise schedule.
    Schedule(schedule::ScheduleArgs),
    /// The main job on built-in data: sample, evaluate the bound, write a report.
    Demo(demo::DemoArgs),
}

pub use export::blob as export_blob;

/// Runs the tool; returns the exit code (0 success, 2 bad input, 1 internal error).
pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
    let parsed = Cli::command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (mut cli, matches) = match parsed {
        Ok(p) => p,
        Err(e) if e.use_stderr() => {
            // one line, as every bad input gets (clap adds usage and a hint below it)
            let text = e.render().to_string();
            let _ = writeln!(std::io::stderr(), "{}", text.lines().next().unwrap_or("error: bad arguments"));
            return ExitCode::from(2);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let (Command::Train(a) | Command::TrainClassifier(a), Some((_, sub))) = (&mut cli.command, matches.subcommand())
    {
        a.explicit = sub
            .ids()
            .filter(|id| sub.try_get_raw(id.as_str()).is_ok())
            .filter(|id| sub.value_source(id.as_str()) == Some(ValueSource::CommandLine))
            .map(|id| id.to_string())
            .collect();
    }
    crate::progress::set_verbosity(match (cli.quiet, cli.verbose) {
        (true, _) => crate::progress::Verbosity::Quiet,
        (_, true) => crate::progress::Verbosity::Verbose,
        _ => crate::progress::Verbosity::Normal,
    });
    let result = match cli.command {
        Command::Data(a) => data::run(&a),
        Command::Train(a) => train::run(&a),
        Command::TrainClassifier(mut a) => {
            a.classifier = true;
            train::run(&a)
        }
        Command::Sample(a) => sample::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Merge(a) => merge::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Experiment(a) => crate::experiments::run(&a),
        Command::Schedule(a) => schedule::run(&a),
        Command::Demo(a) => demo::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // one line, with the cause of an internal error (e.g. "No space left on device")
            let msg = format!("{e:#}").replace('\n', " ");
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Checks that a flag's value is finite and within `[lo, hi]` (`what` says what is expected).
pub(crate) fn check_range(flag: &str, v: f64, lo: f64, hi: f64, what: &str) -> Result<()> {
    if v.is_finite() && v >= lo && v <= hi { Ok(()) } else { Err(input(format!("{flag}: expected {what}, found {v}"))) }
}

/// Writes one line to standard output. A reader that went away (`elbo schedule --json | head`)
/// is not an error: the rest of the output is simply not wanted.
pub(crate) fn print_line(line: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(crate::error::Error::Internal(anyhow::anyhow!("writing to standard output: {e}")))
        }
        _ => Ok(()),
    }
}

/// Schedule options shared by `train`, `eval`, `schedule` and `sample`.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ScheduleOpts {
    /// The noise schedule; continuous time: vdm (linear gamma), cosine-logsnr, learned
    /// (trained jointly; `elbo train` only).
    #[arg(long, value_enum, default_value_t = ScheduleOpts::DEFAULT.schedule)]
    pub schedule: ScheduleKind,
    /// Number of timesteps T.
    #[arg(long, default_value_t = ScheduleOpts::DEFAULT.timesteps)]
    pub timesteps: usize,
    /// First beta of the linear-type schedules.
    #[arg(long, default_value_t = ScheduleOpts::DEFAULT.beta_start)]
    pub beta_start: f64,
    /// Last beta of the linear-type schedules.
    #[arg(long, default_value_t = ScheduleOpts::DEFAULT.beta_end)]
    pub beta_end: f64,
    /// Rescale to zero terminal SNR (Lin et al. 2024).
    #[arg(long)]
    pub zero_terminal_snr: bool,
    /// Continuous-time schedules: log-SNR at t = 0 (VDM: 13.3).
    #[arg(long, default_value_t = ScheduleOpts::DEFAULT.log_snr_max, allow_negative_numbers = true)]
    pub log_snr_max: f64,
    /// Continuous-time schedules: log-SNR at t = 1 (VDM: -5).
    #[arg(long, default_value_t = ScheduleOpts::DEFAULT.log_snr_min, allow_negative_numbers = true)]
    pub log_snr_min: f64,
}

impl ScheduleOpts {
    /// The defaults (diffusers' linear schedule, T = 1000; VDM's log-SNR end points).
    pub const DEFAULT: ScheduleOpts = ScheduleOpts {
        schedule: ScheduleKind::Linear,
        timesteps: 1000,
        beta_start: 1e-4,
        beta_end: 0.02,
        zero_terminal_snr: false,
        log_snr_max: 13.3,
        log_snr_min: -5.0,
    };

    /// The continuous-time schedule of `--schedule vdm|cosine-logsnr|learned` (`params`: the
    /// learned one's).
    pub fn continuous(&self, params: &[f32]) -> Result<crate::continuous::Continuous> {
        if !(self.log_snr_max.is_finite() && self.log_snr_min.is_finite() && self.log_snr_min < self.log_snr_max) {
            return Err(input("--log-snr-min/--log-snr-max: expected finite values with min < max"));
        }
        crate::continuous::Continuous::new(self.schedule, self.log_snr_max, self.log_snr_min, params)
    }

    /// The validated schedule (continuous-time ones discretised to `--timesteps` steps).
    pub fn build(&self) -> Result<Box<HostSchedule>> {
        if self.schedule.is_continuous() {
            if self.schedule == ScheduleKind::Learned {
                return Err(input("--schedule learned: only a trained model has one (elbo train --schedule learned)"));
            }
            return crate::model::discretise(&self.continuous(&[])?, self.timesteps);
        }
        if !(self.beta_start.is_finite() && self.beta_end.is_finite() && self.beta_start <= self.beta_end) {
            return Err(input(format!(
                "--beta-start/--beta-end: expected finite values with beta_start <= beta_end, found {} and {}",
                self.beta_start, self.beta_end
            )));
        }
        let kind = self
            .schedule
            .beta_schedule(self.beta_start, self.beta_end)
            .ok_or_else(|| input(format!("--schedule {}: not a discrete schedule", self.schedule)))?;
        let s = HostSchedule::new(&kind, self.timesteps, self.zero_terminal_snr).map_err(|e| match e {
            elbo_core::Error::ZeroSteps | elbo_core::Error::Capacity { .. } => flag("--timesteps", e),
            _ => flag("--schedule/--beta-start/--beta-end", e),
        })?;
        Ok(Box::new(s))
    }
}
