//! The smallest useful device program: DDPM sampling (T = 1000, all steps) of two-moons points
//! from the shipped MLP (`models/two-moons/model.bin`, width 64), with weights and the schedule
//! table read in place from flash. It reports its RAM: static data plus the stack's high-water
//! mark (the stack is painted before sampling and scanned after).
//!
//! Built with `ELBO_COUNT_STEPS=k` it instead runs only the first k steps for one point and skips
//! the painting: `measure.sh` counts executed instructions of builds with different k.

#![no_std]
#![no_main]

use core::fmt::Write;

use elbo_core::NoiseSchedule;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::elbo::ReverseVariance;
use elbo_core::mlp::ModelBlob;
use elbo_core::rng::{Counter, Noise, domain};
use elbo_core::sampler::{Clip, Sigma, ddpm_sigma, ddpm_update};
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

const N: usize = 16;

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
    // the host's scheme: sample e's x_T and step noise from the counter-based noise of seed 1
    for (e, row) in x.chunks_exact_mut(2).enumerate() {
        Counter::new(1, domain::START).normals(e, 0, 0, row);
    }
    let mut noise = Counter::new(1, domain::SAMPLER);
    let steps = schedule.steps();
    let k = count_steps.unwrap_or(steps).min(steps);
    for (i, t) in (steps - k + 1..=steps).rev().enumerate() {
        let Ok(step) = stride(&schedule, t, t - 1) else { return 1 };
        if den.predict(x, NoiseLevel::of(&step), Condition::Unconditional, scratch).is_err() {
            return 1;
        }
        let Ok(sigma) = ddpm_sigma(&step, ReverseVariance::Small) else { return 1 };
        for (e, (xe, pe)) in x.chunks_exact_mut(2).zip(scratch.chunks_exact(2)).enumerate() {
            let draw = |first: usize, out: &mut [f32]| noise.normals(e, i as u32, first, out);
            if ddpm_update(&step, den.prediction(), pe, xe, Sigma::Fixed(sigma), Clip::Off, draw).is_err() {
                return 1;
            }
        }
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

struct Stdout(semihosting::io::Stdout);

impl Write for Stdout {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        use semihosting::io::Write;
        self.0.write_all(s.as_bytes()).map_err(|_| core::fmt::Error)
    }
}
