//! ONNX denoisers through ONNX Runtime (`ort` with `load-dynamic`: no native library at build
//! time), and export of trained models to ONNX.
//!
//! The runtime library is found, in order, at `ORT_DYLIB_PATH`, in a project-local
//! `.local/onnxruntime` (`python3 -m pip install --target .local/onnxruntime onnxruntime==1.31.1`,
//! as `./test.sh` does) next to the working directory or the executable, or in the `onnxruntime`
//! (or `onnxruntime-gpu`) package of the system's Python.

pub mod export;
pub mod proto;
pub mod scheduler;
pub mod unet;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Args;
use elbo_core::Prediction;
use elbo_core::denoiser::{Condition, Denoiser, NoiseLevel};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};

use crate::checkpoint::ScheduleConfig;
use crate::data::Normalization;
use crate::error::{Error, Result, input};
use crate::kinds::ExecutionProvider;
use scheduler::{Origin, SamplerDefaults};

/// ONNX options of `sample` and `eval`.
#[derive(Debug, Clone, Args)]
pub struct OnnxOpts {
    /// The model's data input.
    #[arg(long, default_value = "sample")]
    pub input_sample: String,
    /// The model's timestep input (int64 or float32, 0-based; [N], [1] or a scalar, as it declares).
    #[arg(long, default_value = "timestep")]
    pub input_timestep: String,
    /// The model's class input (int64), if it has one.
    #[arg(long, default_value = "class_labels")]
    pub input_class: String,
    /// The prediction output (default: the first output).
    #[arg(long)]
    pub output: Option<String>,
    /// The label meaning "no condition" (default: the number of classes).
    #[arg(long)]
    pub null_class: Option<i64>,
    /// The number of classes of a model with a class input (overrides the elbo.classes
    /// metadata; needed without it).
    #[arg(long)]
    pub classes: Option<usize>,
    /// The example shape, e.g. 1,28,28, of a model whose input leaves it open (dynamic height
    /// and width); a fixed one must agree.
    #[arg(long, value_delimiter = ',')]
    pub shape: Option<Vec<usize>>,
    /// eps, x0 or v (overrides the model's elbo.prediction metadata).
    #[arg(long)]
    pub prediction: Option<String>,
    /// A diffusers scheduler_config.json (overrides the model's elbo.schedule metadata).
    #[arg(long)]
    pub scheduler_config: Option<PathBuf>,
    /// Execution provider: cpu, cuda (fails if CUDA is unavailable) or auto.
    #[arg(long, value_enum, default_value_t = ExecutionProvider::Cpu)]
    pub ep: ExecutionProvider,
    /// ONNX Runtime intra-op threads (default: ONNX Runtime's choice).
    #[arg(long = "threads")]
    pub ort_threads: Option<usize>,
}

impl Default for OnnxOpts {
    /// The command line's defaults (diffusers' names, CPU).
    fn default() -> Self {
        OnnxOpts {
            input_sample: "sample".into(),
            input_timestep: "timestep".into(),
            input_class: "class_labels".into(),
            output: None,
            null_class: None,
            classes: None,
            shape: None,
            prediction: None,
            scheduler_config: None,
            ep: ExecutionProvider::Cpu,
            ort_threads: None,
        }
    }
}

const HOW: &str = "install it with `python3 -m pip install --target .local/onnxruntime onnxruntime==1.31.1` in the \
                   project folder (./test.sh does), or set ORT_DYLIB_PATH to libonnxruntime.so";

fn lib_in(capi: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
        .collect();
    found.sort();
    found.pop()
}

/// Finds `libonnxruntime.so`.
pub fn find_runtime() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(input(format!("ORT_DYLIB_PATH={}: no such file; {HOW}", p.display())))
        };
    }
    let mut bases: Vec<PathBuf> = std::env::current_dir().into_iter().collect();
    if let Ok(exe) = std::env::current_exe() {
        bases.extend(exe.ancestors().skip(1).take(4).map(Path::to_path_buf));
    }
    for b in bases {
        if let Some(l) = lib_in(&b.join(".local/onnxruntime/onnxruntime/capi")) {
            return Ok(l);
        }
    }
    let py = std::process::Command::new("python3")
        .args(["-c", "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))"])
        .output();
    if let Ok(out) = py {
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success()
            && let Some(l) = lib_in(&Path::new(&dir).join("capi"))
        {
            return Ok(l);
        }
    }
    Err(input(format!("ONNX Runtime was not found: {HOW}")))
}

static ENV: OnceLock<std::result::Result<Environment, String>> = OnceLock::new();

fn environment() -> Result<&'static Environment> {
    let lib = find_runtime()?;
    ENV.get_or_init(|| {
        let logger: ort::logging::LoggerFunction = std::sync::Arc::new(|level, category, _, location, message| {
            // ONNX Runtime's own log only with --verbose: its failures are reported in one line
            if crate::progress::verbose() {
                eprintln!("onnxruntime {level:?} [{category}] {location}: {message}");
            }
        });
        ort::init_from(&lib)
            .map_err(|e| format!("loading {}: {e}", lib.display()))
            .and_then(|b| b.with_name("elbo").with_logger(logger).build().map_err(|e| e.to_string()))
    })
    .as_ref()
    .map_err(|e| Error::Internal(anyhow::anyhow!("ONNX Runtime: {e}")))
}

fn ort_err(e: impl std::fmt::Display) -> Error {
    Error::Internal(anyhow::anyhow!("ONNX Runtime: {e}"))
}

/// The first line of an ONNX Runtime message (its messages can span many lines).
fn first_line(e: impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().trim().to_string()
}

/// An ONNX model as the core's [`Denoiser`].
pub struct OnnxDenoiser {
    path: PathBuf,
    session: Session,
    sample: String,
    timestep: String,
    timestep_int: bool,
    /// The timestep input's declared shape, fed accordingly: `[N]` (one per example), `[1]` or
    /// a scalar (one for the batch: every call is at one noise level).
    timestep_shape: TimestepShape,
    class: Option<String>,
    output: String,
    /// The shape of one example (from the model's input, or set by `--init`).
    pub shape: Vec<usize>,
    prediction: Prediction,
    classes: usize,
    null_class: i64,
    /// The schedule (metadata or `--scheduler-config`), if known.
    pub schedule: Option<ScheduleConfig>,
    /// What the scheduler config says of sampling.
    pub sampling: SamplerDefaults,
    /// The data normalisation (metadata, else identity).
    pub normalization: Option<Normalization>,
    /// The execution provider in use.
    pub provider: &'static str,
    labels: Vec<i64>,
    /// Time spent inside `Session::run` so far (for benchmarks).
    pub run_time: std::time::Duration,
    /// `Session::run` calls so far.
    pub calls: u64,
    /// Whether the sample input's batch axis is dynamic (guidance then runs in one call of 2N).
    batch_dynamic: bool,
}

fn builder(threads: Option<usize>) -> Result<ort::session::builder::SessionBuilder> {
    let mut b = Session::builder(environment()?).map_err(ort_err)?;
    if let Some(t) = threads {
        b = b.with_intra_threads(t).map_err(ort_err)?;
    }
    Ok(b)
}

/// The keys of elbo's ONNX metadata.
pub const METADATA_KEYS: [&str; 4] = ["elbo.prediction", "elbo.schedule", "elbo.normalization", "elbo.classes"];

/// What an ONNX model's `elbo.*` metadata says, completed or overridden by the flags.
#[derive(Debug, Clone)]
pub struct Metadata {
    /// The prediction kind.
    pub prediction: Prediction,
    /// The schedule, if known.
    pub schedule: Option<ScheduleConfig>,
    /// The data normalisation, if given.
    pub normalization: Option<Normalization>,
    /// The number of classes (0: unconditional).
    pub classes: usize,
    /// What the scheduler config says of sampling.
    pub sampling: SamplerDefaults,
}

impl Metadata {
    /// Interprets and validates the metadata `meta` of the model at `path` whose example shape
    /// is `shape` (empty when dynamic) and which has a class input or not.
    pub fn interpret(
        meta: &std::collections::HashMap<String, String>,
        o: &OnnxOpts,
        shape: &[usize],
        has_class: bool,
        path: &Path,
    ) -> Result<Self> {
        let bad = |what: String| input(format!("--model {}: {what}", path.display()));
        let class = has_class.then_some(());
        let get = |k: &str| meta.get(k).cloned();
        let config = match &o.scheduler_config {
            Some(p) => {
                // diffusers users name the folder: its scheduler_config.json
                let p = &if p.is_dir() { p.join("scheduler_config.json") } else { p.clone() };
                let text = std::fs::read_to_string(p)
                    .map_err(|e| input(format!("--scheduler-config {}: {e}", p.display())))?;
                Some(scheduler::read(&text, &format!("--scheduler-config {}", p.display()), Origin::Diffusers)?)
            }
            None => match get("elbo.schedule") {
                Some(text) => Some(scheduler::read(&text, "elbo.schedule metadata", Origin::Elbo)?),
                None => None,
            },
        };
        // --prediction, else the config's prediction_type, else elbo.prediction, else diffusers'
        // default (epsilon) where a diffusers config was given
        let prediction =
            match (&o.prediction, config.as_ref().and_then(|c| c.sampling.prediction), get("elbo.prediction")) {
                (Some(name), _, _) => Prediction::from_name(name)
                    .map_err(|_| input(format!("--prediction: expected eps, x0 or v, found '{name}'")))?,
                (None, Some(p), _) => p,
                (None, None, Some(name)) => Prediction::from_name(&name)
                    .map_err(|_| bad(format!("elbo.prediction metadata '{name}' is not eps, x0, v or score")))?,
                (None, None, None) if o.scheduler_config.is_some() => Prediction::Eps,
                (None, None, None) => {
                    return Err(bad(
                        "says nothing of its prediction (no elbo.prediction metadata): give --prediction eps|x0|v \
                     or --scheduler-config with its prediction_type"
                            .into(),
                    ));
                }
            };
        let sampling = config.as_ref().map(|c| c.sampling).unwrap_or_default();
        let schedule = config.map(|c| c.schedule);
        let normalization: Option<Normalization> = match get("elbo.normalization") {
            Some(t) => Some(
                serde_json::from_str(&t).map_err(|e| bad(format!("elbo.normalization metadata is not valid ({e})")))?,
            ),
            None => None,
        };
        if let Some(nz) = &normalization {
            let dim: usize = shape.iter().product();
            let ok_len = nz.mean.len() == nz.std.len() && (shape.is_empty() || nz.mean.len() == dim);
            let ok_values = nz.mean.iter().all(|v| v.is_finite()) && nz.std.iter().all(|s| s.is_finite() && *s > 0.0);
            if nz.mean.is_empty() || !ok_len || !ok_values {
                return Err(bad(format!(
                    "elbo.normalization metadata: expected {} finite means and as many positive stds",
                    if shape.is_empty() { "the data's number of".to_string() } else { dim.to_string() }
                )));
            }
        }
        let classes: usize = match (o.classes, get("elbo.classes")) {
            (Some(_), _) if class.is_none() => {
                return Err(input(format!(
                    "--classes: the model {} has no class input '{}' (see --input-class)",
                    path.display(),
                    o.input_class
                )));
            }
            (Some(c), _) if c == 0 || c >= 1 << 24 => {
                return Err(input(format!("--classes: expected a number of classes in 1..2^24, found {c}")));
            }
            (Some(c), _) => c,
            (None, Some(c)) => c
                .parse()
                .ok()
                .filter(|&c: &usize| c < 1 << 24)
                .ok_or_else(|| bad("elbo.classes metadata is not a number of classes".into()))?,
            (None, None) if class.is_some() => {
                return Err(bad("has a class input but no elbo.classes metadata: give --classes N".into()));
            }
            (None, None) => 0,
        };
        Ok(Metadata { prediction, schedule, normalization, classes, sampling })
    }
}

/// How a model takes its timestep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimestepShape {
    /// `[N]`: one per example (diffusers' and optimum's exports).
    PerExample,
    /// `[1]`: one for the batch.
    One,
    /// A scalar: one for the batch.
    Scalar,
}

impl OnnxDenoiser {
    /// Fixes the example shape of a model whose input is dynamic (from `--init` or the data),
    /// checked against its normalisation.
    pub fn set_shape(&mut self, shape: &[usize]) -> Result<()> {
        let dim: usize = shape.iter().product();
        if let Some(nz) = &self.normalization
            && nz.mean.len() != dim
        {
            return Err(input(format!(
                "--model {}: its elbo.normalization has {} values, the data's examples {dim}",
                self.path.display(),
                nz.mean.len()
            )));
        }
        self.shape = shape.to_vec();
        Ok(())
    }

    /// Opens `path` with the options' names and execution provider.
    pub fn open(path: &Path, o: &OnnxOpts) -> Result<Self> {
        let bad = |what: String| input(format!("--model {}: {what}", path.display()));
        if !path.is_file() {
            return Err(bad("no such file".into()));
        }
        let (session, provider) = match o.ep {
            ExecutionProvider::Cpu => (
                builder(o.ort_threads)?
                    .commit_from_file(path)
                    .map_err(|e| bad(format!("not a loadable ONNX model ({})", first_line(e))))?,
                "cpu",
            ),
            ExecutionProvider::Cuda | ExecutionProvider::Auto => {
                let cuda = ort::ep::CUDA::default().build().error_on_failure();
                match builder(o.ort_threads)?.with_execution_providers([cuda]) {
                    Ok(mut b) => (
                        b.commit_from_file(path)
                            .map_err(|e| bad(format!("not a loadable ONNX model ({})", first_line(e))))?,
                        "cuda",
                    ),
                    Err(e) if o.ep == ExecutionProvider::Auto => {
                        crate::note!("--ep auto: CUDA is not available ({e}); using the CPU");
                        (
                            builder(o.ort_threads)?
                                .commit_from_file(path)
                                .map_err(|e| bad(format!("not a loadable ONNX model ({})", first_line(e))))?,
                            "cpu",
                        )
                    }
                    Err(e) => {
                        return Err(input(format!(
                            "--ep cuda: the CUDA execution provider could not be registered ({e}); it needs \
                             onnxruntime-gpu 1.31.1 with the nvidia CUDA 13 and cuDNN 9 wheels on the library path"
                        )));
                    }
                }
            }
        };
        if o.ep == ExecutionProvider::Auto {
            crate::note!("--ep auto: using the {provider} execution provider");
        }
        let find = |name: &str| session.inputs().iter().find(|i| i.name() == name).map(|i| i.dtype().clone());
        let sample_ty = find(&o.input_sample)
            .ok_or_else(|| bad(format!("has no input '{}' (see --input-sample)", o.input_sample)))?;
        let batch_dynamic =
            matches!(&sample_ty, ValueType::Tensor { shape, .. } if shape.first().is_some_and(|&b| b <= 0));
        let shape = match &sample_ty {
            ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => {
                let dims: Vec<i64> = shape.iter().copied().collect();
                if dims.len() >= 2 && dims[1..].iter().all(|&d| d > 0) {
                    let shape: Vec<usize> = dims[1..].iter().map(|&d| d as usize).collect();
                    if crate::io::product(&shape).is_none_or(|n| n > 1 << 31) {
                        return Err(bad(format!("input '{}' has an absurd example shape {shape:?}", o.input_sample)));
                    }
                    shape
                } else {
                    vec![]
                }
            }
            _ => return Err(bad(format!("input '{}' must be a float32 tensor [N, ...]", o.input_sample))),
        };
        let shape = match (&o.shape, &sample_ty) {
            (None, _) => shape,
            (Some(given), _) if given.is_empty() || given.contains(&0) => {
                return Err(input(format!("--shape: expected positive sizes like 1,28,28, found {given:?}")));
            }
            (Some(given), _) if !shape.is_empty() && *given != shape => {
                return Err(input(format!(
                    "--shape {}: the model {} fixes its example shape at {shape:?}",
                    given.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
                    path.display()
                )));
            }
            (Some(given), ValueType::Tensor { shape: declared, .. }) => {
                // the declared rank (batch axis included) and every fixed size must agree
                let dims: Vec<i64> = declared.iter().copied().collect();
                let fits = dims.len() == given.len() + 1
                    && dims[1..].iter().zip(given).all(|(&d, &g)| d <= 0 || d as usize == g);
                if !fits || crate::io::product(given).is_none_or(|n| n > 1 << 31) {
                    return Err(input(format!(
                        "--shape {given:?}: does not fit the model's input '{}' of shape {dims:?} (-1: open)",
                        o.input_sample
                    )));
                }
                given.clone()
            }
            _ => shape,
        };
        let (timestep_int, timestep_shape) = match find(&o.input_timestep) {
            Some(ValueType::Tensor { ty, shape, .. })
                if matches!(ty, TensorElementType::Int64 | TensorElementType::Float32) =>
            {
                let dims: Vec<i64> = shape.iter().copied().collect();
                let ts = match dims.as_slice() {
                    [] => TimestepShape::Scalar,
                    [1] => TimestepShape::One,
                    [_] => TimestepShape::PerExample,
                    _ => {
                        return Err(bad(format!(
                            "input '{}' has shape {dims:?}: expected a scalar, [1] or [N]",
                            o.input_timestep
                        )));
                    }
                };
                (ty == TensorElementType::Int64, ts)
            }
            Some(_) => return Err(bad(format!("input '{}' must be int64 or float32", o.input_timestep))),
            None => return Err(bad(format!("has no input '{}' (see --input-timestep)", o.input_timestep))),
        };
        let class = find(&o.input_class).map(|_| o.input_class.clone());
        let output = match &o.output {
            Some(n) if session.outputs().iter().any(|x| x.name() == n) => n.clone(),
            Some(n) => return Err(bad(format!("has no output '{n}' (see --output)"))),
            None => {
                session.outputs().first().map(|x| x.name().to_string()).ok_or_else(|| bad("has no outputs".into()))?
            }
        };
        let meta: std::collections::HashMap<String, String> = {
            let m = session.metadata().map_err(ort_err)?;
            METADATA_KEYS.into_iter().filter_map(|k| m.custom(k).map(|v| (k.to_string(), v))).collect()
        };
        let Metadata { prediction, schedule, normalization, classes, sampling } =
            Metadata::interpret(&meta, o, &shape, class.is_some(), path)?;
        let null_class = o.null_class.unwrap_or(classes as i64);
        Ok(OnnxDenoiser {
            path: path.to_path_buf(),
            session,
            sample: o.input_sample.clone(),
            timestep: o.input_timestep.clone(),
            timestep_int,
            timestep_shape,
            class,
            output,
            shape,
            prediction,
            classes,
            null_class,
            schedule,
            sampling,
            normalization,
            provider,
            labels: vec![],
            run_time: std::time::Duration::ZERO,
            calls: 0,
            batch_dynamic,
        })
    }
}

impl Denoiser for OnnxDenoiser {
    type Error = Error;

    fn dim(&self) -> usize {
        // an open example shape (not yet fixed by --shape, --init or the data) has no dimension
        if self.shape.is_empty() { 0 } else { self.shape.iter().product() }
    }

    fn prediction(&self) -> Prediction {
        self.prediction
    }

    fn classes(&self) -> usize {
        if self.class.is_some() { self.classes } else { 0 }
    }

    fn predict(&mut self, x: &[f32], level: NoiseLevel, cond: Condition<'_>, out: &mut [f32]) -> Result<()> {
        self.run(x, level, &[cond], &mut [out])
    }

    /// One call of 2N (the batch, then the batch unconditionally) where the batch axis is
    /// dynamic; two calls otherwise.
    fn predict_pair(
        &mut self,
        x: &[f32],
        level: NoiseLevel,
        cond: Condition<'_>,
        out: &mut [f32],
        uncond: &mut [f32],
    ) -> Result<()> {
        if self.batch_dynamic {
            self.run(x, level, &[cond, Condition::Unconditional], &mut [out, uncond])
        } else {
            self.run(x, level, &[Condition::Unconditional], &mut [uncond])?;
            self.run(x, level, &[cond], &mut [out])
        }
    }
}

impl OnnxDenoiser {
    /// One `Session::run` over the batch `x` repeated once per condition of `conds` (at one
    /// noise level), the predictions into `outs` (one per condition).
    fn run(&mut self, x: &[f32], level: NoiseLevel, conds: &[Condition<'_>], outs: &mut [&mut [f32]]) -> Result<()> {
        let d = self.dim();
        let n = x.len() / d * conds.len();
        let mut shape = vec![n as i64];
        shape.extend(self.shape.iter().map(|&s| s as i64));
        let sample = Tensor::from_array((shape, x.repeat(conds.len()))).map_err(ort_err)?;
        // An int64 input gets the timestep truncated, as diffusers' ONNX pipelines cast it
        // (`np.array([t], dtype=int64)`): fractional levels (Karras sigmas) lose their fraction.
        let t0 = level.timestep as i64;
        let (t_shape, count): (Vec<i64>, usize) = match self.timestep_shape {
            TimestepShape::PerExample => (vec![n as i64], n),
            TimestepShape::One => (vec![1], 1),
            TimestepShape::Scalar => (vec![], 1),
        };
        let mut inputs = if self.timestep_int {
            ort::inputs![self.sample.as_str() => sample, self.timestep.as_str() => Tensor::from_array((t_shape, vec![t0; count])).map_err(ort_err)?]
        } else {
            ort::inputs![self.sample.as_str() => sample, self.timestep.as_str() => Tensor::from_array((t_shape, vec![level.timestep; count])).map_err(ort_err)?]
        };
        if let Some(c) = &self.class {
            self.labels.clear();
            for cond in conds {
                match cond {
                    Condition::Unconditional => self.labels.resize(self.labels.len() + x.len() / d, self.null_class),
                    Condition::Class(l) => self.labels.extend(l.iter().map(|&v| i64::from(v))),
                }
            }
            let (classes, null) = (self.classes as i64, self.null_class);
            if let Some(&l) = self.labels.iter().find(|&&l| l < 0 || (l >= classes && l != null)) {
                return Err(input(format!(
                    "--model {}: class label {l} is out of range (expected 0..{classes}, or the null class {null})",
                    self.path.display(),
                )));
            }
            inputs.push((c.clone().into(), Tensor::from_array(([n], self.labels.clone())).map_err(ort_err)?.into()));
        }
        let start = std::time::Instant::now();
        let model = self.path.display();
        let outputs = self.session.run(inputs).map_err(|e| {
            input(format!(
                "--model {model}: ONNX Runtime refused the input (expected sample {:?} float32 and timestep {} {}): {}",
                std::iter::once(n).chain(self.shape.iter().copied()).collect::<Vec<_>>(),
                match self.timestep_shape {
                    TimestepShape::PerExample => "[N]",
                    TimestepShape::One => "[1]",
                    TimestepShape::Scalar => "scalar",
                },
                if self.timestep_int { "int64" } else { "float32" },
                first_line(e)
            ))
        })?;
        self.run_time += start.elapsed();
        self.calls += 1;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| input(format!("--model {model}: the output '{}' is missing", self.output)))?;
        let (_, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| input(format!("--model {model}: expected a float32 prediction output ({})", first_line(e))))?;
        if data.len() != n * d {
            return Err(input(format!(
                "--model {model}: the output has {} values for {} inputs (expected the prediction, shaped as the sample)",
                data.len(),
                n * d
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(input(format!(
                "the model produced a non-finite value ({}) at timestep {}, example {} (a broken or mismatched model?)",
                data[i],
                level.timestep,
                i / d.max(1)
            )));
        }
        for (o, part) in outs.iter_mut().zip(data.chunks(x.len())) {
            o.copy_from_slice(part);
        }
        Ok(())
    }
}
