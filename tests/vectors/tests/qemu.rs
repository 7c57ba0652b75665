//! Builds the firmware in `tests/firmware` for Cortex-M4F and RISC-V, runs it under QEMU, and
//! compares every result, bit for bit, with the same vectors computed here on the host. Also
//! checks the harness itself: a firmware built with a deliberately failing check must fail.
//!
//! QEMU is required: `./test.sh` installs it; a missing QEMU fails this test. The one exception
//! is `ELBO_SKIP_QEMU`, which `./test.sh` sets (outside CI) with its reason when QEMU cannot be
//! installed without removing a package: the tests then say so and pass, and `./test.sh` ends
//! by repeating that they were skipped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

struct Target {
    triple: &'static str,
    qemu: &'static str,
    machine: &'static [&'static str],
}

const TARGETS: [Target; 2] = [
    Target { triple: "thumbv7em-none-eabihf", qemu: "qemu-system-arm", machine: &["-machine", "mps2-an386"] },
    Target {
        triple: "riscv32imac-unknown-none-elf",
        qemu: "qemu-system-riscv32",
        machine: &["-machine", "virt", "-bios", "none"],
    },
];

/// Whether `./test.sh` could not install QEMU (and said so): the reason, printed.
fn skipped() -> bool {
    match std::env::var("ELBO_SKIP_QEMU") {
        Ok(reason) if !reason.is_empty() => {
            eprintln!("SKIPPED: the cross-target tests ({reason})");
            true
        }
        _ => false,
    }
}

fn firmware_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../firmware")
}

/// Builds the firmware (release) and returns the ELF path.
fn build(target: &Target, features: &[&str]) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = firmware_dir().join(if features.is_empty() { "target" } else { "target-broken" });
    let mut cmd = Command::new(cargo);
    cmd.current_dir(firmware_dir())
        .args(["build", "--locked", "--release", "--bin", "vectors", "--target", target.triple, "--target-dir"])
        .arg(&target_dir);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    // The firmware has its own workspace and .cargo/config.toml: nothing from this build may leak.
    for var in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "CARGO_BUILD_RUSTFLAGS"]
    {
        cmd.env_remove(var);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building the firmware for {} failed (is the target installed? `rustup target add {}`):\n{}",
        target.triple,
        target.triple,
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join(target.triple).join("release/vectors")
}

/// Runs the ELF under QEMU; returns (exit code, stdout). QEMU's stdio is written without
/// blocking and drops output into a full pipe, so it goes to a file.
fn run(target: &Target, elf: &PathBuf) -> (i32, String) {
    let log = elf.with_extension("stdout.txt");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(target.qemu)
        .args(target.machine)
        .args(["-nographic", "-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .stdin(std::process::Stdio::null())
        .stdout(file)
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{} is not available ({e}): install QEMU with `apt-get install -y --no-install-recommends \
                 qemu-system-arm qemu-system-misc` (./test.sh does this)",
                target.qemu
            )
        });
    // A hung firmware must not hang the test suite.
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            panic!("{} did not finish in 10 minutes", target.qemu);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), std::fs::read_to_string(&log).unwrap())
}

#[test]
fn firmware_matches_the_host_bit_for_bit() {
    if skipped() {
        return;
    }
    let mut host = String::new();
    let failures = elbo_vectors::run(&mut host);
    assert_eq!(
        failures,
        0,
        "checks failed on the host:\n{}",
        host.lines().filter(|l| l.ends_with("FAIL")).collect::<Vec<_>>().join("\n")
    );
    for target in &TARGETS {
        let elf = build(target, &[]);
        let (code, device) = run(target, &elf);
        let failed: Vec<&str> = device.lines().filter(|l| l.ends_with("FAIL")).collect();
        assert_eq!(code, 0, "{}: the firmware exited with {code}; failed checks: {failed:?}", target.triple);
        let (h, d): (Vec<&str>, Vec<&str>) = (host.lines().collect(), device.lines().collect());
        for (i, (a, b)) in h.iter().zip(&d).enumerate() {
            assert!(a == b, "{}: line {} differs\n  host:   {a}\n  device: {b}", target.triple, i + 1);
        }
        assert_eq!(h.len(), d.len(), "{}: {} lines on the host, {} on the device", target.triple, h.len(), d.len());
        eprintln!("{}: {} lines identical to the host", target.triple, h.len());
    }
}

/// The harness itself: a firmware with a failing check exits non-zero and names the check.
#[test]
fn a_failing_check_fails_the_run() {
    if skipped() {
        return;
    }
    let target = &TARGETS[1];
    let elf = build(target, &["broken-check"]);
    let (code, out) = run(target, &elf);
    assert_eq!(code, 1, "expected exit status 1, got {code}");
    assert!(out.contains("C broken-check (must fail) FAIL"), "the failing check was not reported");
    assert!(out.trim_end().ends_with("END 1"));
}
