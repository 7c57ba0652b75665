//! `elbo schedule`: the tables of a schedule, as JSON (diffusers' names, arrays indexed
//! t = 1..T) or a short human summary.

use clap::Args;
use elbo_core::{NoiseSchedule, Step};
use serde::Serialize;

use super::ScheduleOpts;
use crate::error::Result;

/// Arguments of `elbo schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    schedule: ScheduleOpts,
    /// One JSON object on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Tables {
    schedule: String,
    timesteps: usize,
    betas: Vec<f32>,
    alphas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
    one_minus_alphas_cumprod: Vec<f32>,
    snr: Vec<f32>,
    log_snr: Vec<f32>,
    posterior_variance: Vec<f32>,
    posterior_log_variance_clipped: Vec<f32>,
    posterior_mean_coef_x0: Vec<f32>,
    posterior_mean_coef_xt: Vec<f32>,
}

pub fn run(args: &ScheduleArgs) -> Result<()> {
    let s = args.schedule.build()?;
    let col = |f: fn(&Step) -> f32| s.iter().map(f).collect::<Vec<f32>>();
    if args.json {
        let tables = Tables {
            schedule: args.schedule.schedule.to_string(),
            timesteps: s.steps(),
            betas: col(|s| s.beta),
            alphas: col(|s| s.alpha),
            alphas_cumprod: col(|s| s.cur.abar),
            one_minus_alphas_cumprod: col(|s| s.cur.one_minus_abar),
            snr: col(|s| s.snr),
            log_snr: col(|s| s.log_snr),
            posterior_variance: col(|s| s.posterior_variance),
            posterior_log_variance_clipped: col(|s| s.posterior_log_variance_clipped),
            posterior_mean_coef_x0: col(|s| s.posterior_mean_coef_x0),
            posterior_mean_coef_xt: col(|s| s.posterior_mean_coef_xt),
        };
        super::print_line(serde_json::to_string(&tables).map_err(anyhow::Error::from)?)?;
        return Ok(());
    }
    eprintln!("{} schedule, T = {}", args.schedule.schedule, s.steps());
    eprintln!("{:>6} {:>12} {:>12} {:>12} {:>10} {:>12}", "t", "beta", "abar", "1-abar", "log-SNR", "btilde");
    let t_max = s.steps();
    let mut shown: Vec<usize> = [1, 2, 10, 100, t_max / 4, t_max / 2, 3 * t_max / 4, t_max - 1, t_max]
        .into_iter()
        .filter(|&t| t >= 1 && t <= t_max)
        .collect();
    shown.sort_unstable();
    shown.dedup();
    for t in shown {
        let st = s.step(t).map_err(|e| crate::error::flag("--timesteps", e))?;
        eprintln!(
            "{:>6} {:>12.5e} {:>12.5e} {:>12.5e} {:>10.4} {:>12.5e}",
            t, st.beta, st.cur.abar, st.cur.one_minus_abar, st.log_snr, st.posterior_variance
        );
    }
    Ok(())
}
