//! Sharded runs equal the whole run: `sample --shard I/N` parts concatenate to the unsharded
//! samples bit for bit, and `elbo merge` of `eval --shard I/N --json` parts prints the very
//! JSON of the unsharded `eval --json --mmd-samples 0` (exact sums), in any order of the parts;
//! for 1, 2, 3 and 7 shards. The noise of example i depends only on (seed, i, step).

use std::path::Path;

use assert_cmd::Command;

fn elbo() -> Command {
    let mut c = Command::cargo_bin("elbo").unwrap();
    c.env("ORT_DYLIB_PATH", ort_path());
    c
}

/// The project-local ONNX Runtime (installed by ./test.sh), if any.
fn ort_path() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.local/onnxruntime/onnxruntime/capi");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|d| d.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().contains("libonnxruntime.so")))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn model(name: &str) -> String {
    format!("{}/../models/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The float32 payload of a .npy file elbo wrote.
fn npy_values(path: &Path) -> Vec<u32> {
    let b = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([b[8], b[9]]) as usize + 10;
    b[header..].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn sample_parts(model: &str, extra: &[&str], n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.npy");
    let mut args = vec!["sample", "--model", model, "--n"];
    let n_s = n.to_string();
    args.push(&n_s);
    args.extend_from_slice(extra);
    elbo().args(&args).arg("--out").arg(&whole).arg("--seed").arg("5").assert().success();
    let want = npy_values(&whole);
    assert_eq!(want.len() % n, 0);
    for count in [1, 2, 3, 7] {
        let mut got = Vec::new();
        for i in 0..count {
            let out = dir.path().join(format!("part-{i}-of-{count}.npy"));
            elbo()
                .args(&args)
                .args(["--seed", "5", "--shard", &format!("{i}/{count}")])
                .arg("--out")
                .arg(&out)
                .assert()
                .success();
            got.extend(npy_values(&out));
        }
        assert!(got == want, "{model} {extra:?}: {count} shards differ from the whole run");
    }
}

#[test]
fn sample_shards_concatenate_to_the_whole_run() {
    // a checkpoint: strided DDPM, DDIM with eta > 0, Langevin; classes with --class all
    let moons = model("two-moons");
    sample_parts(&moons, &["--sampler", "ddpm", "--steps", "40"], 23);
    sample_parts(&moons, &["--sampler", "ddim", "--steps", "20", "--eta", "0.7"], 23);
    sample_parts(&moons, &["--sampler", "langevin", "--steps", "5", "--langevin-steps", "3"], 9);
    // the exact denoiser of a mixture, with guidance and a class per row of classes
    let dir = tempfile::tempdir().unwrap();
    let mix = dir.path().join("mix.json");
    std::fs::write(&mix, r#"{"weights": [0.5, 0.5], "means": [[-1, 0], [1, 0]], "stds": [[0.3, 0.3], [0.3, 0.3]]}"#)
        .unwrap();
    let spec = format!("gmm:{}", mix.display());
    sample_parts("optimal", &["--data", &spec, "--sampler", "ddpm", "--steps", "30", "--class", "all"], 5);
    // a U-Net checkpoint (its chunks of 32 examples: parts whose last chunk is short)
    sample_parts(&model("digits-unet"), &["--sampler", "ddim", "--steps", "4", "--eta", "0.5"], 37);
    // an ONNX file through ONNX Runtime
    if !ort_path().is_empty() {
        sample_parts(&format!("{moons}/model.onnx"), &["--sampler", "ddpm", "--steps", "25"], 11);
    }
}

fn eval_json(args: &[&str]) -> String {
    let out = elbo().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn eval_parts(args: &[&str]) {
    let mut whole_args = args.to_vec();
    whole_args.extend_from_slice(&["--json", "--mmd-samples", "0"]);
    let whole = eval_json(&whole_args);
    let v: serde_json::Value = serde_json::from_str(&whole).unwrap();
    assert!(v["neg_elbo_nats"].as_f64().unwrap().is_finite());
    let dir = tempfile::tempdir().unwrap();
    for count in [1, 2, 3, 7] {
        let mut files = Vec::new();
        for i in 0..count {
            let shard = format!("{i}/{count}");
            let mut a = args.to_vec();
            a.extend_from_slice(&["--json", "--shard", &shard]);
            let p = dir.path().join(format!("part-{i}-of-{count}.json"));
            std::fs::write(&p, eval_json(&a)).unwrap();
            files.push(p);
        }
        // the parts in reverse order: the sums are exact, so the order cannot matter
        files.reverse();
        let out = elbo().arg("merge").args(&files).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let merged = String::from_utf8(out.stdout).unwrap();
        assert_eq!(merged, whole, "{args:?}: the merge of {count} parts differs from the whole run");
    }
}

#[test]
fn eval_shards_merge_to_the_whole_run() {
    let moons = model("two-moons");
    // the discrete bound, both estimators (the Monte Carlo one draws a second normal per term)
    eval_parts(&["eval", "--model", &moons, "--data", "two-moons", "--n", "50", "--estimator", "mc"]);
    eval_parts(&["eval", "--model", &moons, "--data", "two-moons", "--n", "50"]);
    // the exact denoiser: the bound next to the exact NLL
    let dir = tempfile::tempdir().unwrap();
    let mix = dir.path().join("mix.json");
    std::fs::write(&mix, r#"{"weights": [0.3, 0.7], "means": [[-1, 0], [1, 0.5]], "stds": [[0.3, 0.2], [0.4, 0.3]]}"#)
        .unwrap();
    let spec = format!("gmm:{}", mix.display());
    eval_parts(&["eval", "--model", "optimal", "--data", &spec, "--n", "40", "--timesteps", "100"]);
    // VDM's continuous-time bound of a U-Net on the held-out digits (17 levels)
    eval_parts(&["eval", "--model", &model("digits-unet"), "--data", "digits", "--times", "4"]);
}

#[test]
fn bad_shards_and_parts_exit_2() {
    let moons = model("two-moons");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.npy");
    for shard in ["3/3", "1", "a/b", "0/0", "-1/2"] {
        let o = elbo()
            .args(["sample", "--model", &moons, "--n", "4", "--shard", shard])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "--shard {shard}");
    }
    // more parts than samples: an empty part
    let o = elbo()
        .args(["sample", "--model", &moons, "--n", "2", "--shard", "0/3"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!out.exists());
    // a sharded eval needs --json
    let o = elbo()
        .args(["eval", "--model", &moons, "--data", "two-moons", "--n", "10", "--shard", "0/2"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    // merge: a missing part, a duplicate, parts of different runs, not a part
    let part = |i: usize, n: &str| {
        let p = dir.path().join(format!("p{i}-{n}.json"));
        let a = ["eval", "--model", &moons, "--data", "two-moons", "--n", n, "--json", "--shard", &format!("{i}/2")];
        std::fs::write(&p, eval_json(&a)).unwrap();
        p
    };
    let (p0, p1, q1) = (part(0, "10"), part(1, "10"), part(1, "12"));
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"neg_elbo_nats\": 1}").unwrap();
    for files in [vec![&p0], vec![&p0, &p0], vec![&p0, &q1], vec![&p0, &junk]] {
        let o = elbo().arg("merge").args(files.iter()).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{files:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    elbo().arg("merge").arg(&p1).arg(&p0).assert().success();
}
