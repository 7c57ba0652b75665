//! `elbo export`: a trained checkpoint as a flat weight blob for `no_std` devices
//! (`FILE.bin`, the layout of [`elbo_core::mlp`]).

use std::path::PathBuf;

use clap::Args;
use elbo_core::NoiseSchedule;
use elbo_core::mlp::{HEADER, STEP_BYTES, encode_header, encode_step};

use crate::error::{Result, input};
use crate::io::write_atomic;
use crate::model::Trained;

/// Arguments of `elbo export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A checkpoint directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Output: FILE.onnx (standard ONNX, opset 17), FILE.bin (weight blob for devices), or
    /// FILE.safetensors (the EMA weights alone: with the checkpoint's config.json beside it, a
    /// model folder for sample, eval and export, a quarter of the checkpoint's size).
    #[arg(long)]
    pub out: PathBuf,
}

/// The blob of a trained model (EMA weights, normalisation, schedule table).
pub fn blob(model: &Trained) -> Result<Vec<u8>> {
    let shape = model
        .net
        .device_shape()
        .ok_or_else(|| input("--model: this network family does not run on devices (no device blob)"))?;
    if shape.out != shape.dim {
        return Err(input("--model: a learned-variance model cannot be exported as a device blob"));
    }
    let schedule = model.schedule()?;
    let header = encode_header(&shape, model.prediction, schedule.steps())
        .ok_or_else(|| input("--model: a size does not fit the device blob's 32-bit header"))?;
    let mut b = Vec::with_capacity(HEADER + 4 * model.params.len() + STEP_BYTES * schedule.steps());
    b.extend_from_slice(&header);
    for v in model.normalization.mean.iter().chain(&model.normalization.std).chain(&model.params) {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let mut entry = [0u8; STEP_BYTES];
    for step in schedule.iter() {
        encode_step(step, &mut entry);
        b.extend_from_slice(&entry);
    }
    Ok(b)
}

/// `--out FILE.safetensors`: the EMA weights alone.
fn inference_weights(a: &ExportArgs) -> Result<()> {
    let _lock = crate::io::OutputLock::file(&a.out, "--out")?;
    let ckpt = crate::checkpoint::Checkpoint::load(&a.model, false)?;
    let bytes = ckpt.inference_weights()?;
    write_atomic(&a.out, &bytes)?;
    crate::note!("wrote {} ({} bytes)", a.out.display(), bytes.len());
    Ok(())
}

pub fn run(a: &ExportArgs) -> Result<()> {
    let onnx = match a.out.extension().and_then(|e| e.to_str()) {
        Some("bin") => false,
        Some("onnx") => true,
        Some("safetensors") => return inference_weights(a),
        _ => return Err(input(format!("--out {}: expected FILE.onnx, FILE.bin or FILE.safetensors", a.out.display()))),
    };
    let _lock = crate::io::OutputLock::file(&a.out, "--out")?;
    let model = Trained::load(&a.model)?;
    if onnx && model.has_learned_variance() {
        return Err(input("--model: learned-variance models are not exported to ONNX yet"));
    }
    if !onnx && model.config.schedule.is_continuous() {
        // the device network reads integer timesteps of a discrete table; the ONNX graph maps
        // its timestep input to the continuous time of the discretisation (`TimeInput`)
        return Err(input(format!(
            "--model {}: a continuous-time model (--schedule {}) cannot be exported as a device blob yet: \
             FILE.bin holds discrete schedules with integer timesteps (FILE.onnx can hold it)",
            a.model.display(),
            model.config.schedule.name
        )));
    }
    let bytes = if onnx {
        crate::onnx::export::onnx_bytes(&model)
            .ok_or_else(|| input("--model: this network family has no ONNX export yet"))?
    } else {
        blob(&model)?
    };
    if !onnx {
        // what is written must load on the device
        elbo_core::mlp::ModelBlob::parse(&bytes)
            .map_err(|e| input(format!("--model {}: the device cannot load this model ({e})", a.model.display())))?;
    }
    write_atomic(&a.out, &bytes)?;
    crate::note!("wrote {} ({} bytes)", a.out.display(), bytes.len());
    Ok(())
}
