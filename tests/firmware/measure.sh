#!/usr/bin/env bash
# Size and cost of on-device sampling (not part of the test run; needs QEMU, as ./test.sh installs):
#   flash and RAM of the `sample` firmware (DDPM, T = 1000, 16 points, the width-64 two-moons
#   MLP read from flash), and executed instructions per sampling step for one point, counted
#   from QEMU's exec log in single-step mode (difference of a 4-step and a 0-step build, / 4).
set -euo pipefail
cd "$(dirname "$0")"
unset RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR
declare -A QEMU=(
  [thumbv7em-none-eabihf]="qemu-system-arm -machine mps2-an386"
  [riscv32imac-unknown-none-elf]="qemu-system-riscv32 -machine virt -bios none"
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for target in thumbv7em-none-eabihf riscv32imac-unknown-none-elf; do
  q=${QEMU[$target]}
  cargo build -q --locked --release --target "$target" --bin sample
  elf=target/$target/release/sample
  read -r text data _ < <(size "$elf" | awk 'NR==2 {print $1, $2, $3}')
  ram=$($q -nographic -semihosting-config enable=on,target=native -kernel "$elf" | tail -1)
  blob=$(stat -c %s ../../models/two-moons/model.bin)
  counts=()
  for k in 0 4; do
    ELBO_COUNT_STEPS=$k cargo build -q --locked --release --target "$target" --bin sample --target-dir "target-count-$k"
    $q -nographic -semihosting-config enable=on,target=native -singlestep -d exec,nochain -D "$tmp/exec.log" \
      -kernel "target-count-$k/$target/release/sample"
    counts+=("$(grep -c Trace "$tmp/exec.log")")
  done
  per_step=$(( (counts[1] - counts[0]) / 4 ))
  echo "$target: flash $((text + data)) bytes (of which the model blob $blob), $ram; $per_step instructions per DDPM step per point"
done
