#!/usr/bin/env bash
# frog-cuda's CI on a machine without a GPU (called by .ci/run).
#
# 1. installs the pinned compilers as pip wheels into a cache folder
#    ($FROG_CUDA_CACHE, default $HOME/.cache/frog-cuda): NVRTC 11.8.89 (PTX
#    ISA 7.8, which CUDA 11.8+ drivers load) and cuda-toolkit 13.0.2 for ptxas;
# 2. regenerates the PTX from kernels/*.cu and fails on any difference from
#    the committed ptx/*.ptx;
# 3. assembles the PTX with ptxas for sm_80 and sm_90 and prints registers,
#    shared memory and spills per kernel (fails on any spill);
# 4. builds the libcuda stub (scripts/libcuda-stub.sh) and runs clippy
#    and the tests of frog-cuda; GPU tests print that they were skipped;
# 5. checks that no binary needs libcuda.so.1 or libnccl to start
#    (src/driver.rs and src/nccl.rs open them at run time), that frog-bench
#    reports a missing driver, and that
#    with FROG_REQUIRE_GPU=1 (the prepared GPU run) gpu-check and a GPU test
#    fail instead, naming why;
# 6. runs the GPU tests again on the libcuda host emulator (emu/: the CUDA C
#    kernels compiled for the host, signed overflow trapping), which checks
#    the kernels' sources and the Rust side, not the PTX, the driver or the
#    speed: frog-cuda's at 4, 108 (A100) and 132 (H100/H200) SMs, each with
#    its own block order, checking that the 108 and 132 runs reach GEMM plans
#    (tile, split-K) the 4-SM run does not, split-K > 1 on both tiles, and no
#    bank conflict in the GEMMs' shared-memory staging, and that the NCCL
#    tests reached the one-rank NCCL stub (emu/libnccl_stub.c); the bench's CUDA
#    device at 4 SMs; and that a too-old driver or GPU makes every GPU test
#    report SKIPPED with both versions (and gpu-check fail under
#    FROG_REQUIRE_GPU=1).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# Its own target folder (shared with scripts/prepare-gpu-run.sh), so that the
# cuda builds do not replace the CPU builds of target/release.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
cache=${FROG_CUDA_CACHE:-$HOME/.cache/frog-cuda}
mkdir -p "$cache"
t0=$(date +%s)
say() { printf '\n-- frog-cuda: %s (%ss)\n' "$1" "$(($(date +%s) - t0))"; }

say "pinned compilers (pip wheels in $cache)"
nvrtc_lib=$cache/nvrtc11/nvidia/cuda_nvrtc/lib
if [ ! -e "$nvrtc_lib/libnvrtc.so.11.2" ]; then
  python3 -m pip install --quiet --no-deps --target "$cache/nvrtc11" "nvidia-cuda-nvrtc-cu11==11.8.89"
fi
ptxas=$cache/tk/nvidia/cu13/bin/ptxas
if [ ! -x "$ptxas" ]; then
  python3 -m pip install --quiet --target "$cache/tk" "cuda-toolkit[nvcc,nvvm,crt,cudart,cccl]==13.0.2"
fi
"$ptxas" --version | tail -1

say "PTX regeneration with NVRTC 11.8 against the committed PTX"
python3 frog-cuda/scripts/gen-ptx.py --nvrtc "$nvrtc_lib" --check

say "ptxas: registers, shared memory and spills per kernel"
spills=0
for ptx in frog-cuda/ptx/*.ptx; do
  for arch in sm_80 sm_90; do
    out=$("$ptxas" -arch=$arch -v "$ptx" -o /dev/null 2>&1)
    printf '%s for %s\n' "$(basename "$ptx")" "$arch"
    printf '%s\n' "$out" | awk -v arch=$arch '
      /Compiling entry function/ { match($0, /'"'"'[^'"'"']*'"'"'/); name = substr($0, RSTART + 1, RLENGTH - 2) }
      /spill stores/ { split($0, a, ","); st = a[2]; ld = a[3]; gsub(/^ +| bytes spill (stores|loads)/, "", st); gsub(/^ +| bytes spill (stores|loads)/, "", ld) }
      /Used [0-9]+ registers/ {
        match($0, /Used [0-9]+ registers/); regs = substr($0, RSTART + 5, RLENGTH - 15)
        smem = 0; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11)
        printf "  %-16s %3d regs  %5d B smem  spill stores %s B, loads %s B\n", name, regs, smem, st, ld
      }'
    if printf '%s\n' "$out" | grep -Eq '[1-9][0-9]* bytes spill'; then spills=1; fi
  done
done
[ "$spills" = 0 ] || { echo "a kernel spills registers" >&2; exit 1; }

say "libcuda stub"
eval "$(bash frog-cuda/scripts/libcuda-stub.sh "$root/target/cuda-stub")"

say "clippy -p frog-cuda, and frog-bench with its cuda feature"
cargo clippy --release -p frog-cuda --all-targets -- -D warnings
cargo clippy --release -p frog-bench --features cuda --no-deps --all-targets -- -D warnings

say "build: frog-bench with its cuda feature, frog-cuda's tests and frog-bench's unit tests"
# One test build, in one cargo call (one feature resolution, so that the
# dependencies are built once), for every binary the steps below run:
# frog-cuda's unit and integration tests (tests/*.rs), frog-bench's unit
# tests, whose GPU device tests run on the emulator, and the frog-bench
# binary (built for frog-bench's `cli` test, which runs in the CPU steps).
# Every executable, a line each: target name, kind, path.
cuda_tests=$(for f in frog-cuda/tests/*.rs; do printf -- '--test %s ' "$(basename "$f" .rs)"; done)
# shellcheck disable=SC2086 # one word per flag
artifacts=$(cargo test --release -p frog-cuda -p frog-bench --features frog-bench/cuda --lib --test cli $cuda_tests --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["target"]["kind"][0], m["executable"])')
cuda_bins=$(awk '$1 == "frog_cuda" || ($2 == "test" && $1 != "cli") { print $3 }' <<< "$artifacts" | sort -u)
bench_bins=$(awk '$1 == "frog_bench" && $2 == "lib" { print $3 }' <<< "$artifacts" | sort -u)
# frog-cuda's unit tests and one binary per tests/*.rs, and frog-bench's.
tests_files=$(find frog-cuda/tests -maxdepth 1 -name '*.rs' | wc -l)
[ "$(wc -w <<< "$cuda_bins")" = "$((tests_files + 1))" ] && [ -n "$bench_bins" ] \
  || { echo "the cuda test build is missing binaries: $artifacts" >&2; exit 1; }

say "tests of frog-cuda (GPU tests report SKIPPED without a device)"
: > "$root/target/frog-cuda-tests.log"
for bin in $cuda_bins; do
  "$bin" --nocapture 2>&1 | tee -a "$root/target/frog-cuda-tests.log" | grep -E '^(test |SKIPPED|test result|running)' || true
done
grep -q 'test result: FAILED' "$root/target/frog-cuda-tests.log" && { echo "frog-cuda tests failed" >&2; exit 1; }
[ "$(grep -c 'test result: ok' "$root/target/frog-cuda-tests.log")" = "$(wc -w <<< "$cuda_bins")" ] \
  || { cat "$root/target/frog-cuda-tests.log" >&2; exit 1; }
skipped=$(grep -c '^SKIPPED' "$root/target/frog-cuda-tests.log" || true)
echo "$skipped GPU tests skipped for lack of a device"

say "the binaries open the driver and NCCL at run time: none needs libcuda.so.1 or libnccl to start"
bench=$(awk '$3 ~ /\/frog-bench$/ { print $3; exit }' <<< "$artifacts")
for bin in $(awk '{ print $3 }' <<< "$artifacts" | sort -u); do
  needed=$(readelf -d "$bin")
  if grep -q 'NEEDED.*libcuda' <<< "$needed"; then
    echo "$bin needs libcuda.so.1: a driver function cust calls is missing from src/driver.rs" >&2
    exit 1
  fi
  if grep -q 'NEEDED.*libnccl' <<< "$needed"; then
    echo "$bin needs libnccl: src/nccl.rs opens it at run time, nothing may link it" >&2
    exit 1
  fi
done
nodriver=$(env -u LD_LIBRARY_PATH "$bench" gpu-check 2>&1 || true)
echo "without a driver: $nodriver"
case "$nodriver" in
  *"SKIPPED gpu-check: no CUDA device (loading libcuda.so.1"*) ;;
  *) echo "a cuda build of frog-bench should report the missing driver" >&2; exit 1 ;;
esac

say "FROG_REQUIRE_GPU=1 (the prepared GPU run): a skip is a failure naming why"
gpu_bin=$(awk '$1 == "gpu" { print $3; exit }' <<< "$artifacts")
if required=$(env -u LD_LIBRARY_PATH FROG_REQUIRE_GPU=1 "$bench" gpu-check 2>&1); then
  echo "gpu-check passed without a driver under FROG_REQUIRE_GPU=1: $required" >&2; exit 1
fi
echo "gpu-check without a driver: $required"
grep -q 'no CUDA device (loading libcuda.so.1' <<< "$required" || { echo "gpu-check does not say why it failed" >&2; exit 1; }
if required=$(env -u LD_LIBRARY_PATH FROG_REQUIRE_GPU=1 "$gpu_bin" gpu_golden_exact 2>&1); then
  echo "a GPU test passed without a driver under FROG_REQUIRE_GPU=1" >&2; exit 1
fi
grep -q 'gpu_golden_exact cannot run here: no CUDA device' <<< "$required" \
  || { printf '%s\n' "$required" >&2; echo "a GPU test does not say why it failed" >&2; exit 1; }
echo "a GPU test without a driver: $(grep -m1 'cannot run here' <<< "$required")"

say "GPU tests on the libcuda host emulator at 4, 108 and 132 SMs"
emu=$(bash frog-cuda/emu/build.sh "$root/target/cuda-emu")
# frog-cuda's GPU tests (its unit tests' gpu_ ones included) at every SM
# count; the 8 GiB fill once; the bench's CUDA device tests at 4 SMs.
log=$root/target/frog-cuda-emu.log
emu_run() {  # sms, binary, arguments...
  local sms=$1 bin=$2; shift 2
  FROG_EMU_SMS=$sms FROG_EMU_SEED=$sms FROG_EMU_STATS="$root/target/emu-stats-$sms.txt" LD_LIBRARY_PATH="$emu" \
    FROG_NCCL_LIB="$emu/libnccl-stub.so.2" \
    "$bin" "$@" --test-threads 1 --nocapture >> "$log.$sms" 2>&1 || true
}
# Every binary at one SM count, into its own log.
emu_runs() {  # sms
  local sms=$1
  rm -f "$root/target/emu-stats-$sms.txt"
  : > "$log.$sms"
  for bin in $cuda_bins; do
    if [ "$sms" = 4 ]; then emu_run "$sms" "$bin" gpu_; else emu_run "$sms" "$bin" gpu_ --skip gpu_fill_of_2_31_entries; fi
  done
  if [ "$sms" = 4 ]; then
    for bin in $bench_bins; do emu_run "$sms" "$bin" gpu_; done
  fi
}
# The plans of a stats file, one "tile xsplit" a line.
plans() { awk '$1 == "gemm" { n = split($2, p, "_"); print p[n] " x" $4 }' "$1" | sort -u; }
# The emulator runs a launch on one thread: the 4-SM runs (the longest, with
# the 8 GiB fill) go alongside the 108- and 132-SM ones, one per core.
emu_runs 4 &
emu_runs 108
emu_runs 132
wait
: > "$log"
for sms in 4 108 132; do
  echo "== $sms SMs"
  grep -E '^(test |gpu_[a-z_]+: |test result|SKIPPED)|runtime error|panicked' "$log.$sms" || true
  cat "$log.$sms" >> "$log"
  echo "GEMM plans (tile x split-K) at $sms SMs: $(plans "$root/target/emu-stats-$sms.txt" | tr '\n' ' ')"
  # The NCCL tests (tests/nccl/) pass without an NCCL too: check that they
  # reached the one-rank stub.
  grep -q 'gpu_nccl_one_rank_collectives_return_their_input: NCCL 2\.99\.0 from .*libnccl-stub\.so\.2' "$log.$sms" \
    || { echo "the NCCL tests did not reach the one-rank stub at $sms SMs" >&2; exit 1; }
done
runs=$(( 3 * $(wc -w <<< "$cuda_bins") + $(wc -w <<< "$bench_bins") ))
if grep -q 'test result: FAILED' "$log" || [ "$(grep -c 'test result: ok' "$log")" != "$runs" ]; then
  echo "GPU tests failed on the emulator" >&2
  exit 1
fi
for sms in 108 132; do
  new=$(comm -13 <(plans "$root/target/emu-stats-4.txt") <(plans "$root/target/emu-stats-$sms.txt") | tr '\n' ' ')
  echo "plans at $sms SMs that 4 SMs do not reach: $new"
  [ -n "$new" ] || { echo "the $sms-SM run reaches no plan the 4-SM run does not" >&2; exit 1; }
  for tile in 64 128; do
    plans "$root/target/emu-stats-$sms.txt" | awk -v t=$tile '$1 == t && substr($2, 2) + 0 > 1 { ok = 1 } END { exit !ok }' \
      || { echo "the $sms-SM run never splits K on the $tile tile" >&2; exit 1; }
  done
done
cat "$root"/target/emu-stats-*.txt | awk '$1 == "shared-stores" { s += $3; w += $5 } END {
  printf "GEMM shared-memory staging: %d warp stores, %d wavefronts (%d bank-conflict replays)\n", s, w, w - s
  exit !(s > 0 && w == s) }' || { echo "bank conflicts in the GEMM staging stores" >&2; exit 1; }

say "a too-old driver or GPU: every GPU test reports SKIPPED with both versions"
for setting in FROG_EMU_DRIVER_VERSION=11040 FROG_EMU_CC=7.5; do
  out=$(env "$setting" LD_LIBRARY_PATH="$emu" "$gpu_bin" --test-threads 1 --nocapture 2>&1 || true)
  printf '%s\n' "$out" | grep -m1 -o 'SKIPPED.*' | sed "s/^/$setting: /"
  tests=$(grep -c '^test gpu_' <<< "$out" || true)
  skipped=$(grep -cE 'SKIPPED gpu_.*(CUDA 11.4.*CUDA 11.8|compute capability 7.5.*compute capability 8.0)' <<< "$out" || true)
  if ! grep -q 'test result: ok' <<< "$out" || [ "$tests" = 0 ] || [ "$skipped" != "$tests" ]; then
    printf '%s\n' "$out" >&2
    echo "with $setting, $skipped of $tests GPU tests reported SKIPPED with both versions" >&2
    exit 1
  fi
  if out=$(env "$setting" FROG_REQUIRE_GPU=1 LD_LIBRARY_PATH="$emu" "$bench" gpu-check 2>&1); then
    echo "gpu-check passed under FROG_REQUIRE_GPU=1 with $setting" >&2; exit 1
  fi
  echo "$setting FROG_REQUIRE_GPU=1: $out"
done
say "done"
