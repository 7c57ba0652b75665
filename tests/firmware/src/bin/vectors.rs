//! Firmware that runs elbo-core's test vectors on the device and prints every result's bits
//! over semihosting; a failed check makes QEMU exit with status 1 (a panic: 101).

#![no_std]
#![no_main]

use core::fmt;

#[cfg(target_arch = "arm")]
use cortex_m_rt::entry;
#[cfg(target_arch = "riscv32")]
use riscv_rt::entry;

/// Forwards text to the host's standard output.
struct Stdout(semihosting::io::Stdout);

impl fmt::Write for Stdout {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        use semihosting::io::Write;
        self.0.write_all(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

#[entry]
fn main() -> ! {
    let Ok(out) = semihosting::io::stdout() else { semihosting::process::exit(2) };
    let mut out = Stdout(out);
    let failures = elbo_vectors::run(&mut out);
    semihosting::process::exit(if failures == 0 { 0 } else { 1 })
}
