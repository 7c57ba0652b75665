//! Nothing lost: a run killed (SIGKILL) at many random moments, most of them inside a
//! checkpoint write, resumes every time and ends bit-identical to an uninterrupted run; a full
//! disk during a checkpoint keeps the previous one, which resumes once space is freed; a second
//! writer on one output is refused while the first finishes intact.

use std::path::Path;
use std::process::Command as Std;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin;

fn elbo() -> Command {
    Command::cargo_bin("elbo").unwrap()
}

const FILES: [&str; 5] = ["model.safetensors", "optimizer.safetensors", "state.json", "config.json", "loss.csv"];

fn files_equal(a: &Path, b: &Path) {
    for f in FILES {
        let (x, y) = (std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap());
        assert!(x == y, "{f} differs between {} and {}", a.display(), b.display());
    }
}

/// No hidden temporary file or unfinished checkpoint is left in `dir` (its `.lock` stays).
fn no_leftovers(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(name == ".lock" || FILES.contains(&name.as_str()), "left behind in {}: {name}", dir.display());
    }
}

/// A small, fast run that checkpoints at every step, so that most of its time is spent
/// writing checkpoints and most kills land inside a write.
const SMALL: [&str; 20] = [
    "train",
    "--data",
    "two-moons",
    "--steps",
    "1000",
    "--batch",
    "32",
    "--n-train",
    "300",
    "--width",
    "16",
    "--depth",
    "2",
    "--timesteps",
    "100",
    "--checkpoint-every",
    "1",
    "--log-every",
    "7",
    "--out",
];

/// A 64-bit LCG: the kill moments come from a fixed seed, so the test is repeatable.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn fifty_kills_at_random_moments_resume_to_the_same_bits() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole");
    elbo().args(SMALL).arg(&whole).assert().success();

    let cut = dir.path().join("cut");
    let mut seed = 12345u64;
    let (mut kills, mut runs, mut inside_write) = (0, 0, 0);
    let start = Instant::now();
    loop {
        runs += 1;
        let mut child = Std::new(cargo_bin("elbo"))
            .args(SMALL)
            .arg(&cut)
            .arg("--resume")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if kills < 60 {
            // Up to 40 ms: a start-up plus a few steps and their checkpoints.
            std::thread::sleep(Duration::from_micros(next(&mut seed) % 40_000));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                child.try_wait().ok();
                kills += 1;
                // a write was under way: an unfinished or a half-moved set is there
                std::thread::sleep(Duration::from_millis(1));
                if cut.join(".next").exists() || cut.join(".commit").exists() {
                    inside_write += 1;
                }
            }
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            break;
        }
        // A killed run has no exit code; any run that exits must do so with success.
        assert!(out.status.code().is_none(), "run {runs} failed: {}", String::from_utf8_lossy(&out.stderr));
        assert!(start.elapsed() < Duration::from_secs(300), "no progress after {runs} runs");
    }
    assert!(kills >= 50, "only {kills} kills landed");
    eprintln!("{kills} kills in {runs} runs, {inside_write} inside a checkpoint write");
    assert!(inside_write >= 5, "only {inside_write} of {kills} kills landed inside a checkpoint write");
    files_equal(&whole, &cut);
    no_leftovers(&cut);
}

#[test]
fn a_second_writer_is_refused_and_the_first_finishes_intact() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["train", "--data", "two-moons", "--steps", "600", "--batch", "64", "--n-train", "500"];
    let whole = dir.path().join("whole");
    elbo().args(args).args(["--checkpoint-every", "100", "--out"]).arg(&whole).assert().success();

    let out = dir.path().join("run");
    let mut first =
        Std::new(cargo_bin("elbo")).args(args).args(["--checkpoint-every", "100", "--out"]).arg(&out).spawn().unwrap();
    let start = Instant::now();
    while !out.join(".lock").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the first writer never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    // the second writer: with and without --resume, same flags or not
    for extra in [&["--resume"][..], &[][..], &["--lr", "0.1", "--resume"][..]] {
        let o =
            elbo().args(args).args(["--checkpoint-every", "100"]).args(extra).arg("--out").arg(&out).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("in use by another elbo process (pid"), "{err}");
    }
    assert!(first.wait().unwrap().success());
    files_equal(&whole, &out);
    // two writers of one sample file: the second is refused, naming the holder
    let samples = dir.path().join("s.npy");
    let mut big = Std::new(cargo_bin("elbo"))
        .args(["sample", "--model"])
        .arg(&whole)
        .args(["--n", "20000", "--out"])
        .arg(&samples)
        .spawn()
        .unwrap();
    let lock = dir.path().join(".s.npy.lock");
    let start = Instant::now();
    while !lock.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the sampler never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let o = elbo().args(["sample", "--model"]).arg(&whole).args(["--n", "5", "--out"]).arg(&samples).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("in use by another elbo process"), "{err}");
    assert!(big.wait().unwrap().success());
    assert!(!lock.exists(), "the lock file of a finished output stays behind");
    assert_eq!(std::fs::read(&samples).unwrap().len(), 128 + 20000 * 2 * 4);
}

/// Fills a size-limited tmpfs (in a private mount namespace: needs root, as CI has) so that a
/// checkpoint write fails: the run exits 1 naming the cause, the previous checkpoint stays
/// whole, and after space is freed `--resume` ends bit-identical to an uninterrupted run.
#[test]
fn a_full_disk_during_a_checkpoint_keeps_the_previous_one() {
    let ok = Std::new("unshare").args(["-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"]).status();
    if !ok.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: a private tmpfs cannot be mounted here (needs root and unshare)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let args = "train --data two-moons --n-train 500 --batch 64 --checkpoint-every 10 --log-every 5";
    let whole = dir.path().join("whole");
    // the same path without a full disk: 20 steps, then resumed to 40
    elbo().args(args.split(' ')).args(["--steps", "20", "--out"]).arg(&whole).assert().success();
    elbo().args(args.split(' ')).args(["--steps", "40", "--resume", "--out"]).arg(&whole).assert().success();
    let bin = cargo_bin("elbo");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // one set is about 0.6 MB; the disk holds 2 MB: the first set fits, a filler leaves room
    // for less than a second one
    let script = format!(
        r#"set -u
mount -t tmpfs -o size=2m tmpfs "{m}" || exit 90
"{b}" {a} --steps 20 --out "{m}/run" || exit 91
head -c 1200000 /dev/zero > "{m}/filler"
"{b}" {a} --steps 40 --resume --out "{m}/run" 2> "{m}/err"; echo "rc=$?"; cat "{m}/err"
ls -a "{m}/run"
rm "{m}/filler"
"{b}" {a} --steps 40 --resume --out "{m}/run" 2>&1 | grep resuming || exit 92
cp "{m}/run/"* "{d}/" || exit 93
"#,
        m = mnt.display(),
        b = bin.display(),
        a = args,
        d = dir.path().join("after").display()
    );
    std::fs::create_dir(dir.path().join("after")).unwrap();
    let out = Std::new("unshare").args(["-m", "sh", "-c", &script]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("rc=1"), "the full disk did not fail the run: {text}");
    assert!(text.contains("No space left on device"), "the cause is not named: {text}");
    assert!(text.contains("the checkpoint of step 20 is kept"), "{text}");
    assert!(!text.contains(".next") && !text.contains(".commit"), "an unfinished set was left: {text}");
    assert!(text.contains("resuming") && text.contains("from step 20"), "{text}");
    files_equal(&whole, &dir.path().join("after"));
}

/// `--resume` with a larger `--steps` trains the extra steps; without flags it continues the
/// stored run; what a killed writer of a file output left (its temporary file and lock file)
/// is removed by the next writer of that output.
#[test]
fn resume_trains_extra_steps_and_leftovers_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let args = ["train", "--data", "two-moons", "--batch", "32", "--n-train", "300", "--width", "16"];
    elbo().args(args).args(["--steps", "10", "--out"]).arg(&run).assert().success();
    let step = |d: &Path| -> u64 {
        let c: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("config.json")).unwrap()).unwrap();
        c["step"].as_u64().unwrap()
    };
    assert_eq!(step(&run), 10);
    let o = elbo().args(args).args(["--steps", "25", "--resume", "--out"]).arg(&run).output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("resuming"));
    assert_eq!(step(&run), 25);
    // the stored run, with no flags but --data and --resume
    elbo().args(["train", "--data", "two-moons", "--resume", "--out"]).arg(&run).assert().success();
    assert_eq!(step(&run), 25);
    no_leftovers(&run);
    // a data file that changed since the run began is refused on --resume
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "1,2\n3,4\n5,7\n").unwrap();
    let on_csv = dir.path().join("on-csv");
    elbo()
        .args(["train", "--steps", "3", "--batch", "4", "--data"])
        .arg(&csv)
        .arg("--out")
        .arg(&on_csv)
        .assert()
        .success();
    std::fs::write(&csv, "1,2\n3,4\n5,8\n").unwrap();
    let o = elbo()
        .args(["train", "--steps", "6", "--resume", "--data"])
        .arg(&csv)
        .arg("--out")
        .arg(&on_csv)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the data differs"));

    let out = dir.path().join("s.npy");
    std::fs::write(dir.path().join(".s.npy.4242.tmp"), b"half").unwrap();
    std::fs::write(dir.path().join(".s.npy.lock"), b"4242").unwrap();
    elbo().args(["sample", "--n", "5", "--model"]).arg(&run).arg("--out").arg(&out).assert().success();
    assert!(out.exists());
    assert!(!dir.path().join(".s.npy.4242.tmp").exists(), "a killed writer's temporary file stayed");
    assert!(!dir.path().join(".s.npy.lock").exists(), "a killed writer's lock file stayed");
}
