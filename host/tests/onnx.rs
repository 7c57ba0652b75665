//! ONNX: the exported MLP run through ONNX Runtime matches the native forward pass to 1e-5
//! (int64 and float32 timesteps, conditional models with the null class); the command line
//! reports a missing runtime and an unavailable CUDA provider as bad input.
//!
//! Needs ONNX Runtime: `./test.sh` installs onnxruntime 1.31.1 into `.local/onnxruntime`.

use assert_cmd::Command;
use elbo::model::Trained;
use elbo::onnx::{OnnxDenoiser, OnnxOpts, export};
use elbo_core::NoiseSchedule;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};

fn opts() -> OnnxOpts {
    OnnxOpts::default()
}

fn compare(model: &mut Trained, onnx: &mut OnnxDenoiser, labels: Option<&[u32]>) {
    let sched = model.schedule().unwrap();
    let n = 37;
    let x: Vec<f32> = (0..2 * n).map(|i| ((i as f32) * 0.61).cos() * 2.0).collect();
    let mut worst = 0.0f32;
    for t in [1usize, 2, 100, 500, 1000] {
        let level = NoiseLevel::of(&sched.step(t).unwrap());
        for cond in [Condition::Unconditional, labels.map_or(Condition::Unconditional, Condition::Class)] {
            let (mut a, mut b) = (vec![0.0f32; 2 * n], vec![0.0f32; 2 * n]);
            model.predict(&x, level, cond, &mut a).unwrap();
            onnx.predict(&x, level, cond, &mut b).unwrap();
            for (p, q) in a.iter().zip(&b) {
                worst = worst.max((p - q).abs() / (1.0 + p.abs()));
            }
        }
    }
    assert!(worst < 1e-5, "worst relative difference {worst}");
}

#[test]
fn exported_models_match_the_native_forward_pass() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut shipped = Trained::load(&root.join("models/two-moons")).unwrap();
    for float_t in [false, true] {
        let path = dir.path().join(format!("m{float_t}.onnx"));
        std::fs::write(&path, export::onnx_bytes_with(&shipped, float_t).unwrap()).unwrap();
        let mut onnx = OnnxDenoiser::open(&path, &opts()).unwrap();
        assert_eq!(onnx.shape, vec![2]);
        assert_eq!(onnx.prediction(), elbo_core::Prediction::Eps);
        assert_eq!(onnx.normalization.as_ref(), Some(&shipped.normalization));
        assert_eq!(onnx.schedule.as_ref(), Some(&shipped.config.schedule));
        compare(&mut shipped, &mut onnx, None);
    }
    // A class-conditional model: the labels and the null class reach the graph.
    let ckpt = dir.path().join("cond");
    Command::cargo_bin("elbo")
        .unwrap()
        .args([
            "train",
            "--data",
            "two-moons",
            "--conditional",
            "--steps",
            "30",
            "--batch",
            "64",
            "--width",
            "32",
            "--out",
        ])
        .arg(&ckpt)
        .assert()
        .success();
    let mut cond = Trained::load(&ckpt).unwrap();
    let path = dir.path().join("cond.onnx");
    std::fs::write(&path, export::onnx_bytes(&cond).unwrap()).unwrap();
    let mut onnx = OnnxDenoiser::open(&path, &opts()).unwrap();
    assert_eq!(onnx.classes(), 2);
    let labels: Vec<u32> = (0..37).map(|i| i % 2).collect();
    compare(&mut cond, &mut onnx, Some(&labels));

    // Classifier-free guidance runs the pair in one call of 2N (the batch axis is dynamic),
    // with the results of two calls of N.
    use elbo_core::sampler::ClassifierFree;
    let sched = cond.schedule().unwrap();
    let level = NoiseLevel::of(&sched.step(300).unwrap());
    let x: Vec<f32> = (0..2 * 37).map(|i| ((i as f32) * 0.37).sin() * 1.5).collect();
    let (mut c, mut u, mut want) = (vec![0.0f32; x.len()], vec![0.0f32; x.len()], vec![0.0f32; x.len()]);
    onnx.predict(&x, level, Condition::Class(&labels), &mut c).unwrap();
    onnx.predict(&x, level, Condition::Unconditional, &mut u).unwrap();
    for ((w, c), u) in want.iter_mut().zip(&c).zip(&u) {
        *w = 3.0 * c + (1.0 - 3.0) * u;
    }
    let calls = onnx.calls;
    let mut buf = vec![0.0f32; x.len()];
    let mut got = vec![0.0f32; x.len()];
    ClassifierFree::new(&mut onnx, 3.0, &mut buf)
        .unwrap()
        .predict(&x, level, Condition::Class(&labels), &mut got)
        .unwrap();
    assert_eq!(onnx.calls, calls + 1, "guidance made more than one call");
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0f32, f32::max);
    assert!(worst < 1e-6, "one call of 2N differs from two calls by {worst}");
}

#[test]
fn missing_runtime_and_unavailable_cuda_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/two-moons");
    let onnx = dir.path().join("m.onnx");
    Command::cargo_bin("elbo")
        .unwrap()
        .args(["export", "--model"])
        .arg(&model)
        .arg("--out")
        .arg(&onnx)
        .assert()
        .success();
    let out = dir.path().join("s.csv");
    let run = |env: Option<&str>, ep: &str| {
        let mut c = Command::cargo_bin("elbo").unwrap();
        c.args(["sample", "--n", "4", "--ep", ep, "--model"]).arg(&onnx).arg("--out").arg(&out);
        if let Some(v) = env {
            c.env("ORT_DYLIB_PATH", v);
        }
        c.output().unwrap()
    };
    let o = run(Some("/nonexistent/libonnxruntime.so"), "cpu");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ORT_DYLIB_PATH") && err.contains("pip install"), "{err}");
    // The CPU package has no CUDA provider: --ep cuda must fail loudly, not fall back.
    let o = run(None, "cuda");
    let err = String::from_utf8_lossy(&o.stderr);
    if o.status.success() {
        // A machine with onnxruntime-gpu and a GPU: the samples were drawn on CUDA.
        assert!(out.exists());
    } else {
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("--ep cuda"), "{err}");
        assert!(!out.exists());
    }
    let o = run(None, "auto");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--ep auto: using the"));
}

/// The shipped `model.onnx` is the export of the shipped checkpoint (export is deterministic).
#[test]
fn shipped_onnx_is_the_export_of_the_shipped_checkpoint() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/two-moons");
    let model = Trained::load(&dir).unwrap();
    assert!(export::onnx_bytes(&model).unwrap() == std::fs::read(dir.join("model.onnx")).unwrap());
}

/// Rewrites an ONNX file exported by elbo (its proto types cover everything the export writes).
fn rewrite(from: &std::path::Path, to: &std::path::Path, edit: impl FnOnce(&mut elbo::onnx::proto::ModelProto)) {
    use prost::Message;
    let mut m = elbo::onnx::proto::ModelProto::decode(std::fs::read(from).unwrap().as_slice()).unwrap();
    edit(&mut m);
    std::fs::write(to, m.encode_to_vec()).unwrap();
}

/// An ONNX model runs from flags alone: `--classes N` for a class input without `elbo.classes`
/// metadata, `--shape C,H,W` for an input with open height and width. Each gives the same
/// samples, bit for bit, as the self-describing file; without the flag, or with one that
/// contradicts the model, the command exits 2 naming the flag.
#[test]
fn onnx_models_run_from_flags() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let elbo = || Command::cargo_bin("elbo").unwrap();
    let sample = |model: &std::path::Path, extra: &[&str], out: &str| {
        elbo()
            .args(["-q", "sample", "--sampler", "ddim", "--steps", "5", "--seed", "3", "--model"])
            .arg(model)
            .args(extra)
            .arg("--out")
            .arg(p(out))
            .output()
            .unwrap()
    };
    // --classes
    elbo()
        .args(["-q", "train", "--data", "two-moons", "--conditional", "--steps", "30", "--out"])
        .arg(p("c"))
        .assert()
        .success();
    elbo().args(["-q", "export", "--model"]).arg(p("c")).arg("--out").arg(p("c.onnx")).assert().success();
    rewrite(&p("c.onnx"), &p("bare.onnx"), |m| m.metadata_props.retain(|e| e.key != "elbo.classes"));
    let o = sample(&p("bare.onnx"), &["--class", "1", "--n", "20"], "x.npy");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give --classes N"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(sample(&p("c.onnx"), &["--class", "1", "--n", "20"], "a.npy").status.success());
    assert!(sample(&p("bare.onnx"), &["--classes", "2", "--class", "1", "--n", "20"], "b.npy").status.success());
    assert_eq!(std::fs::read(p("a.npy")).unwrap(), std::fs::read(p("b.npy")).unwrap());
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/two-moons/model.onnx");
    let o = sample(&shipped, &["--classes", "2", "--n", "5"], "y.npy");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--classes"));

    // --shape
    elbo()
        .args(["-q", "train", "--data", "digits", "--steps", "2", "--batch", "8", "--channels", "8", "--mults", "1,2"])
        .args(["--blocks", "1", "--attention", "false", "--groups", "4", "--out"])
        .arg(p("u"))
        .assert()
        .success();
    elbo().args(["-q", "export", "--model"]).arg(p("u")).arg("--out").arg(p("u.onnx")).assert().success();
    rewrite(&p("u.onnx"), &p("open.onnx"), |m| {
        let g = m.graph.as_mut().unwrap();
        let input = g.input.iter_mut().find(|i| i.name == "sample").unwrap();
        let dims = &mut input.r#type.as_mut().unwrap().tensor_type.as_mut().unwrap().shape.as_mut().unwrap().dim;
        for (d, name) in dims[2..].iter_mut().zip(["height", "width"]) {
            *d = elbo::onnx::proto::Dimension { dim_value: None, dim_param: Some(name.into()) };
        }
    });
    let o = sample(&p("open.onnx"), &["--n", "2"], "z.npy");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give --shape"), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(sample(&p("u.onnx"), &["--n", "2"], "fixed.npy").status.success());
    assert!(sample(&p("open.onnx"), &["--n", "2", "--shape", "1,8,8"], "open.npy").status.success());
    assert_eq!(std::fs::read(p("fixed.npy")).unwrap(), std::fs::read(p("open.npy")).unwrap());
    let o = sample(&p("u.onnx"), &["--n", "2", "--shape", "1,9,9"], "w.npy");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fixes its example shape"));
    let o = sample(&p("open.onnx"), &["--n", "2", "--shape", "8,8"], "v.npy");
    assert_eq!(o.status.code(), Some(2));
}

/// A model whose timestep input is a scalar or `[1]` (one timestep for the batch) is fed that,
/// not `[N]`: a two-node graph `out = sample + float(timestep)` gives exactly `x + (t - 1)`,
/// for an int64 and a float32 timestep, where `[N]` failed to broadcast inside ONNX Runtime.
#[test]
fn timestep_inputs_of_every_rank() {
    use elbo::onnx::proto::*;
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let value = |name: &str, elem: i32, dims: Vec<Dimension>| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor { elem_type: elem, shape: Some(TensorShapeProto { dim: dims }) }),
        }),
    };
    let fixed = |v: i64| Dimension { dim_value: Some(v), dim_param: None };
    let batch = || Dimension { dim_value: None, dim_param: Some("N".into()) };
    for (elem, dims) in [(INT64, vec![]), (INT64, vec![fixed(1)]), (FLOAT, vec![]), (FLOAT, vec![fixed(1)])] {
        let cast = NodeProto {
            input: vec!["timestep".into()],
            output: vec!["t".into()],
            name: "cast".into(),
            op_type: "Cast".into(),
            attribute: vec![AttributeProto {
                name: "to".into(),
                i: i64::from(FLOAT),
                r#type: ATTR_INT,
                ..Default::default()
            }],
        };
        let add = NodeProto {
            input: vec!["sample".into(), "t".into()],
            output: vec!["out_sample".into()],
            name: "add".into(),
            op_type: "Add".into(),
            attribute: vec![],
        };
        let model = ModelProto {
            ir_version: 8,
            producer_name: "elbo test".into(),
            graph: Some(GraphProto {
                node: vec![cast, add],
                name: "g".into(),
                input: vec![value("sample", FLOAT, vec![batch(), fixed(2)]), value("timestep", elem, dims.clone())],
                output: vec![value("out_sample", FLOAT, vec![batch(), fixed(2)])],
                ..Default::default()
            }),
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
            metadata_props: vec![StringStringEntryProto { key: "elbo.prediction".into(), value: "eps".into() }],
            ..Default::default()
        };
        let path = dir.path().join("t.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        let mut den = OnnxDenoiser::open(&path, &opts()).unwrap();
        let sched = elbo_core::Schedule::<1000>::new(&elbo_core::BetaSchedule::SquaredCosCapV2, 1000, false).unwrap();
        let x: Vec<f32> = (0..10).map(|i| i as f32 * 0.25).collect();
        for t in [1usize, 17, 1000] {
            let mut out = vec![0.0f32; x.len()];
            den.predict(&x, NoiseLevel::of(&sched.step(t).unwrap()), Condition::Unconditional, &mut out).unwrap();
            let want: Vec<f32> = x.iter().map(|v| v + (t - 1) as f32).collect();
            assert_eq!(out, want, "timestep {elem} {dims:?} at t = {t}");
        }
    }
}
