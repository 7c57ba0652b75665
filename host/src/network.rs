//! One description of each network family: what the trainer, the models, and the exporters
//! need of a network, whatever its architecture. The MLP ([`crate::nn::Mlp`], whose layout is
//! the core's [`Shape`]) is the first family; a convolutional U-Net is the next.
//!
//! A network maps a batch of examples `x` (`rows x dim`), their embedding times `tau` and
//! optional class labels (the null class is `classes`) to `rows x out` outputs, with its
//! parameters as one flat vector laid out by [`Network::tensors`].

use elbo_core::mlp::Shape;
use rand_pcg::Pcg32;

use crate::nn::Grads;
use crate::onnx::proto::{NodeProto, TensorProto, ValueInfoProto};

/// `loss_grad(first_row, outputs, grad)`: the loss of a chunk of rows' outputs, writing
/// `d loss / d output` into `grad`.
pub type LossGrad<'a> = &'a (dyn Fn(usize, &[f32], &mut [f32]) -> f64 + Sync);

/// A network's ONNX graph: nodes and initialisers from the inputs `sample` `[N, ...]`,
/// `timestep` `[N]` and, if conditional, `class_labels` `[N]` to the output `out_sample`.
pub struct OnnxGraph {
    /// The family's name (`MLP`, `U-Net`), for the file's description.
    pub family: &'static str,
    /// The nodes, in order.
    pub nodes: Vec<NodeProto>,
    /// The weights and constants.
    pub initializers: Vec<TensorProto>,
    /// The graph's inputs (with the timestep's declared type).
    pub inputs: Vec<ValueInfoProto>,
    /// The output.
    pub output: ValueInfoProto,
}

/// How an exported graph's `timestep` input becomes the network's embedding time `tau`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeInput {
    /// The input is declared float32 (else int64).
    pub float: bool,
    /// A continuous-time model exported on a discretisation of `T` steps: the 0-based input
    /// `k` means `t = (k + 1) / T`, and `tau = 1000 (k + 1) / T` (as the native model reads it
    /// on that discretisation). `None`: `tau` is the input (a discrete model's `t - 1`).
    pub continuous_steps: Option<usize>,
}

/// What every network family provides.
pub trait Network: Send + Sync + std::fmt::Debug {
    /// Input values per example (the data's dimension).
    fn dim(&self) -> usize;
    /// Output values per example.
    fn out(&self) -> usize;
    /// Classes of a conditional network (0: unconditional).
    fn classes(&self) -> usize;
    /// The number of parameters.
    fn n_params(&self) -> usize;
    /// Names, shapes and offsets of the parameter tensors (checkpoints use these names).
    fn tensors(&self) -> Vec<(String, Vec<usize>, usize)>;
    /// Fresh parameters, every random number from `rng`.
    fn init(&self, rng: &mut Pcg32) -> Vec<f32>;
    /// The outputs of a batch (`out` is `rows x out`).
    fn forward(&self, params: &[f32], x: &[f32], tau: &[f32], labels: Option<&[u32]>, out: &mut [f32]);
    /// Forward and backward over a batch: the total loss of `loss_grad` over the chunks, the
    /// gradient with respect to the parameters (summed in a fixed order: the same bits for
    /// any thread count) and, when `want_input`, with respect to `x`.
    fn loss_and_grads(
        &self,
        params: &[f32],
        x: &[f32],
        tau: &[f32],
        labels: Option<&[u32]>,
        want_input: bool,
        loss_grad: LossGrad<'_>,
    ) -> Grads;
    /// [`Network::loss_and_grads`] without the input gradient: the loss and `d loss / d params`.
    fn loss_and_grad(
        &self,
        params: &[f32],
        x: &[f32],
        tau: &[f32],
        labels: Option<&[u32]>,
        loss_grad: LossGrad<'_>,
    ) -> (f64, Vec<f32>) {
        let g = self.loss_and_grads(params, x, tau, labels, false, loss_grad);
        (g.loss, g.params)
    }

    /// The ONNX graph of the network with `params`, its timestep input as `time` says; `None`
    /// where the family has no ONNX export yet.
    fn onnx_graph(&self, params: &[f32], time: TimeInput) -> Option<OnnxGraph>;
    /// The shape of the `no_std` device network that computes the same function (the device
    /// blob's header), if the family runs on devices.
    fn device_shape(&self) -> Option<Shape>;
}
