//! diffusers' scheduler config (`scheduler_config.json`, or elbo's `elbo.schedule` metadata),
//! read with diffusers' meanings and defaults (`DDIMScheduler`, `DDPMScheduler`):
//!
//! | key | meaning in elbo | diffusers' default |
//! |---|---|---|
//! | `num_train_timesteps`, `beta_start`, `beta_end`, `beta_schedule`, `trained_betas`, `rescale_betas_zero_snr` | the schedule | 1000, 1e-4, 0.02, linear, none, false |
//! | `prediction_type` | `--prediction` (`epsilon`, `sample`, `v_prediction`) | epsilon |
//! | `_class_name` | `--sampler` (`DDIMScheduler`: ddim, `DDPMScheduler`: ddpm) | |
//! | `timestep_spacing`, `steps_offset` | `--spacing`, the offset of `leading` | leading, 0 |
//! | `set_alpha_to_one` | DDIM's last step goes to `abar = 1` (else to `abar_1`) | true |
//! | `clip_sample`, `clip_sample_range` | `--clip R` | true, 1.0 |
//! | `thresholding`, `dynamic_thresholding_ratio`, `sample_max_value` | `--clip dynamic:RATIO:MAX` (Imagen's dynamic thresholding; before `clip_sample`) | false, 0.995, 1.0 |
//! | `variance_type` | DDPM's `--variance` (`fixed_small[_log]`: small, `fixed_large[_log]`: large, `learned_range`: learned) | fixed_small |
//! | `_class_name` `DPMSolverMultistepScheduler` with `solver_order` | `--sampler dpmpp2m` (2) or `dpmpp3m` (3) | 2 |
//! | `_class_name` `UniPCMultistepScheduler`, `DEISMultistepScheduler`, `EulerDiscreteScheduler`, `HeunDiscreteScheduler` | `--sampler unipc`, `deis`, `euler`, `heun` | |
//! | `solver_order` (UniPC, DEIS) | their order | 2 |
//! | `solver_type` | DPM-Solver++'s midpoint or heun; UniPC's bh1 or bh2; DEIS' logrho | midpoint, bh2, logrho |
//! | `lower_order_final`, `euler_at_final`, `final_sigmas_type` | the solvers' last steps | true, false, zero |
//! | `use_karras_sigmas`, `sigma_min`, `sigma_max` | `--karras` (Karras' sigmas; the range of Euler's and UniPC's ramp) | false, none |
//! | `algorithm_type`, `lambda_min_clipped`, `predict_x0`, `disable_corrector`, `interpolation_type`, `timestep_type`, the other sigma schedules | only `dpmsolver++` (DEIS: `deis`), `-inf`, true, `[]`, `linear`, `discrete` and false are run; others are refused | |
//!
//! The defaults are the named class's: the few-step solvers space their timesteps `linspace`
//! and have no `clip_sample` (Heun's is false). Python's `json` writes `-Infinity` (diffusers' default
//! `lambda_min_clipped`), which is read as that number.
//!
//! A flag overrides the config. A key of the wrong type is an error; a key elbo does not use is
//! named once in a note. elbo's own `elbo.schedule` metadata from before these keys were written
//! leaves what it does not say to elbo's defaults (trailing spacing, no clipping), as the model
//! was exported to be run.

use elbo_core::Prediction;
use elbo_core::sampler::Clip;
use serde_json::Value;

use crate::checkpoint::ScheduleConfig;
use crate::error::{Result, input};
use crate::kinds::{SamplerKind, ScheduleKind, SpacingKind, VarianceChoice};
use crate::sampling::SolverSettings;
use elbo_core::sampler::{SolverType, UniPcVariant};

/// Whose defaults fill the keys a config leaves out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A diffusers `scheduler_config.json`: diffusers' defaults.
    Diffusers,
    /// elbo's `elbo.schedule` metadata: elbo's (it writes every key since this version).
    Elbo,
}

/// The sampling settings a scheduler config gives (`None`: it leaves them to the flags and
/// elbo's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerDefaults {
    /// The sampler its `_class_name` names.
    pub sampler: Option<SamplerKind>,
    /// Its `prediction_type`, where it gives one.
    pub prediction: Option<Prediction>,
    /// Its `timestep_spacing`.
    pub spacing: Option<SpacingKind>,
    /// Its `steps_offset` (of the `leading` spacing).
    pub steps_offset: usize,
    /// Its `set_alpha_to_one` (DDIM's last step).
    pub set_alpha_to_one: bool,
    /// Its `thresholding` or `clip_sample`.
    pub clip: Option<Clip>,
    /// Its `variance_type` (DDPM's reverse variance).
    pub variance: Option<VarianceChoice>,
    /// DPM-Solver++'s settings (its defaults where the config is of another class).
    pub solver: SolverSettings,
}

impl Default for SamplerDefaults {
    /// Nothing said: elbo's defaults apply.
    fn default() -> Self {
        SamplerDefaults {
            sampler: None,
            prediction: None,
            spacing: None,
            steps_offset: 0,
            set_alpha_to_one: true,
            clip: None,
            variance: None,
            solver: SolverSettings::default(),
        }
    }
}

/// A scheduler config: the schedule and the sampling settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// The noise schedule.
    pub schedule: ScheduleConfig,
    /// The sampling settings.
    pub sampling: SamplerDefaults,
}

/// The keys elbo reads; every other one is named in a note.
const KNOWN: [&str; 41] = [
    "_class_name",
    "_diffusers_version",
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "rescale_betas_zero_snr",
    "prediction_type",
    "timestep_spacing",
    "steps_offset",
    "set_alpha_to_one",
    "clip_sample",
    "clip_sample_range",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
    "variance_type",
    "timestep_type",
    "solver_order",
    "algorithm_type",
    "solver_type",
    "lower_order_final",
    "euler_at_final",
    "final_sigmas_type",
    "lambda_min_clipped",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "use_flow_sigmas",
    "flow_shift",
    "use_dynamic_shifting",
    "time_shift_type",
    "predict_x0",
    "disable_corrector",
    "solver_p",
    "sigma_min",
    "sigma_max",
    "interpolation_type",
    "shift_terminal",
];

/// diffusers' `prediction_type` names.
pub fn prediction_from_diffusers(name: &str) -> Option<Prediction> {
    match name {
        "epsilon" => Some(Prediction::Eps),
        "sample" => Some(Prediction::X0),
        "v_prediction" => Some(Prediction::V),
        _ => None,
    }
}

/// Reads a scheduler config `text`; `what` names it in messages (`--scheduler-config FILE` or
/// the metadata). Returns the keys elbo does not use as well, for one note.
/// Python's `json` writes the non-finite floats as bare `Infinity`, `-Infinity` and `NaN`,
/// which JSON does not have: they become the strings "inf", "-inf" and "nan" (outside strings).
fn python_floats(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !in_string {
            let token = [("-Infinity", "\"-inf\""), ("Infinity", "\"inf\""), ("NaN", "\"nan\"")]
                .into_iter()
                .find(|(t, _)| rest.starts_with(t));
            if let Some((t, r)) = token {
                out.push_str(r);
                rest = &rest[t.len()..];
                continue;
            }
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

pub fn parse(text: &str, what: &str, origin: Origin) -> Result<(SchedulerConfig, Vec<String>)> {
    let text = python_floats(text);
    let v: Value = serde_json::from_str(&text).map_err(|e| input(format!("{what}: not JSON ({e})")))?;
    let obj = v.as_object().ok_or_else(|| input(format!("{what}: expected a JSON object")))?;
    // a present key of the wrong type is an error, never a default
    let typed = |k: &str, want: &str, ok: fn(&Value) -> bool| -> Result<Option<&Value>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) if ok(x) => Ok(Some(x)),
            Some(x) => Err(input(format!("{what}: {k} should be {want}, found {x}"))),
        }
    };
    let num = |k: &str, d: f64| -> Result<f64> {
        let x = typed(k, "a finite number", |x| x.as_f64().is_some_and(f64::is_finite))?;
        Ok(x.and_then(Value::as_f64).unwrap_or(d))
    };
    let boolean = |k: &str| -> Result<Option<bool>> {
        Ok(typed(k, "true or false", Value::is_boolean)?.and_then(Value::as_bool))
    };
    let string =
        |k: &str| -> Result<Option<&str>> { Ok(typed(k, "a string", Value::is_string)?.and_then(Value::as_str)) };
    let unknown = |k: &str, found: &str, expected: &str| {
        input(format!("{what}: {k} '{found}' is not one elbo knows ({expected})"))
    };

    // the schedule
    let betas_ok = |x: &Value| {
        x.as_array().is_some_and(|a| {
            !a.is_empty() && a.iter().all(|b| b.as_f64().is_some_and(|b| b > 0.0 && b < 1.0 && b.is_finite()))
        })
    };
    let trained_betas: Option<Vec<f64>> = typed("trained_betas", "a list of betas in (0, 1)", betas_ok)?
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_f64).collect());
    let timesteps = typed("num_train_timesteps", "a positive whole number", |x| x.as_u64().is_some_and(|t| t > 0))?
        .and_then(Value::as_u64)
        .or(trained_betas.as_ref().map(|b| b.len() as u64))
        .unwrap_or(1000);
    if let Some(b) = &trained_betas
        && b.len() as u64 != timesteps
    {
        return Err(input(format!("{what}: {} trained_betas for num_train_timesteps {timesteps}", b.len())));
    }
    if timesteps > crate::MAX_STEPS as u64 {
        return Err(input(format!("{what}: num_train_timesteps {timesteps} is above {}", crate::MAX_STEPS)));
    }
    let schedule = ScheduleConfig {
        name: match string("beta_schedule")? {
            None => ScheduleKind::Linear,
            Some(n) => ScheduleKind::from_name(n)
                .filter(|k| !k.is_continuous())
                .ok_or_else(|| unknown("beta_schedule", n, "linear, scaled_linear, squaredcos_cap_v2, ..."))?,
        },
        timesteps: timesteps as usize,
        beta_start: num("beta_start", 1e-4)?,
        beta_end: num("beta_end", 0.02)?,
        zero_terminal_snr: boolean("rescale_betas_zero_snr")?.unwrap_or(false),
        log_snr_range: None,
        trained_betas,
    };

    // sampling
    let diffusers = origin == Origin::Diffusers;
    let class = string("_class_name")?;
    // the classes whose defaults differ from DDIM's and DDPM's: linspace, no clip_sample
    let solver_class = matches!(
        class,
        Some(
            "DPMSolverMultistepScheduler"
                | "UniPCMultistepScheduler"
                | "DEISMultistepScheduler"
                | "EulerDiscreteScheduler"
                | "HeunDiscreteScheduler"
        )
    );
    let flag = |k: &str, d: bool| -> Result<bool> { Ok(boolean(k)?.unwrap_or(d)) };
    let order = typed("solver_order", "1, 2 or 3", |x| x.as_u64().is_some_and(|o| (1..=3).contains(&o)))?
        .and_then(Value::as_u64)
        .unwrap_or(2) as usize;
    let sampler = match class {
        Some("DDIMScheduler") => Some(SamplerKind::Ddim),
        Some("DDPMScheduler") => Some(SamplerKind::Ddpm),
        Some("DPMSolverMultistepScheduler") if order == 3 => Some(SamplerKind::Dpmpp3m),
        Some("DPMSolverMultistepScheduler") if order == 2 => Some(SamplerKind::Dpmpp2m),
        Some("DPMSolverMultistepScheduler") => {
            return Err(input(format!("{what}: solver_order 1 is DDIM's update: run --sampler ddim")));
        }
        Some("UniPCMultistepScheduler") => Some(SamplerKind::Unipc),
        Some("DEISMultistepScheduler") => Some(SamplerKind::Deis),
        Some("EulerDiscreteScheduler") => Some(SamplerKind::Euler),
        Some("HeunDiscreteScheduler") => Some(SamplerKind::Heun),
        _ => None,
    };
    // what elbo does not run is refused, never silently replaced
    match (class, string("algorithm_type")?) {
        (_, None)
        | (Some("DPMSolverMultistepScheduler"), Some("dpmsolver++"))
        | (Some("DEISMultistepScheduler"), Some("deis")) => {}
        (_, Some(a)) => return Err(unknown("algorithm_type", a, "elbo runs dpmsolver++ (DPM-Solver) and deis (DEIS)")),
    }
    for k in ["use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "use_dynamic_shifting"]
    {
        if flag(k, false)? {
            return Err(input(format!("{what}: {k} true is not run by elbo yet")));
        }
    }
    if !flag("predict_x0", true)? {
        return Err(input(format!("{what}: predict_x0 false is not run by elbo (UniPC runs on data predictions)")));
    }
    match obj.get("disable_corrector") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.is_empty() => {}
        Some(x) => return Err(input(format!("{what}: disable_corrector {x} is not run by elbo (only [])"))),
    }
    for (k, only) in [
        ("solver_p", None),
        ("shift_terminal", None),
        ("interpolation_type", Some("linear")),
        ("timestep_type", Some("discrete")),
    ] {
        match (obj.get(k), only) {
            (None | Some(Value::Null), _) => {}
            (Some(Value::String(v)), Some(o)) if v == o => {}
            (Some(x), _) => {
                return Err(input(format!("{what}: {k} {x} is not run by elbo (only {})", only.unwrap_or("null"))));
            }
        }
    }
    match obj.get("lambda_min_clipped") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "-inf" => {}
        Some(x) => return Err(input(format!("{what}: lambda_min_clipped {x} is not run by elbo (only -inf)"))),
    }
    let sigma = |k: &str| -> Result<Option<f64>> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => match x.as_f64() {
                Some(v) if v > 0.0 && v.is_finite() => Ok(Some(v)),
                _ => Err(input(format!("{what}: {k} should be a number > 0 or null, found {x}"))),
            },
        }
    };
    let unipc_class = class == Some("UniPCMultistepScheduler");
    let solver = SolverSettings {
        order,
        solver_type: match string("solver_type")? {
            None | Some("midpoint") | Some("bh1" | "bh2" | "logrho") => SolverType::Midpoint,
            Some("heun") => SolverType::Heun,
            Some(s) => {
                return Err(unknown(
                    "solver_type",
                    s,
                    "midpoint or heun (DPM-Solver), bh1 or bh2 (UniPC), logrho (DEIS)",
                ));
            }
        },
        unipc_variant: match string("solver_type")? {
            Some("bh1") => UniPcVariant::Bh1,
            Some("midpoint" | "heun") if unipc_class => {
                return Err(unknown("solver_type", "midpoint/heun", "bh1 or bh2 for UniPCMultistepScheduler"));
            }
            _ => UniPcVariant::Bh2,
        },
        corrector: true,
        lower_order_final: flag("lower_order_final", true)?,
        euler_at_final: flag("euler_at_final", false)?,
        final_sigma_zero: match string("final_sigmas_type")? {
            None | Some("zero") => true,
            Some("sigma_min") => false,
            Some(s) => return Err(unknown("final_sigmas_type", s, "zero or sigma_min")),
        },
        karras: flag("use_karras_sigmas", false)?,
        sigma_range: (sigma("sigma_min")?, sigma("sigma_max")?),
        cosine: schedule.name == ScheduleKind::SquaredcosCapV2,
    };
    let prediction = match string("prediction_type")? {
        None => None,
        Some(p) => Some(
            prediction_from_diffusers(p)
                .ok_or_else(|| unknown("prediction_type", p, "epsilon, sample or v_prediction"))?,
        ),
    };
    let spacing = match string("timestep_spacing")? {
        None if solver_class => diffusers.then_some(SpacingKind::Linspace),
        None => diffusers.then_some(SpacingKind::Leading),
        Some("leading") => Some(SpacingKind::Leading),
        Some("trailing") => Some(SpacingKind::Trailing),
        Some("linspace") => Some(SpacingKind::Linspace),
        Some(s) => return Err(unknown("timestep_spacing", s, "leading, trailing or linspace")),
    };
    let steps_offset =
        typed("steps_offset", "a whole number", |x| x.as_u64().is_some())?.and_then(Value::as_u64).unwrap_or(0);
    if steps_offset >= timesteps {
        return Err(input(format!("{what}: steps_offset {steps_offset} is not below num_train_timesteps {timesteps}")));
    }
    let set_alpha_to_one = boolean("set_alpha_to_one")?.unwrap_or(true);
    let clip = if boolean("thresholding")? == Some(true) {
        let ratio = num("dynamic_thresholding_ratio", 0.995)?;
        let max = num("sample_max_value", 1.0)?;
        Some(
            Clip::Dynamic { ratio: ratio as f32, max: max as f32 }
                .check()
                .map_err(|_| input(format!("{what}: thresholding needs dynamic_thresholding_ratio in [0, 1] and sample_max_value >= 1, found {ratio} and {max}")))?,
        )
    } else {
        // (the few-step solvers have no clip_sample, or Heun's false by default)
        match boolean("clip_sample")?.or(diffusers.then_some(!solver_class)) {
            None => None,
            Some(false) => Some(Clip::Off),
            Some(true) => {
                let r = num("clip_sample_range", 1.0)?;
                Some(Clip::Range(r as f32).check().map_err(|_| {
                    input(format!("{what}: clip_sample_range should be a finite number > 0, found {r}"))
                })?)
            }
        }
    };
    let variance = match string("variance_type")? {
        None => diffusers.then_some(VarianceChoice::Small),
        Some("fixed_small" | "fixed_small_log") => Some(VarianceChoice::Small),
        Some("fixed_large" | "fixed_large_log") => Some(VarianceChoice::Large),
        Some("learned_range") => Some(VarianceChoice::Learned),
        Some(v) => {
            return Err(unknown(
                "variance_type",
                v,
                "fixed_small, fixed_small_log, fixed_large, fixed_large_log or learned_range",
            ));
        }
    };
    let ignored = obj.keys().filter(|k| !KNOWN.contains(&k.as_str())).cloned().collect();
    let sampling = SamplerDefaults {
        sampler,
        prediction,
        spacing,
        steps_offset: steps_offset as usize,
        set_alpha_to_one,
        clip,
        variance,
        solver,
    };
    Ok((SchedulerConfig { schedule, sampling }, ignored))
}

/// Reads a scheduler config and names the keys elbo does not use in one note.
pub fn read(text: &str, what: &str, origin: Origin) -> Result<SchedulerConfig> {
    let (c, ignored) = parse(text, what, origin)?;
    if !ignored.is_empty() {
        crate::note!("note: {what}: elbo does not use {}", ignored.join(", "));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diffusers(text: &str) -> Result<(SchedulerConfig, Vec<String>)> {
        parse(text, "cfg", Origin::Diffusers)
    }

    #[test]
    fn diffusers_defaults_apply_to_a_diffusers_config() {
        let (c, ignored) = diffusers(r#"{"_class_name": "DDIMScheduler"}"#).unwrap();
        assert!(ignored.is_empty());
        let s = c.sampling;
        assert_eq!(s.sampler, Some(SamplerKind::Ddim));
        assert_eq!(s.prediction, None);
        assert_eq!(s.spacing, Some(SpacingKind::Leading));
        assert_eq!(s.clip, Some(Clip::Range(1.0)));
        assert_eq!(s.variance, Some(VarianceChoice::Small));
        assert!(s.set_alpha_to_one);
        assert_eq!((c.schedule.timesteps, c.schedule.name), (1000, ScheduleKind::Linear));
    }

    #[test]
    fn elbo_metadata_leaves_unsaid_keys_to_elbo() {
        let (c, _) = parse(r#"{"num_train_timesteps": 100}"#, "m", Origin::Elbo).unwrap();
        assert_eq!(c.sampling, SamplerDefaults::default());
        assert_eq!(c.schedule.timesteps, 100);
    }

    #[test]
    fn every_key_is_read() {
        let (c, ignored) = diffusers(
            r#"{"_class_name": "DDPMScheduler", "_diffusers_version": "0.42.1", "prediction_type": "v_prediction",
                "timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": false, "clip_sample": true,
                "clip_sample_range": 2.5, "variance_type": "fixed_large", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012, "skip_prk_steps": true, "timestep_scaling": 10.0}"#,
        )
        .unwrap();
        let s = c.sampling;
        assert_eq!(s.sampler, Some(SamplerKind::Ddpm));
        assert_eq!(s.prediction, Some(Prediction::V));
        assert_eq!((s.steps_offset, s.set_alpha_to_one), (1, false));
        assert_eq!(s.clip, Some(Clip::Range(2.5)));
        assert_eq!(s.variance, Some(VarianceChoice::Large));
        assert_eq!(c.schedule.name, ScheduleKind::ScaledLinear);
        assert_eq!((c.schedule.beta_start, c.schedule.beta_end), (0.00085, 0.012));
        assert_eq!(ignored, ["skip_prk_steps", "timestep_scaling"]);
        // thresholding comes before clip_sample, as in diffusers' step()
        let (c, _) =
            diffusers(r#"{"thresholding": true, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 3.0}"#).unwrap();
        assert_eq!(c.sampling.clip, Some(Clip::Dynamic { ratio: 0.9, max: 3.0 }));
        let (c, _) = diffusers(r#"{"clip_sample": false, "timestep_spacing": "trailing"}"#).unwrap();
        assert_eq!((c.sampling.clip, c.sampling.spacing), (Some(Clip::Off), Some(SpacingKind::Trailing)));
    }

    #[test]
    fn a_dpm_solver_config_names_its_sampler_and_settings() {
        // as diffusers saves it: Python's bare -Infinity included
        let (c, ignored) = diffusers(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3, "solver_type": "heun",
                "lower_order_final": false, "final_sigmas_type": "sigma_min", "lambda_min_clipped": -Infinity,
                "algorithm_type": "dpmsolver++", "use_karras_sigmas": false, "time_shift_type": "exponential"}"#,
        )
        .unwrap();
        assert!(ignored.is_empty(), "{ignored:?}");
        let s = c.sampling;
        assert_eq!(s.sampler, Some(SamplerKind::Dpmpp3m));
        // its class's defaults: linspace spacing, no clip_sample
        assert_eq!((s.spacing, s.clip), (Some(SpacingKind::Linspace), Some(Clip::Off)));
        assert_eq!(s.solver.solver_type, SolverType::Heun);
        assert!(!s.solver.lower_order_final && !s.solver.final_sigma_zero && !s.solver.euler_at_final);
        // what elbo does not run is refused
        for text in [
            r#"{"_class_name": "DPMSolverMultistepScheduler", "use_exponential_sigmas": true}"#,
            r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "sde-dpmsolver++"}"#,
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -5.1}"#,
            r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 1}"#,
        ] {
            assert!(diffusers(text).is_err(), "{text}");
        }
        // the other few-step classes, with their settings and Karras sigmas
        let (c, ignored) = diffusers(
            r#"{"_class_name": "UniPCMultistepScheduler", "solver_order": 3, "solver_type": "bh1", "predict_x0": true,
                "disable_corrector": [], "solver_p": null, "use_karras_sigmas": true, "sigma_min": 0.05,
                "sigma_max": null, "beta_schedule": "squaredcos_cap_v2"}"#,
        )
        .unwrap();
        assert!(ignored.is_empty(), "{ignored:?}");
        let s = c.sampling;
        assert_eq!(
            (s.sampler, s.solver.order, s.solver.unipc_variant),
            (Some(SamplerKind::Unipc), 3, UniPcVariant::Bh1)
        );
        assert!(s.solver.karras && s.solver.cosine && s.solver.sigma_range == (Some(0.05), None));
        assert_eq!((s.spacing, s.clip), (Some(SpacingKind::Linspace), Some(Clip::Off)));
        for (class, kind) in [
            ("DEISMultistepScheduler", SamplerKind::Deis),
            ("EulerDiscreteScheduler", SamplerKind::Euler),
            ("HeunDiscreteScheduler", SamplerKind::Heun),
        ] {
            let (c, _) = diffusers(&format!(r#"{{"_class_name": "{class}"}}"#)).unwrap();
            assert_eq!(c.sampling.sampler, Some(kind));
            assert_eq!(c.sampling.spacing, Some(SpacingKind::Linspace));
        }
        for text in [
            r#"{"_class_name": "UniPCMultistepScheduler", "predict_x0": false}"#,
            r#"{"_class_name": "UniPCMultistepScheduler", "solver_type": "midpoint"}"#,
            r#"{"_class_name": "UniPCMultistepScheduler", "disable_corrector": [0]}"#,
            r#"{"_class_name": "EulerDiscreteScheduler", "interpolation_type": "log_linear"}"#,
            r#"{"_class_name": "EulerDiscreteScheduler", "timestep_type": "continuous"}"#,
            r#"{"_class_name": "DEISMultistepScheduler", "algorithm_type": "dpmsolver++"}"#,
        ] {
            assert!(diffusers(text).is_err(), "{text}");
        }
        // a string that merely contains the word is left alone
        let (c, _) = diffusers(r#"{"_diffusers_version": "Infinity NaN", "beta_start": 0.001}"#).unwrap();
        assert_eq!(c.schedule.beta_start, 0.001);
    }

    #[test]
    fn a_wrong_type_or_an_unknown_value_is_an_error_naming_the_key() {
        for (text, key) in [
            (r#"{"clip_sample": "yes"}"#, "clip_sample"),
            (r#"{"steps_offset": -1}"#, "steps_offset"),
            (r#"{"steps_offset": 1000}"#, "steps_offset"),
            (r#"{"prediction_type": "eps"}"#, "prediction_type"),
            (r#"{"timestep_spacing": "uniform"}"#, "timestep_spacing"),
            (r#"{"variance_type": "learned"}"#, "variance_type"),
            (r#"{"clip_sample_range": 0}"#, "clip_sample_range"),
            (r#"{"thresholding": true, "sample_max_value": 0.5}"#, "thresholding"),
            (r#"{"beta_schedule": "karras"}"#, "beta_schedule"),
        ] {
            let e = diffusers(text).unwrap_err().to_string();
            assert!(e.starts_with("cfg: ") && e.contains(key), "{text}: {e}");
        }
    }
}
