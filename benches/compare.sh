#!/usr/bin/env bash
# Side-by-side benchmarks against PyTorch, diffusers and onnxruntime: writes benches/RESULTS.md.
# Installs the peers into .local/peers (PyPI), builds ours, and points ours at the peers'
# onnxruntime library so that both sides run the same ONNX Runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
py=$(benches/peers/setup.sh)
cargo build --release --locked -p elbo -p elbo-benches --bin elbo --bin measure >&2
ORT_DYLIB_PATH=$(ls "$("$py" -c 'import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))')"/capi/libonnxruntime.so.* | head -1)
export ORT_DYLIB_PATH
exec "$py" benches/compare.py "$@"
