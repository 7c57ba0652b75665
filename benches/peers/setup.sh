#!/usr/bin/env bash
# Installs the peers into a project-local virtual environment (.local/peers), from PyPI:
# PyTorch (the PyPI build; it runs on the CPU), diffusers, onnxruntime, onnx (for torch.onnx.export), numpy and scipy
# (RK45 for the ODE likelihood's peer), at the
# versions the comparison was written against. Prints the environment's python.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.local/peers
if ! "$venv/bin/python" -c "import torch, diffusers, onnxruntime, onnx, numpy, scipy" >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet torch==2.15.0 diffusers==0.42.1 onnxruntime==1.31.1 onnx==1.23.2 numpy scipy==1.17.1 >&2
fi
echo "$PWD/$venv/bin/python"
