#!/usr/bin/env bash
# Size and cost of on-device sampling (not part of the test run; needs QEMU, as ./test.sh installs,
# and `cargo build --release -p elbo-benches --bin measure` for the MMD):
#   for each sampler of the `sample` firmware (DDPM-1000, DDIM-50, DPM-Solver++ 2M and UniPC with
#   10 steps) on the width-64 two-moons MLP read from flash: flash, RAM for 16 points (static data
#   plus the stack's high-water mark), executed instructions per sample (a one-point build's run
#   less the set-up's, counted from QEMU's exec log in single-step mode, streamed), and the MMD^2
#   of 512 device samples against the data (Cortex-M4F; the targets' samples are the same bits).
set -euo pipefail
cd "$(dirname "$0")"
unset RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR
declare -A QEMU=(
  [thumbv7em-none-eabihf]="qemu-system-arm -machine mps2-an386"
  [riscv32imac-unknown-none-elf]="qemu-system-riscv32 -machine virt -bios none"
)
measure=../../target/release/measure
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
build() { # target sampler n count -> elf path
  local dir="target-measure/$2-$3-$4"
  ELBO_SAMPLER=$2 ELBO_N=$3 ELBO_COUNT_STEPS=$4 \
    cargo build -q --locked --release --target "$1" --bin sample --target-dir "$dir"
  echo "$dir/$1/release/sample"
}
# executed instructions of a run (the exec log streamed through a pipe, never written)
count() { # target elf
  mkfifo "$tmp/log"
  grep -c Trace "$tmp/log" > "$tmp/count" &
  ${QEMU[$1]} -nographic -semihosting-config enable=on,target=native -singlestep -d exec,nochain \
    -D "$tmp/log" -kernel "$2"
  wait
  rm "$tmp/log"
  cat "$tmp/count"
}
echo "| target | sampler | denoiser calls | flash (bytes) | RAM, 16 points (bytes) | instructions per sample | MMD^2, 512 samples |"
echo "|---|---|---|---|---|---|---|"
for target in thumbv7em-none-eabihf riscv32imac-unknown-none-elf; do
  q=${QEMU[$target]}
  base=$(count "$target" "$(build "$target" none 1 0)")
  for sampler in ddpm ddim50 dpmpp2m10 unipc10; do
    calls=$(case $sampler in ddpm) echo 1000;; ddim50) echo 50;; *) echo 10;; esac)
    elf=$(build "$target" "$sampler" 16 "")
    read -r text data _ < <(size "$elf" | awk 'NR==2 {print $1, $2, $3}')
    ram=$($q -nographic -semihosting-config enable=on,target=native -kernel "$elf" | tail -1 |
      awk '{print $3 + $7}')
    # the whole run for one point; DDPM's 1000 steps from 20 of them (every step costs the same)
    if [ "$sampler" = ddpm ]; then
      per=$(( ($(count "$target" "$(build "$target" ddpm 1 20)") - base) * 50 ))
    else
      per=$(( $(count "$target" "$(build "$target" "$sampler" 1 0)") - base ))
    fi
    mmd="(same bits)"
    if [ "$target" = thumbv7em-none-eabihf ]; then
      $q -nographic -semihosting-config enable=on,target=native -kernel "$(build "$target" "$sampler" 512 "")" \
        > "$tmp/samples.txt"
      mmd=$($measure mmd "$tmp/samples.txt" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2e (data vs data %.2e)" % (d["mmd2"], d["mmd2_data_vs_data"]))')
    fi
    echo "| $target | $sampler | $calls | $((text + data)) | $ram | $per | $mmd |"
  done
done
