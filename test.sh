#!/usr/bin/env bash
# Runs every test of the project. On a fresh machine it first installs what the tests need
# (the bare-metal Rust targets); it needs rustup and cargo, as every Rust machine has.
set -euo pipefail
cd "$(dirname "$0")"

echo "== set-up"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add thumbv7em-none-eabihf riscv32imac-unknown-none-elf

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== no_std core on bare-metal targets (proves no std, no alloc)"
cargo build --locked -p elbo-core --target thumbv7em-none-eabihf
cargo build --locked -p elbo-core --target riscv32imac-unknown-none-elf

echo "== tests"
cargo test --workspace --locked

echo "== all tests passed"
