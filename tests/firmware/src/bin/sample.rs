//! The smallest useful device program: sampling of two-moons points from the shipped MLP
//! (`models/two-moons/model.bin`, width 64), with weights and the schedule table read in place
//! from flash. It reports its RAM: static data plus the stack's high-water mark (the stack is
//! painted before sampling and scanned after).
//!
//! Build-time settings (environment variables of the build):
//! - `ELBO_SAMPLER`: `ddpm` (T = 1000 ancestral steps, the default), `ddim50` (DDIM, eta 0, 50
//!   trailing steps), `dpmpp2m10` (DPM-Solver++ 2M, 10 steps), `unipc10` (UniPC bh2, 10 steps)
//!   or `none` (the set-up alone: the baseline of an instruction count);
//! - `ELBO_N`: the points (16 by default, at most 1024);
//! - `ELBO_COUNT_STEPS=k`: only the first k DDPM steps (any sampler: the whole run) for one point,
//!   no painting and no printing: `measure.sh` counts executed instructions of such builds.

#![no_std]
#![no_main]

use core::fmt::Write;

use elbo_core::NoiseSchedule;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::elbo::ReverseVariance;
use elbo_core::mlp::ModelBlob;
use elbo_core::rng::{Counter, Noise, domain};
use elbo_core::sampler::{
    Clip, Ddim, DpmSolverPP, Sigma, SigmaFamily, Sigmas, Spacing, UniPc, ddpm_sigma, ddpm_update,
};
use elbo_core::schedule::stride;

#[cfg(target_arch = "arm")]
use cortex_m_rt::entry;
#[cfg(target_arch = "riscv32")]
use riscv_rt::entry;

const PAINT: u32 = 0xA5A5_A5A5;

unsafe extern "C" {
    static mut __sdata: u32;
    static mut __edata: u32;
    static mut __sbss: u32;
    static mut __ebss: u32;
    static mut _stack_start: u32;
}

/// Fills the free stack (from the end of .bss to a little below the current frame) with PAINT.
#[inline(never)]
fn paint() {
    // The address of a local is (close to) the stack pointer.
    let marker = 0u32;
    let sp = core::ptr::addr_of!(marker) as usize;
    // SAFETY: the words between the end of .bss and 256 bytes below the live stack frame belong
    // to no object (no heap, nothing else in RAM); writing them cannot alias live data.
    unsafe {
        let mut p = core::ptr::addr_of_mut!(__ebss);
        let end = (sp - 256) as *mut u32;
        while p < end {
            p.write_volatile(PAINT);
            p = p.add(1);
        }
    }
}

/// Bytes of stack ever used: from the top of RAM down to the lowest overwritten word.
fn high_water() -> usize {
    // SAFETY: reads (volatile) of the words between the end of .bss and the stack top, all in RAM.
    unsafe {
        let mut p = core::ptr::addr_of!(__ebss);
        let top = core::ptr::addr_of!(_stack_start);
        while p < top && p.read_volatile() == PAINT {
            p = p.add(1);
        }
        top as usize - p as usize
    }
}

fn static_ram() -> usize {
    let d = core::ptr::addr_of!(__edata) as usize - core::ptr::addr_of!(__sdata) as usize;
    let b = core::ptr::addr_of!(__ebss) as usize - core::ptr::addr_of!(__sbss) as usize;
    d + b
}

const MAX_N: usize = 1024;

/// `ELBO_N`, or 16.
const N: usize = match option_env!("ELBO_N") {
    Some(s) => parse(s),
    None => 16,
};

/// A decimal number of at most `MAX_N` at compile time.
const fn parse(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v = 0usize;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "ELBO_N: expected a number");
        v = v * 10 + (b[i] - b'0') as usize;
        i += 1;
    }
    assert!(v >= 1 && v <= MAX_N, "ELBO_N: expected 1..=1024");
    v
}

/// `ELBO_SAMPLER`.
const SAMPLER: &str = match option_env!("ELBO_SAMPLER") {
    Some(s) => s,
    None => "ddpm",
};

#[entry]
fn main() -> ! {
    let Ok(out) = semihosting::io::stdout() else { semihosting::process::exit(2) };
    let mut out = Stdout(out);
    let count_steps: Option<usize> = option_env!("ELBO_COUNT_STEPS").and_then(|s| s.parse().ok());
    if count_steps.is_none() {
        paint();
    }
    let code = run(&mut out, count_steps);
    if count_steps.is_none() {
        let _ = writeln!(out, "static RAM {} bytes, stack high-water {} bytes", static_ram(), high_water());
    }
    semihosting::process::exit(code)
}

#[inline(never)]
fn run(out: &mut Stdout, count_steps: Option<usize>) -> i32 {
    let Ok(blob) = ModelBlob::parse(elbo_vectors::TWO_MOONS) else { return 1 };
    let schedule = blob.schedule();
    let mut den = blob.denoiser();
    let n = if count_steps.is_some() { 1 } else { N };
    let mut x = [0.0f32; 2 * N];
    let mut scratch = [0.0f32; 2 * N];
    let (x, scratch) = (&mut x[..2 * n], &mut scratch[..2 * n]);
    let uncond = Condition::Unconditional;
    // the host's scheme: sample e's x_T and step noise from the counter-based noise of seed 1
    for (e, row) in x.chunks_exact_mut(2).enumerate() {
        Counter::new(1, domain::START).normals(e, 0, 0, row);
    }
    let mut noise = Counter::new(1, domain::SAMPLER);
    let steps = schedule.steps();
    // the deterministic solvers (their only draw is x_T)
    let ok = match SAMPLER {
        "ddpm" => ddpm(&schedule, &mut den, x, scratch, &mut noise, count_steps),
        "none" => true,
        "ddim50" => Ddim::new(0.0, Spacing::Trailing, 50, steps)
            .is_ok_and(|d| d.sample(&mut den, &schedule, x, scratch, uncond, &mut noise).is_ok()),
        "dpmpp2m10" => {
            let mut history = [0.0f32; 2 * N];
            DpmSolverPP::new(2, Spacing::Linspace, 10, steps, 0)
                .is_ok_and(|d| d.sample(&mut den, &schedule, x, scratch, &mut history[..2 * n], uncond).is_ok())
        }
        "unipc10" => {
            let mut history = [0.0f32; 2 * 2 * N];
            Sigmas::new(SigmaFamily::Multistep, Spacing::Linspace, 10, steps, 0)
                .and_then(|s| UniPc::new(2, s))
                .is_ok_and(|u| u.sample(&mut den, &schedule, x, scratch, &mut history[..4 * n], uncond).is_ok())
        }
        _ => false,
    };
    if !ok {
        return 1;
    }
    if count_steps.is_none() {
        for row in x.chunks_exact(2) {
            let (m0, s0) = blob.normalization(0);
            let (m1, s1) = blob.normalization(1);
            let _ = writeln!(out, "{:.4} {:.4}", row[0] * s0 + m0, row[1] * s1 + m1);
        }
    }
    0
}

/// DDPM over the schedule's T steps (the first `count_steps` only, where given), with the
/// table read in place.
fn ddpm<S: NoiseSchedule, D: Denoiser>(
    schedule: &S,
    den: &mut D,
    x: &mut [f32],
    scratch: &mut [f32],
    noise: &mut Counter,
    count_steps: Option<usize>,
) -> bool {
    let steps = schedule.steps();
    let k = count_steps.unwrap_or(steps).min(steps);
    for (i, t) in (steps - k + 1..=steps).rev().enumerate() {
        let Ok(step) = stride(schedule, t, t - 1) else { return false };
        if den.predict(x, NoiseLevel::of(&step), Condition::Unconditional, scratch).is_err() {
            return false;
        }
        let Ok(sigma) = ddpm_sigma(&step, ReverseVariance::Small) else { return false };
        for (e, (xe, pe)) in x.chunks_exact_mut(2).zip(scratch.chunks_exact(2)).enumerate() {
            let draw = |first: usize, out: &mut [f32]| noise.normals(e, i as u32, first, out);
            if ddpm_update(&step, den.prediction(), pe, xe, Sigma::Fixed(sigma), Clip::Off, draw).is_err() {
                return false;
            }
        }
    }
    true
}

struct Stdout(semihosting::io::Stdout);

impl Write for Stdout {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        use semihosting::io::Write;
        self.0.write_all(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}
