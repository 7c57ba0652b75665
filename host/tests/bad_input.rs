//! The real binary driven through well over a hundred bad inputs across every subcommand and
//! file format: each exits with code 2 and one line naming the flag or file, never panics or
//! aborts, and leaves nothing behind (no output, no temporary file, no lock file).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn elbo() -> Command {
    Command::cargo_bin("elbo").unwrap()
}

/// Every path under `dir` (recursively).
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p);
        }
    }
    out
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn p(&self, name: &str) -> String {
        self.root.join(name).to_string_lossy().into_owned()
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> String {
        std::fs::write(self.root.join(name), bytes).unwrap();
        self.p(name)
    }

    /// A copy of checkpoint `from` as `to`, with `config.json` changed by `edit`.
    fn edited(&self, from: &str, to: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let (src, dst) = (self.root.join(from), self.root.join(to));
        std::fs::create_dir_all(&dst).unwrap();
        for e in std::fs::read_dir(&src).unwrap().flatten() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
        let mut c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dst.join("config.json")).unwrap()).unwrap();
        edit(&mut c);
        std::fs::write(dst.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        self.p(to)
    }
}

fn train(f: &Fixture, name: &str, extra: &[&str]) -> String {
    let out = f.p(name);
    elbo()
        .args(["train", "--steps", "4", "--batch", "16", "--n-train", "200", "--width", "16", "--timesteps", "50"])
        .args(extra)
        .args(["--out", &out])
        .assert()
        .success();
    out
}

/// A `.npy` file of float32 values with the given header shape (the data may not match it).
fn npy(shape: &str, descr: &str, data: &[u8]) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((h.len() as u16).to_le_bytes());
    b.extend(h.as_bytes());
    b.extend(data);
    b
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn every_bad_input_exits_2_with_one_line_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let f = Fixture { root: tmp.path().to_path_buf(), _tmp: tmp };
    // models
    let m = train(&f, "m", &["--data", "two-moons"]);
    let gmm =
        f.write("mix.json", r#"{"weights": [1, 1], "means": [[-1, 0], [1, 0]], "stds": [[0.3, 0.3], [0.3, 0.3]]}"#);
    let gmm_spec = format!("gmm:{gmm}");
    let cond = train(&f, "cond", &["--data", &gmm_spec, "--conditional"]);
    let clf_out = f.p("clf");
    elbo()
        .args(["train-classifier", "--data", &gmm_spec, "--steps", "3", "--batch", "16", "--n-train", "200"])
        .args(["--width", "16", "--timesteps", "50", "--out", &clf_out])
        .assert()
        .success();
    let vdm = train(&f, "vdm", &["--data", "two-moons", "--schedule", "vdm"]);
    let wide = f.p("wide");
    elbo()
        .args(["train", "--data", "two-moons", "--steps", "1", "--batch", "4", "--n-train", "50", "--width", "300"])
        .args(["--depth", "1", "--timesteps", "10", "--out", &wide])
        .assert()
        .success();
    // data files
    let good_csv = f.write("good.csv", "x0,x1\n0.1,0.2\n0.3,0.4\n");
    let three = f.write("three.csv", "1,2,3\n4,5,6\n");
    let half_header = f.write("half.csv", "x0,1.5\n0.1,0.2\n");
    let text_row = f.write("textrow.csv", "0.1,0.2\n0.3,0.4\nfoo,bar\n");
    let empty_csv = f.write("empty.csv", "");
    let header_only = f.write("header.csv", "a,b\n");
    let ragged = f.write("ragged.csv", "1,2\n3\n");
    let inf_csv = f.write("inf.csv", "1,2\ninf,3\n");
    let nan_csv = f.write("nan.csv", "1,2\nNaN,3\n");
    let huge_csv = f.write("hugevals.csv", "3e38,3e38\n-3e38,-3e38\n3e38,-3e38\n");
    let npy_trunc = f.write("trunc.npy", &npy("(100, 2)", "<f4", &floats(&[1.0; 10]))[..]);
    let npy_huge = f.write("huge.npy", npy("(100000000000000, 100000000000)", "<f4", &floats(&[1.0; 4])));
    let npy_int = f.write("int.npy", npy("(2, 2)", "<i4", &[0u8; 16]));
    let npy_big_endian = f.write("be.npy", npy("(2, 2)", ">f4", &[0u8; 16]));
    let npy_garbage = f.write("garbage.npy", b"\x93NUMPY garbage");
    let npy_nan = f.write("nan.npy", npy("(2, 2)", "<f4", &floats(&[1.0, f32::NAN, 0.0, 0.0])));
    let npy_noshape = f.write("noshape.npy", npy("", "<f4", &[]));
    let npy_zero = f.write("zero.npy", npy("(0, 2)", "<f4", &[]));
    let npy_version = f.write("v9.npy", {
        let mut b = npy("(2,)", "<f4", &floats(&[1.0, 2.0]));
        b[6] = 9;
        b
    });
    // gmm files
    let gmm_bad = |name: &str, text: &str| format!("gmm:{}", f.write(name, text));
    let g_notjson = gmm_bad("g1.json", "{weights");
    let g_types = gmm_bad("g2.json", r#"{"weights": "a", "means": [[0]], "stds": [[1]]}"#);
    let g_negstd = gmm_bad("g3.json", r#"{"weights": [1], "means": [[0, 0]], "stds": [[-1, 1]]}"#);
    let g_zerow = gmm_bad("g4.json", r#"{"weights": [0, 0], "means": [[0], [1]], "stds": [[1], [1]]}"#);
    let g_ragged = gmm_bad("g5.json", r#"{"weights": [1, 1], "means": [[0, 0], [1]], "stds": [[1, 1], [1]]}"#);
    let g_empty = gmm_bad("g6.json", r#"{"weights": [], "means": [], "stds": []}"#);
    let g_extra = gmm_bad("g7.json", r#"{"weights": [1], "means": [[0]], "stds": [[1]], "x": 1}"#);
    let g_nanmean = gmm_bad("g8.json", r#"{"weights": [1], "means": [[1e999]], "stds": [[1]]}"#);
    // damaged checkpoints
    let c_zero = f.edited("m", "c_zero", |c| c["mlp"]["dim"] = 0.into());
    let c_width = f.edited("m", "c_width", |c| c["mlp"]["width"] = serde_json::json!(1u64 << 40));
    let c_depth = f.edited("m", "c_depth", |c| c["mlp"]["depth"] = serde_json::json!(1u64 << 40));
    let c_norm_empty = f.edited("m", "c_ne", |c| {
        c["normalization"] = serde_json::json!({"mean": [], "std": []});
    });
    let c_norm_len = f.edited("m", "c_nl", |c| c["normalization"]["std"] = serde_json::json!([1.0]));
    let c_norm_zero = f.edited("m", "c_nz", |c| c["normalization"]["std"] = serde_json::json!([0.0, 1.0]));
    let c_lr_null = f.edited("m", "c_lr", |c| c["train"]["lr"] = serde_json::Value::Null);
    let c_type = f.edited("m", "c_ty", |c| c["mlp"]["width"] = "wide".into());
    let c_steps = f.edited("m", "c_st", |c| c["schedule"]["timesteps"] = 0.into());
    let c_sched = f.edited("m", "c_sc", |c| c["schedule"]["name"] = "bogus".into());
    let c_version = f.edited("m", "c_v", |c| c["version"] = 99.into());
    let c_step = f.edited("m", "c_step", |c| c["step"] = 3.into());
    let c_missing = f.edited("m", "c_mi", |_| ());
    std::fs::remove_file(f.root.join("c_mi/model.safetensors")).unwrap();
    let c_trunc = f.edited("m", "c_tr", |_| ());
    let b = std::fs::read(f.root.join("c_tr/model.safetensors")).unwrap();
    std::fs::write(f.root.join("c_tr/model.safetensors"), &b[..b.len() / 2]).unwrap();
    let c_state = f.edited("m", "c_state", |_| ());
    std::fs::write(f.root.join("c_state/state.json"), "{\"step\": \"x\"}").unwrap();
    // ONNX and blob files
    let onnx = f.p("m.onnx");
    elbo().args(["export", "--model", &m, "--out", &onnx]).assert().success();
    let onnx_bytes = std::fs::read(&onnx).unwrap();
    let onnx_trunc = f.write("trunc.onnx", &onnx_bytes[..onnx_bytes.len() / 2]);
    let not_onnx = f.write("not.onnx", "hello");
    let sched = |name: &str, text: &str| f.write(name, text);
    let s_type = sched("s1.json", r#"{"num_train_timesteps": "1000"}"#);
    let s_beta = sched("s2.json", r#"{"beta_start": "0.0001"}"#);
    let s_zero = sched("s3.json", r#"{"num_train_timesteps": 0}"#);
    let s_huge = sched("s4.json", r#"{"num_train_timesteps": 1000000000}"#);
    let s_bool = sched("s5.json", r#"{"rescale_betas_zero_snr": "yes"}"#);
    let s_array = sched("s6.json", "[1, 2]");
    let s_schedule = sched("s7.json", r#"{"beta_schedule": 3}"#);
    let s_betas = sched("s8.json", r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 1.5]}"#);
    let sdir = f.root.join("sdir");
    std::fs::create_dir(&sdir).unwrap();
    let sdir = sdir.to_string_lossy().into_owned();
    // outputs
    let out = f.p("out.npy");
    let out_csv = f.p("out.csv");
    let file_as_dir = f.write("a_file", "x");
    let no_parent = f.p("nowhere/out.npy");
    let out_dir = f.p("outdir");
    let png = f.p("p.png");
    let nowhere = f.p("nowhere/x");
    let bin = f.p("m.bin");
    let ok_onnx_run = elbo::onnx::find_runtime().is_ok();

    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();
    let mut cases: Vec<Vec<String>> = vec![
        // elbo data
        s(&["data", "--data", "two-moons", "--n", "0", "--out", &out]),
        s(&["data", "--data", "two-moons", "--n", "100000000000000000", "--out", &out]),
        s(&["data", "--data", "bogus", "--out", &out]),
        s(&["data", "--data", "gmm:/no/such.json", "--out", &out]),
        s(&["data", "--data", &g_notjson, "--out", &out]),
        s(&["data", "--data", &g_types, "--out", &out]),
        s(&["data", "--data", &g_negstd, "--out", &out]),
        s(&["data", "--data", &g_zerow, "--out", &out]),
        s(&["data", "--data", &g_ragged, "--out", &out]),
        s(&["data", "--data", &g_empty, "--out", &out]),
        s(&["data", "--data", &g_extra, "--out", &out]),
        s(&["data", "--data", &g_nanmean, "--out", &out]),
        s(&["data", "--data", "two-moons", "--out", &f.p("out.txt")]),
        s(&["data", "--data", "two-moons", "--out", &no_parent]),
        s(&["data", "--data", "two-moons", "--out", &out_dir]),
        s(&["data", "--data", &npy_trunc, "--out", &out]),
        s(&["data", "--data", &npy_huge, "--out", &out]),
        s(&["data", "--data", &npy_int, "--out", &out]),
        s(&["data", "--data", &npy_big_endian, "--out", &out]),
        s(&["data", "--data", &npy_garbage, "--out", &out]),
        s(&["data", "--data", &npy_nan, "--out", &out]),
        s(&["data", "--data", &npy_noshape, "--out", &out]),
        s(&["data", "--data", &npy_zero, "--out", &out]),
        s(&["data", "--data", &npy_version, "--out", &out]),
        s(&["data", "--data", &half_header, "--out", &out]),
        s(&["data", "--data", &text_row, "--out", &out]),
        s(&["data", "--data", &empty_csv, "--out", &out]),
        s(&["data", "--data", &header_only, "--out", &out]),
        s(&["data", "--data", &ragged, "--out", &out]),
        s(&["data", "--data", &inf_csv, "--out", &out]),
        s(&["data", "--data", &nan_csv, "--out", &out]),
        s(&["data", "--data", "/no/such.csv", "--out", &out]),
        // elbo train: flags
        s(&["train", "--data", "two-moons", "--steps", "0", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--batch", "0", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--lr", "NaN", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--lr", "-1", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--lr", "inf", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--weight-decay", "NaN", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--weight-decay=-1", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--grad-clip", "NaN", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--grad-clip=-1", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--ema-decay", "1", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--ema-decay", "NaN", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--cond-dropout", "2", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--width", "0", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--width", "100000000000", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--width", "18446744073709551615", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--depth", "100000", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--embed", "3", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--embed", "18446744073709551614", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--n-train", "100000000000000000", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--batch", "100000000000000", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--timesteps", "0", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--timesteps", "100000", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--beta-start", "NaN", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--beta-end", "2", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--beta-start", "0.5", "--beta-end", "0.1", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--schedule", "bogus", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--loss", "bogus", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--loss", "weighted:sigmoid:NaN", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--t-sampling", "bogus", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--variance", "bogus", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--prediction", "bogus", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--normalize", "bogus", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--family", "bogus", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--family", "vae", "--latent", "0", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--schedule", "vdm", "--log-snr-min", "NaN", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--schedule", "vdm", "--log-snr-max", "-10", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--threads", "0", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--out", &file_as_dir]),
        s(&["train", "--data", "two-moons", "--out", &nowhere]),
        s(&["train", "--data", "two-moons", "--plot", &f.p("loss.txt"), "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--plot", &f.p("nowhere/loss.png"), "--out", &out_dir]),
        s(&["train", "--data", "rings", "--family", "vae", "--conditional", "--out", &out_dir]),
        s(&["train", "--data", &good_csv, "--conditional", "--out", &out_dir]),
        s(&["train", "--data", &huge_csv, "--steps", "2", "--out", &out_dir]),
        s(&["train", "--data", "two-moons", "--out", &m]),
        s(&["train", "--data", "two-moons", "--resume", "--lr", "0.5", "--out", &m]),
        s(&["train", "--data", "two-moons", "--resume", "--steps", "2", "--out", &m]),
        s(&["train", "--data", "two-moons", "--resume", "--width", "64", "--out", &m]),
        s(&["train", "--data", "swiss-roll", "--resume", "--out", &m]),
        s(&["train", "--data", "/no/such.npy", "--out", &out_dir]),
        s(&["train", "--data", &npy_huge, "--out", &out_dir]),
        s(&["train-classifier", "--data", "swiss-roll", "--out", &out_dir]),
        // damaged checkpoints, read by every command
        s(&["sample", "--model", &c_zero, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_width, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_depth, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_norm_empty, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_norm_len, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_norm_zero, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_lr_null, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_type, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_steps, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_sched, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_version, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_step, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_missing, "--n", "5", "--out", &out]),
        s(&["sample", "--model", &c_trunc, "--n", "5", "--out", &out]),
        s(&["eval", "--model", &c_norm_zero, "--data", "two-moons", "--n", "10"]),
        s(&["eval", "--model", &c_width, "--data", "two-moons", "--n", "10"]),
        s(&["export", "--model", &c_norm_len, "--out", &bin]),
        s(&["export", "--model", &c_zero, "--out", &onnx.replace("m.onnx", "z.onnx")]),
        s(&["train", "--data", "two-moons", "--resume", "--out", &c_state]),
        s(&["train", "--data", "two-moons", "--resume", "--out", &c_step]),
        s(&["train", "--data", "two-moons", "--resume", "--out", &c_width]),
        // elbo sample
        s(&["sample", "--model", &m, "--n", "0", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "100000000000000000", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--eta", "NaN", "--sampler", "ddim", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--eta=-1", "--sampler", "ddim", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--clip=-1", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--clip", "NaN", "--out", &out]),
        s(&["sample", "--model", &cond, "--n", "5", "--class", "1", "--guidance", "NaN", "--out", &out]),
        s(&["sample", "--model", &cond, "--n", "5", "--class", "1", "--guidance", "inf", "--out", &out]),
        s(&["sample", "--model", &cond, "--n", "5", "--guidance", "2", "--out", &out]),
        s(&["sample", "--model", &cond, "--n", "5", "--class", "99", "--out", &out]),
        s(&["sample", "--model", &cond, "--n", "5", "--class", "abc", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--class", "0", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--steps", "0", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "ddim", "--steps", "5000", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "heun", "--steps", "0", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "euler", "--steps", "5000", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "unipc", "--steps", "1000", "--out", &out]),
        s(&[
            "sample",
            "--model",
            &m,
            "--n",
            "5",
            "--sampler",
            "deis",
            "--spacing",
            "leading",
            "--steps",
            "999999",
            "--out",
            &out,
        ]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "ddpm", "--karras", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "langevin", "--karras", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "bogus", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "ddim", "--spacing", "bogus", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--variance", "bogus", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "langevin", "--langevin-step-size", "0", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--sampler", "langevin", "--langevin-steps", "0", "--out", &out]),
        s(&["sample", "--model", &m, "--init", "/no/such.npy", "--out", &out]),
        s(&["sample", "--model", &m, "--init", &three, "--out", &out]),
        s(&["sample", "--model", &m, "--init", &nan_csv, "--out", &out]),
        s(&["sample", "--model", &m, "--init", &npy_huge, "--out", &out]),
        s(&["sample", "--model", &m, "--init", &huge_csv, "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--out", &f.p("s.txt")]),
        s(&["sample", "--model", &m, "--n", "5", "--out", &out_dir_existing(&f)]),
        s(&["sample", "--model", &m, "--n", "5", "--out", &no_parent]),
        s(&["sample", "--model", &m, "--n", "5", "--plot", &f.p("p.txt"), "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--plot", &f.p("nowhere/p.png"), "--out", &out]),
        s(&["sample", "--model", &f.p("nothing"), "--n", "5", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--classifier", &f.p("nothing"), "--class", "0", "--out", &out]),
        s(&["sample", "--model", &m, "--n", "5", "--classifier", &m, "--class", "0", "--out", &out]),
        s(&["sample", "--model", &cond, "--n", "5", "--classifier", &clf_out, "--class", "0", "--out", &out]),
        s(&["sample", "--model", "optimal", "--n", "5", "--out", &out]),
        s(&["sample", "--model", "optimal", "--data", "two-moons", "--n", "5", "--out", &out]),
        // elbo eval
        s(&["eval", "--model", &m, "--data", "two-moons", "--n", "0"]),
        s(&["eval", "--model", &m, "--data", "two-moons", "--likelihood", "ode", "--rtol", "-1"]),
        s(&["eval", "--model", &m, "--data", "two-moons", "--likelihood", "ode", "--probes", "0"]),
        s(&["eval", "--model", &m, "--data", "two-moons", "--likelihood", "bogus"]),
        s(&["eval", "--model", "optimal:/no/such.json", "--data", "two-moons"]),
        s(&["eval", "--model", &m, "--data", "two-moons", "--bins", "0"]),
        s(&["eval", "--model", &m, "--data", "two-moons", "--bins", "1"]),
        s(&["eval", "--model", &m, "--data", "two-moons", "--variance", "bogus"]),
        s(&["eval", "--model", &m, "--data", "two-moons", "--estimator", "bogus"]),
        s(&["eval", "--model", &vdm, "--data", "two-moons", "--times", "0"]),
        s(&["eval", "--model", &m, "--data", &three]),
        s(&["eval", "--model", &m, "--data", &huge_csv, "--mmd-samples", "0"]),
        s(&["eval", "--model", &m, "--data", "two-moons", "--plot", &f.p("e.txt")]),
        s(&["eval", "--model", "optimal", "--data", "two-moons"]),
        s(&["eval", "--model", &m, "--data", "two-moons", "--n", "100000000000000000"]),
        // elbo export
        s(&["export", "--model", &m, "--out", &f.p("m.txt")]),
        s(&["export", "--model", &m, "--out", &out_dir_existing(&f)]),
        s(&["export", "--model", &m, "--out", &f.p("nowhere/m.bin")]),
        s(&["export", "--model", &f.p("nothing"), "--out", &bin]),
        s(&["export", "--model", &vdm, "--out", &bin]),
        s(&["export", "--model", &vdm, "--out", &onnx.replace("m.onnx", "v.bin")]),
        s(&["export", "--model", &wide, "--out", &bin]),
        s(&["export", "--model", &clf_out, "--out", &bin]),
        // elbo schedule
        s(&["schedule", "--timesteps", "0"]),
        s(&["schedule", "--timesteps", "100000"]),
        s(&["schedule", "--schedule", "bogus"]),
        s(&["schedule", "--beta-start", "NaN"]),
        s(&["schedule", "--beta-end", "1.5"]),
        s(&["schedule", "--schedule", "learned"]),
        // elbo experiment and demo
        s(&["experiment", "bogus", "--out", &out_dir]),
        s(&["experiment", "likelihood", "--n", "0", "--out", &out_dir]),
        s(&["experiment", "likelihood", "--out", &file_as_dir]),
        s(&["demo", "--n", "1", "--out", &out_dir]),
        s(&["demo", "--out", &file_as_dir]),
        // clap's own refusals (unknown flags, wrong types)
        s(&["train", "--data", "two-moons", "--steps", "-3", "--out", &out_dir]),
        s(&["sample", "--model", &m, "--n", "abc", "--out", &out]),
        s(&["sample", "--model", &m, "--bogus-flag", "--out", &out]),
    ];
    if ok_onnx_run {
        let onnx_cases = [
            s(&["sample", "--model", &onnx_trunc, "--n", "5", "--out", &out]),
            s(&["sample", "--model", &not_onnx, "--n", "5", "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", &s_type, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", &s_beta, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", &s_zero, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", &s_huge, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", &s_bool, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", &s_array, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", &s_schedule, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", &s_betas, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", &sdir, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--scheduler-config", "/no/such.json", "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--prediction", "bogus", "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--ep", "bogus", "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--output", "nope", "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--input-sample", "nope", "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--input-timestep", "nope", "--out", &out]),
            s(&["sample", "--model", &onnx, "--init", &three, "--out", &out]),
            s(&["sample", "--model", &onnx, "--n", "5", "--class", "0", "--out", &out]),
            s(&["eval", "--model", &onnx, "--data", &three]),
            s(&["eval", "--model", &onnx, "--data", "two-moons", "--n", "10", "--scheduler-config", &s_type]),
        ];
        cases.extend(onnx_cases);
    } else {
        eprintln!("SKIPPED the ONNX cases: no ONNX Runtime found (./test.sh installs it)");
    }
    let _ = (&png, &out_csv);
    assert!(cases.len() >= 100 + if ok_onnx_run { 20 } else { 0 }, "{} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let before = listing(&f.root);
        let o = elbo().args(c).timeout(std::time::Duration::from_secs(60)).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let after = listing(&f.root);
        let left: Vec<_> = after.difference(&before).collect();
        let gone: Vec<_> = before.difference(&after).collect();
        let lines = err.trim_end().lines().count();
        let clap_usage = err.starts_with("error:") && err.contains("Usage:");
        if o.status.code() != Some(2)
            || !err.starts_with("error:")
            || (lines != 1 && !clap_usage)
            || err.contains("panicked")
            || !left.is_empty()
            || !gone.is_empty()
        {
            failures.push(format!("{c:?}\n  exit {:?}, left {left:?}, removed {gone:?}\n  {err}", o.status.code()));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// An existing folder where a file is expected.
fn out_dir_existing(f: &Fixture) -> String {
    let d = f.root.join("existing_dir");
    std::fs::create_dir_all(&d).unwrap();
    d.to_string_lossy().into_owned()
}
