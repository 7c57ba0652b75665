//! The trained MLP as a standard ONNX graph (opset 17, dynamic batch): inputs `sample`
//! `[N, D]` float32, `timestep` `[N]` int64 (0-based, `t - 1`) and, for class-conditional
//! models, `class_labels` `[N]` int64 (the null class is `classes`); output `out_sample`.
//! The metadata (`elbo.prediction`, `elbo.schedule` as a diffusers scheduler config,
//! `elbo.normalization`, `elbo.classes`) makes the file self-describing.

use elbo_core::mlp::embedding_frequency;
use prost::Message;

use elbo_core::Prediction;
use elbo_core::mlp::Shape;

use super::proto::*;
use crate::model::Trained;
use crate::network::{OnnxGraph, TimeInput};

pub(super) fn tensor(name: &str, dims: &[usize], data: &[f32]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        name: name.into(),
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

pub(super) fn tensor_i64(name: &str, dims: &[usize], data: &[i64]) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: INT64,
        name: name.into(),
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

pub(super) fn node(op: &str, inputs: &[&str], output: &str, attrs: &[(&str, i64)]) -> NodeProto {
    let attrs =
        attrs.iter().map(|(n, v)| AttributeProto { name: (*n).into(), i: *v, r#type: ATTR_INT, ..Default::default() });
    node_with(op, inputs, output, attrs.collect())
}

/// A node with any attributes (see [`attr_ints`], [`attr_float`], [`attr_string`]).
pub(super) fn node_with(op: &str, inputs: &[&str], output: &str, attribute: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: format!("{op}_{output}"),
        op_type: op.into(),
        attribute,
    }
}

/// An attribute of integers.
pub(super) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: ATTR_INTS, ..Default::default() }
}

/// An attribute of one integer.
pub(super) fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: v, r#type: ATTR_INT, ..Default::default() }
}

/// A float attribute.
pub(super) fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f: v, r#type: ATTR_FLOAT, ..Default::default() }
}

/// A string attribute.
pub(super) fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto { name: name.into(), s: v.as_bytes().to_vec(), r#type: ATTR_STRING, ..Default::default() }
}

pub(super) fn value_info(name: &str, elem: i32, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Some(v) => Dimension { dim_value: Some(*v as i64), dim_param: None },
            None => Dimension { dim_value: None, dim_param: Some("N".into()) },
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor { elem_type: elem, shape: Some(TensorShapeProto { dim }) }),
        }),
    }
}

/// The ONNX file of a trained model (EMA weights), with an int64 timestep input; `None` where
/// the network has no ONNX export.
pub fn onnx_bytes(model: &Trained) -> Option<Vec<u8>> {
    onnx_bytes_with(model, false)
}

/// The nodes of the sinusoidal time embedding (the core's `mlp::time_embedding`, `[cos, sin]`)
/// of the input `timestep` (cast to float32; for a continuous-time model `1000 (k + 1) / T`,
/// see [`TimeInput`]), as `t_emb` `[N, e]`.
pub(super) fn time_embedding(e: usize, time: TimeInput, init: &mut Vec<TensorProto>, nodes: &mut Vec<NodeProto>) {
    let half = e / 2;
    let freqs: Vec<f32> = (0..half).map(|k| embedding_frequency(k, half)).collect();
    init.extend([tensor("freqs", &[1, half], &freqs), tensor_i64("axis1", &[1], &[1])]);
    match time.continuous_steps {
        // (k + 1) 1000 is a whole number below 2^24 (exact in f32), then one rounded division
        Some(steps) => {
            init.extend([
                tensor("t_one", &[1], &[1.0]),
                tensor("t_thousand", &[1], &[1000.0]),
                tensor("t_steps", &[1], &[steps as f32]),
            ]);
            nodes.extend([
                node("Cast", &["timestep"], "t_in", &[("to", i64::from(FLOAT))]),
                node("Add", &["t_in", "t_one"], "t_next", &[]),
                node("Mul", &["t_next", "t_thousand"], "t_scaled", &[]),
                node("Div", &["t_scaled", "t_steps"], "t_float", &[]),
            ]);
        }
        None => nodes.push(node("Cast", &["timestep"], "t_float", &[("to", i64::from(FLOAT))])),
    }
    nodes.extend([
        node("Unsqueeze", &["t_float", "axis1"], "t_col", &[]),
        node("Mul", &["t_col", "freqs"], "t_args", &[]),
        node("Cos", &["t_args"], "t_cos", &[]),
        node("Sin", &["t_args"], "t_sin", &[]),
        node("Concat", &["t_cos", "t_sin"], "t_emb", &[("axis", 1)]),
    ]);
}

/// The ONNX graph of an MLP of `shape` with `params` (see [`crate::network::Network::onnx_graph`]).
pub(crate) fn mlp_graph(shape: &Shape, params: &[f32], time: TimeInput) -> OnnxGraph {
    let (d, e) = (shape.dim, shape.embed);
    let (mut init, mut nodes) = (vec![], vec![]);
    time_embedding(e, time, &mut init, &mut nodes);
    let mut emb = "t_emb".to_string();
    let t_type = if time.float { FLOAT } else { INT64 };
    let mut inputs = vec![value_info("sample", FLOAT, &[None, Some(d)]), value_info("timestep", t_type, &[None])];
    if let Some(off) = shape.class_table() {
        let n = (shape.classes + 1) * e;
        init.push(tensor("class_embedding", &[shape.classes + 1, e], &params[off..off + n]));
        nodes.push(node("Gather", &["class_embedding", "class_labels"], "c_emb", &[("axis", 0)]));
        nodes.push(node("Add", &["t_emb", "c_emb"], "tc_emb", &[]));
        emb = "tc_emb".into();
        inputs.push(value_info("class_labels", INT64, &[None]));
    }
    nodes.push(node("Concat", &["sample", &emb], "h0", &[("axis", 1)]));
    let mut h = "h0".to_string();
    for (i, l) in shape.layers().enumerate() {
        let (w_name, b_name) = (format!("layers.{i}.weight"), format!("layers.{i}.bias"));
        init.push(tensor(&w_name, &[l.n_in, l.n_out], &params[l.weight..l.weight + l.n_in * l.n_out]));
        init.push(tensor(&b_name, &[l.n_out], &params[l.bias..l.bias + l.n_out]));
        let z = if i == shape.depth { "out_sample".to_string() } else { format!("z{i}") };
        nodes.push(node("Gemm", &[&h, &w_name, &b_name], &z, &[]));
        if i < shape.depth {
            let (sg, a) = (format!("sig{i}"), format!("h{}", i + 1));
            nodes.push(node("Sigmoid", &[&z], &sg, &[]));
            nodes.push(node("Mul", &[&z, &sg], &a, &[]));
            h = a;
        }
    }
    OnnxGraph {
        family: "MLP",
        nodes,
        initializers: init,
        inputs,
        output: value_info("out_sample", FLOAT, &[None, Some(shape.out)]),
    }
}

/// The ONNX file of a trained model; `float_timestep` declares the timestep input float32
/// (as some exporters do) instead of int64. `None` where the network has no ONNX export.
pub fn onnx_bytes_with(model: &Trained, float_timestep: bool) -> Option<Vec<u8>> {
    let s = &model.config.schedule;
    let continuous = s.is_continuous();
    let time = TimeInput { float: float_timestep, continuous_steps: continuous.then_some(s.timesteps) };
    let g = model.net.onnx_graph(&model.params, time)?;
    let classes = model.net.classes();
    let schedule = if continuous {
        // the discretisation the native model samples on (abar_k = sigmoid(lambda(k / T)), in
        // f64), as diffusers' trained_betas: beta_k = 1 - abar_k / abar_{k-1}, abar_0 = 1
        use elbo_core::schedule::LogSnrSchedule;
        let c = model.continuous()?.ok()?;
        let mut prev = 1.0f64;
        let betas: Vec<f64> = (1..=s.timesteps)
            .map(|k| {
                let abar = 1.0 / (1.0 + (-c.log_snr(k as f64 / s.timesteps as f64)).exp());
                let b = 1.0 - abar / prev;
                prev = abar;
                b
            })
            .collect();
        serde_json::json!({
            "_class_name": "DDPMScheduler",
            "num_train_timesteps": s.timesteps,
            "trained_betas": betas,
        })
    } else {
        serde_json::json!({
            "_class_name": "DDPMScheduler",
            "num_train_timesteps": s.timesteps,
            "beta_schedule": s.name.name(),
            "beta_start": s.beta_start,
            "beta_end": s.beta_end,
            "rescale_betas_zero_snr": s.zero_terminal_snr,
        })
    };
    let mut schedule = schedule;
    // diffusers' names; it has none for a score model (elbo.prediction says score)
    let diffusers_type = match model.prediction {
        Prediction::Eps => Some("epsilon"),
        Prediction::X0 => Some("sample"),
        Prediction::V => Some("v_prediction"),
        Prediction::Score => None,
    };
    if let Some(t) = diffusers_type {
        schedule["prediction_type"] = t.into();
    }
    // how elbo samples it, in diffusers' keys (so diffusers' defaults never apply instead)
    let variance = if elbo_core::denoiser::Denoiser::has_variance(model) { "learned_range" } else { "fixed_small" };
    for (k, v) in [
        ("timestep_spacing", serde_json::json!("trailing")),
        ("steps_offset", 0.into()),
        ("set_alpha_to_one", true.into()),
        ("clip_sample", false.into()),
        ("thresholding", false.into()),
        ("variance_type", variance.into()),
    ] {
        schedule[k] = v;
    }
    let meta = [
        ("elbo.prediction", model.prediction.name().to_string()),
        ("elbo.schedule", schedule.to_string()),
        ("elbo.normalization", serde_json::to_string(&model.normalization).unwrap_or_default()),
        ("elbo.classes", classes.to_string()),
    ];
    let m = ModelProto {
        ir_version: 8,
        producer_name: "elbo".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{} denoiser exported by elbo", g.family),
        graph: Some(GraphProto {
            node: g.nodes,
            name: format!("elbo_{}", g.family.to_lowercase().replace('-', "")),
            initializer: g.initializers,
            input: g.inputs,
            output: vec![g.output],
        }),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        metadata_props: meta.into_iter().map(|(k, v)| StringStringEntryProto { key: k.into(), value: v }).collect(),
    };
    Some(m.encode_to_vec())
}

/// Broken models for tests of the command line's error handling: `"wide"` outputs twice the
/// input's width, `"nan"` outputs `(x - x) / 0`. Inputs `sample` `[N, 2]`, `timestep` `[N]` int64.
#[doc(hidden)]
pub fn broken_model(kind: &str) -> Vec<u8> {
    let mut init = vec![];
    let nodes = if kind == "wide" {
        vec![node("Concat", &["sample", "sample"], "out_sample", &[("axis", 1)])]
    } else {
        init.push(tensor("zero", &[1], &[0.0]));
        vec![node("Sub", &["sample", "sample"], "d", &[]), node("Div", &["d", "zero"], "out_sample", &[])]
    };
    let out_dim = if kind == "wide" { 4 } else { 2 };
    let m = ModelProto {
        ir_version: 8,
        producer_name: "elbo-test".into(),
        producer_version: String::new(),
        doc_string: String::new(),
        graph: Some(GraphProto {
            node: nodes,
            name: "broken".into(),
            initializer: init,
            input: vec![value_info("sample", FLOAT, &[None, Some(2)]), value_info("timestep", INT64, &[None])],
            output: vec![value_info("out_sample", FLOAT, &[None, Some(out_dim)])],
        }),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        metadata_props: vec![StringStringEntryProto { key: "elbo.prediction".into(), value: "eps".into() }],
    };
    m.encode_to_vec()
}
