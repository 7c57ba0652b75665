#!/usr/bin/env bash
# Runs every test of the project. On a fresh machine it first installs what the tests need
# (the bare-metal Rust targets); it needs rustup and cargo, as every Rust machine has.
set -euo pipefail
cd "$(dirname "$0")"

echo "== set-up"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add thumbv7em-none-eabihf riscv32imac-unknown-none-elf
if ! command -v qemu-system-arm >/dev/null || ! command -v qemu-system-riscv32 >/dev/null; then
  # The cross-target tests run the firmware under QEMU (Debian's packages; without
  # recommends, which would replace the preinstalled qemu-utils).
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  $SUDO apt-get install -y --no-install-recommends qemu-system-arm qemu-system-misc
fi

if ! ls .local/onnxruntime/onnxruntime/capi/libonnxruntime.so.* >/dev/null 2>&1; then
  # ONNX Runtime for the ONNX tests, project-local (found by elbo without ORT_DYLIB_PATH).
  python3 -m pip install --quiet --target .local/onnxruntime onnxruntime==1.31.1
fi

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== firmware crate (its own workspace): format and lints for both targets"
(cd tests/firmware && cargo fmt -- --check \
  && env -u RUSTFLAGS -u CARGO_BUILD_TARGET cargo clippy --locked --release --target thumbv7em-none-eabihf -- -D warnings \
  && env -u RUSTFLAGS -u CARGO_BUILD_TARGET cargo clippy --locked --release --target riscv32imac-unknown-none-elf -- -D warnings)

echo "== no_std core on bare-metal targets (proves no std, no alloc)"
cargo build --locked -p elbo-core --target thumbv7em-none-eabihf
cargo build --locked -p elbo-core --target riscv32imac-unknown-none-elf

echo "== tests"
cargo test --workspace --locked

echo "== benches compile (benches/compare.sh runs them against the peers; no timing in tests)"
cargo bench --workspace --locked --no-run

echo "== all tests passed"
