//! Seeded mutation fuzzing of every loader (stable Rust; no nightly toolchain can be installed
//! here for `cargo fuzz`): `.npy`, `.csv`, gmm JSON, `config.json`, `state.json`,
//! `model.safetensors`, ONNX metadata, diffusers scheduler configs and the device blob (parsed,
//! then sampled for a few DDIM steps). Each target starts from its checked-in seed corpus
//! (`tests/fuzz/corpus/`) and applies random byte-level and token-level mutations; every input
//! must give `Ok` or an `Err`, never a panic, and what loads must be usable (a prediction, a
//! training step or a sampling run that again answers `Ok` or `Err`).
//!
//! `ELBO_FUZZ_ITERS` sets the executions per target (default 1500, what CI runs);
//! `ELBO_FUZZ_SEED` the seed. A crashing input is written to `target/fuzz-crashes/`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use elbo::checkpoint::Checkpoint;
use elbo::data::{DataSpec, Mixture};
use elbo::model::Trained;
use elbo_core::NoiseSchedule;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use elbo_core::mlp::ModelBlob;
use elbo_core::sampler::{Ddim, Spacing};
use rand_core::SeedableRng;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target)
}

/// splitmix64: the mutator's own generator.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Values that break parsers and size arithmetic.
const TOKENS: [&str; 22] = [
    "0",
    "-1",
    "1e309",
    "-1e309",
    "NaN",
    "nan",
    "inf",
    "18446744073709551615",
    "18446744073709551616",
    "4294967296",
    "2147483648",
    "-0",
    "1e-45",
    "3.4e38",
    "\"x\"",
    "null",
    "[]",
    "{}",
    "true",
    "9999999999",
    "1e10",
    "",
];

const WORDS: [u32; 10] = [0, 1, 2, 255, 256, 257, 65_536, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF];

/// One to four mutations of `seed`.
fn mutate(g: &mut Gen, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + g.below(4) {
        let n = b.len();
        match g.below(9) {
            0 if n > 0 => {
                let i = g.below(n);
                b[i] ^= 1 << g.below(8);
            }
            1 if n > 0 => {
                let i = g.below(n);
                b[i] = [0u8, 0xFF, 0x7F, 0x80, b'-', b'9', b'"', b',', b'.'][g.below(9)];
            }
            2 => {
                let i = g.below(n + 1);
                let k = 1 + g.below(8);
                let bytes: Vec<u8> = (0..k).map(|_| g.next() as u8).collect();
                b.splice(i..i, bytes);
            }
            3 if n > 0 => {
                let i = g.below(n);
                let k = 1 + g.below((n - i).min(16));
                b.drain(i..i + k);
            }
            4 if n > 0 => b.truncate(g.below(n)),
            5 if n > 4 => {
                let i = g.below(n - 3) & !3;
                b[i..i + 4].copy_from_slice(&WORDS[g.below(WORDS.len())].to_le_bytes());
            }
            6 if n > 0 => {
                // duplicate a range
                let i = g.below(n);
                let k = 1 + g.below((n - i).min(64));
                let part = b[i..i + k].to_vec();
                let at = g.below(n + 1);
                b.splice(at..at, part);
            }
            _ => {
                // replace a number or a string token by a troublesome value
                let starts: Vec<usize> = (0..n)
                    .filter(|&i| {
                        (b[i].is_ascii_digit() || b[i] == b'"') && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
                    })
                    .collect();
                if starts.is_empty() {
                    continue;
                }
                let i = starts[g.below(starts.len())];
                let mut j = i + 1;
                if b[i] == b'"' {
                    while j < n && b[j] != b'"' {
                        j += 1;
                    }
                    j = (j + 1).min(n);
                } else {
                    while j < n && (b[j].is_ascii_digit() || b".eE+-".contains(&b[j])) {
                        j += 1;
                    }
                }
                b.splice(i..j, TOKENS[g.below(TOKENS.len())].bytes());
            }
        }
    }
    b
}

fn iterations() -> usize {
    std::env::var("ELBO_FUZZ_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1500)
}

fn seed_of(target: &str) -> u64 {
    let base: u64 = std::env::var("ELBO_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(2026);
    target.bytes().fold(base, |h, c| h.wrapping_mul(31).wrapping_add(u64::from(c)))
}

/// Inputs that once crashed a target (`corpus/regressions/TARGET/`), replayed first.
fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus("regressions").join(target);
    let mut v: Vec<_> = std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Runs `check` on the corpus' seeds, the target's regressions, then mutations of the seeds;
/// `check` returns whether the input loaded.
fn fuzz(target: &str, seeds: &[Vec<u8>], mut check: impl FnMut(&[u8]) -> bool) {
    assert!(!seeds.is_empty(), "{target}: empty corpus");
    for (k, r) in regressions(target).iter().enumerate() {
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| check(r)));
        assert!(out.is_ok(), "{target}: regression {k} panics again");
    }
    let mut g = Gen(seed_of(target));
    let (mut execs, mut loaded) = (0usize, 0usize);
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..iterations() {
        let input = if i < seeds.len() {
            seeds[i].clone()
        } else {
            let k = g.below(seeds.len());
            mutate(&mut g, &seeds[k])
        };
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| check(&input)));
        execs += 1;
        match r {
            Ok(ok) => loaded += usize::from(ok),
            Err(p) => {
                let _ = std::panic::take_hook();
                let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-crashes");
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("{target}-{i}"));
                std::fs::write(&path, &input).unwrap();
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{target}: execution {i} panicked ({msg}); input saved as {}", path.display());
            }
        }
    }
    let _ = std::panic::take_hook();
    eprintln!("fuzz {target}: {execs} executions, {loaded} loaded, 0 crashes");
    // the seeds themselves load, so the target does reach past the parser
    assert!(loaded >= seeds.len(), "{target}: the seeds did not load");
}

fn files(target: &str) -> Vec<Vec<u8>> {
    let mut v: Vec<_> = std::fs::read_dir(corpus(target)).unwrap().flatten().map(|e| e.path()).collect();
    v.sort();
    v.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// A data file: load it, then normalise it as training does.
fn data_target(ext: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("x.{ext}"));
    fuzz(ext, &files(ext), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        match elbo::data::load_file(&path) {
            Ok(d) => {
                assert!(d.x.iter().all(|v| v.is_finite()), "non-finite data accepted");
                assert_eq!(d.x.len() % d.dim, 0);
                let n = elbo::data::Normalization::fit(&d.x, d.dim);
                let mut x = d.x.clone();
                n.apply(&mut x);
                true
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
                false
            }
        }
    });
}

#[test]
fn fuzz_npy() {
    data_target("npy");
}

#[test]
fn fuzz_csv() {
    data_target("csv");
}

#[test]
fn fuzz_gmm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    fuzz("gmm", &files("gmm"), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        match Mixture::load(&path) {
            Ok(m) => {
                let d = DataSpec::Mixture(m.clone()).load(16, 0);
                if let Ok(d) = &d {
                    assert_eq!(d.x.len(), 16 * m.dim());
                }
                // the exact denoiser on a schedule
                let s = elbo_core::Schedule::<50>::new(&elbo_core::BetaSchedule::SquaredCosCapV2, 50, false).unwrap();
                let _ = m.with_core(|g| {
                    let mut den = elbo_core::gmm::OptimalDenoiser::new(*g);
                    let x = vec![0.5f32; 4 * g.dim()];
                    let mut out = vec![0.0f32; x.len()];
                    let _ = den.predict(&x, NoiseLevel::of(&s.step(10).unwrap()), Condition::Unconditional, &mut out);
                });
                true
            }
            Err(_) => false,
        }
    });
}

/// A copy of corpus checkpoint `name` in a fresh folder.
fn checkpoint_copy(name: &str, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(corpus("checkpoint").join(name)).unwrap().flatten() {
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

/// Loads a checkpoint folder; what loads must predict and, with its optimizer state, train
/// a step.
fn use_checkpoint(dir: &Path) -> bool {
    let Ok(ckpt) = Checkpoint::load(dir, true) else { return false };
    let config = ckpt.config.clone();
    let Ok(mut model) = Trained::new(config.clone(), ckpt.ema.clone()) else { return true };
    if let Ok(s) = model.schedule() {
        let d = model.dim();
        let x = vec![0.3f32; 3 * d];
        let mut out = vec![0.0f32; 3 * d];
        for t in [1, s.steps()] {
            let _ = model.predict(&x, NoiseLevel::of(&s.step(t).unwrap()), Condition::Unconditional, &mut out);
        }
        if config.train.batch <= 64 && config.train.n_train <= 1000 {
            let data = DataSpec::parse(&config.train.data).and_then(|s| s.load(config.train.n_train, 0));
            if let Ok(mut data) = data
                && data.dim == d
            {
                config.normalization.apply(&mut data.x);
                if let Ok(mut tr) = elbo::train::Trainer::resume(ckpt, Some(s), data) {
                    let _ = tr.step();
                }
            }
        }
    }
    true
}

fn checkpoint_target(target: &str, file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let names = ["cond", "uncond"];
    let seeds: Vec<Vec<u8>> =
        names.iter().map(|n| std::fs::read(corpus("checkpoint").join(n).join(file)).unwrap()).collect();
    let mut k = 0usize;
    fuzz(target, &seeds, |bytes| {
        // the mutated file inside a copy of the checkpoint it came from (seeds alternate)
        k += 1;
        let ck = dir.path().join(format!("c{k}"));
        let from = if bytes.windows(7).any(|w| w == b"classes") && target == "config" {
            // a config names its own classes; otherwise pick by size likeness
            if bytes.windows(12).any(|w| w == b"\"classes\": 4") { "cond" } else { "uncond" }
        } else {
            names[k % 2]
        };
        checkpoint_copy(from, &ck);
        std::fs::write(ck.join(file), bytes).unwrap();
        let ok = use_checkpoint(&ck);
        std::fs::remove_dir_all(&ck).unwrap();
        ok
    });
}

#[test]
fn fuzz_config_json() {
    checkpoint_target("config", "config.json");
}

#[test]
fn fuzz_state_json() {
    checkpoint_target("state", "state.json");
}

#[test]
fn fuzz_safetensors() {
    checkpoint_target("safetensors", "model.safetensors");
}

#[test]
fn fuzz_scheduler_config() {
    fuzz("scheduler", &files("scheduler"), |bytes| {
        let text = String::from_utf8_lossy(bytes);
        use elbo::onnx::scheduler::{Origin, parse};
        match parse(&text, "fuzz", Origin::Diffusers) {
            Ok((c, _)) => {
                if let Ok(s) = elbo::model::build_schedule(&c.schedule) {
                    let st = s.step(s.steps()).unwrap();
                    assert!(st.cur.abar.is_finite());
                }
                true
            }
            Err(_) => false,
        }
    });
}

#[test]
fn fuzz_onnx_metadata() {
    let seeds: Vec<HashMap<String, String>> =
        files("metadata").iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    let raw: Vec<Vec<u8>> = files("metadata");
    let mut g = Gen(seed_of("metadata-values"));
    let opts = elbo::onnx::OnnxOpts::default();
    fuzz("metadata", &raw, |bytes| {
        // mutate one or two values of a seed's map (the raw bytes pick the seed)
        let mut meta = seeds[bytes.len() % seeds.len()].clone();
        if bytes != raw[bytes.len() % raw.len()].as_slice() {
            let keys: Vec<String> = elbo::onnx::METADATA_KEYS.iter().map(|k| k.to_string()).collect();
            for _ in 0..1 + g.below(2) {
                let k = &keys[g.below(keys.len())];
                let v = meta.get(k).cloned().unwrap_or_default();
                if g.below(8) == 0 {
                    meta.remove(k);
                } else {
                    meta.insert(k.clone(), String::from_utf8_lossy(&mutate(&mut g, v.as_bytes())).into_owned());
                }
            }
        }
        let shape = if g.below(4) == 0 { vec![] } else { vec![2] };
        let has_class = meta.contains_key("elbo.classes") || g.below(3) == 0;
        match elbo::onnx::Metadata::interpret(&meta, &opts, &shape, has_class, Path::new("fuzz.onnx")) {
            Ok(m) => {
                if let Some(c) = &m.schedule {
                    let _ = elbo::model::build_schedule(c);
                }
                if let Some(n) = &m.normalization {
                    let mut x = vec![1.0f32; n.mean.len() * 3];
                    n.apply(&mut x);
                }
                true
            }
            Err(_) => false,
        }
    });
}

#[test]
fn fuzz_device_blob() {
    fuzz("blob", &files("blob"), |bytes| {
        let Ok(blob) = ModelBlob::parse(bytes) else { return false };
        let mut den = blob.denoiser();
        let sched = blob.schedule();
        let d = blob.shape().dim;
        for k in 0..d.min(4) {
            let _ = blob.normalization(k);
        }
        let n = 3;
        let mut rng = rand_pcg::Pcg32::seed_from_u64(1);
        let (mut x, mut scratch) = (vec![0.0f32; n * d], vec![0.0f32; n * d]);
        elbo_core::rng::fill_standard_normal(&mut rng, &mut x);
        let count = sched.steps().min(4);
        if let Ok(ddim) = Ddim::new(0.0, Spacing::Trailing, count, sched.steps()) {
            let labels = vec![0u32; n];
            let cond = if blob.shape().classes > 0 { Condition::Class(&labels) } else { Condition::Unconditional };
            // non-finite output must come back as an error, never as finite-looking samples
            if ddim
                .sample(&mut den, &sched, &mut x, &mut scratch, cond, &mut elbo_core::rng::Sequential(&mut rng))
                .is_ok()
            {
                assert!(x.iter().all(|v| v.is_finite()), "a sampling run returned Ok with non-finite samples");
            }
        }
        true
    });
}
