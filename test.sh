#!/usr/bin/env bash
# Runs every test of the project. On a fresh machine it first installs what the tests need:
# - the Rust components rustfmt and clippy and the bare-metal targets thumbv7em-none-eabihf and
#   riscv32imac-unknown-none-elf (rustup, into the toolchain);
# - QEMU for the cross-target tests (Debian's qemu-system-arm and qemu-system-misc, with
#   apt-get: root or sudo, and the network), only if it is missing, and never removing or
#   replacing an installed package (`--no-remove`, from the release of an installed qemu-utils);
# - ONNX Runtime 1.31.1 for the ONNX tests (pip, into .local/onnxruntime in this checkout).
# Crates come from crates.io into cargo's own cache. If QEMU cannot be installed, the
# cross-target tests are skipped, loudly, outside CI; under CI=true that is an error.
set -euo pipefail
cd "$(dirname "$0")"

echo "== set-up"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add thumbv7em-none-eabihf riscv32imac-unknown-none-elf
qemu_missing() { ! command -v qemu-system-arm >/dev/null || ! command -v qemu-system-riscv32 >/dev/null; }
if qemu_missing; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update || true
  # An installed qemu-utils (say from bookworm-backports) must stay: take the QEMU packages from
  # its release, and let apt abort rather than remove anything.
  release=""
  if v=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null) && [ -n "$v" ]; then
    release=$(apt-cache madison qemu-utils | awk -F'|' -v v="$v" \
      '{gsub(/ /, "", $2)} $2 == v {split($3, a, " "); sub(/\/.*/, "", a[2]); print a[2]; exit}')
  fi
  $SUDO apt-get install -y --no-install-recommends --no-remove ${release:+-t "$release"} \
    qemu-system-arm qemu-system-misc || true
fi
# Where apt cannot install QEMU without removing something (a newer qemu-utils from a suite that
# is not configured, say), take Debian's packages with `apt-get download` and unpack them into
# .local/qemu in this checkout (dpkg -x: the system's packages are not touched).
if qemu_missing && [ ! -x .local/qemu/bin/qemu-system-arm ] && command -v apt-get >/dev/null; then
  echo "QEMU: unpacking Debian's packages into .local/qemu (nothing installed system-wide)"
  rm -rf .local/qemu.part && mkdir -p .local/qemu.part/debs
  if (cd .local/qemu.part/debs && apt-get download qemu-system-arm qemu-system-misc qemu-system-common \
        libfdt1 libcapstone4 libpmem1 librdmacm1 libibverbs1 libslirp0 libvdeplug2 libndctl6 libdaxctl1 \
        libnl-3-200 libnl-route-3-200 >/dev/null 2>&1); then
    for f in .local/qemu.part/debs/*.deb; do dpkg -x "$f" .local/qemu.part/root; done
    mkdir -p .local/qemu.part/bin
    for q in qemu-system-arm qemu-system-riscv32; do
      cat > .local/qemu.part/bin/$q <<WRAP
#!/bin/sh
d="\$(cd "\$(dirname "\$0")/.." && pwd)"
LD_LIBRARY_PATH="\$(find "\$d/root" -name '*.so*' -printf '%h\\n' | sort -u | tr '\\n' :)\${LD_LIBRARY_PATH:-}"
export LD_LIBRARY_PATH
exec "\$d/root/usr/bin/$q" "\$@"
WRAP
      chmod +x .local/qemu.part/bin/$q
    done
    rm -rf .local/qemu.part/debs .local/qemu && mv .local/qemu.part .local/qemu
  else
    rm -rf .local/qemu.part
  fi
fi
if [ -x .local/qemu/bin/qemu-system-arm ] && qemu_missing; then
  export PATH="$PWD/.local/qemu/bin:$PATH"
  .local/qemu/bin/qemu-system-arm --version | head -1
fi
if qemu_missing; then
  reason="QEMU (qemu-system-arm, qemu-system-riscv32) could not be installed without removing or replacing an installed package, or without root"
  if [ "${CI:-}" = "true" ]; then
    echo "error: $reason; the cross-target tests need it" >&2
    exit 1
  fi
  export ELBO_SKIP_QEMU="$reason"
  echo "!!"
  echo "!! $reason:"
  echo "!! the cross-target (Cortex-M4F, RISC-V) tests will be SKIPPED; everything else runs."
  echo "!!"
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

if [ -n "${ELBO_SKIP_QEMU:-}" ]; then
  echo "!! all other tests passed; the cross-target tests were SKIPPED: $ELBO_SKIP_QEMU"
else
  echo "== all tests passed"
fi
