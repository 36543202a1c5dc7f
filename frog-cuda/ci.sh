#!/usr/bin/env bash
# frog-cuda's CI on a machine without a GPU (called by .ci/run).
#
# 1. installs the pinned compilers as pip wheels into a cache folder
#    ($FROG_CUDA_CACHE, default $HOME/.cache/frog-cuda): NVRTC 12.4.127 (PTX
#    ISA 8.4) and cuda-toolkit 13.0.2 for ptxas;
# 2. regenerates the PTX from kernels/*.cu and fails on any difference from
#    the committed ptx/*.ptx;
# 3. assembles the PTX with ptxas for sm_80 and sm_90 and prints registers,
#    shared memory and spills per kernel (fails on any spill);
# 4. builds the libcuda stub (../shared/cuda/libcuda-stub.sh) and runs clippy
#    and the tests of frog-cuda; GPU tests print that they were skipped;
# 5. checks that no binary needs libcuda.so.1 to start (src/driver.rs opens
#    it at run time) and that frog-bench reports a missing driver;
# 6. runs the GPU tests (frog-cuda's, and the bench's CUDA device) again on
#    the libcuda host emulator (emu/: the CUDA C
#    kernels compiled for the host), which checks the kernels' sources and
#    the Rust side, not the PTX, the driver or the speed.
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
nvrtc_lib=$cache/nvrtc/nvidia/cuda_nvrtc/lib
if [ ! -e "$nvrtc_lib/libnvrtc.so.12" ]; then
  python3 -m pip install --quiet --no-deps --target "$cache/nvrtc" "nvidia-cuda-nvrtc-cu12==12.4.127"
fi
ptxas=$cache/tk/nvidia/cu13/bin/ptxas
if [ ! -x "$ptxas" ]; then
  python3 -m pip install --quiet --target "$cache/tk" "cuda-toolkit[nvcc,nvvm,crt,cudart,cccl]==13.0.2"
fi
"$ptxas" --version | tail -1

say "PTX regeneration with NVRTC 12.4 against the committed PTX"
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
eval "$(bash ../shared/cuda/libcuda-stub.sh "$root/target/cuda-stub")"

say "clippy -p frog-cuda, and frog-bench with its cuda feature"
cargo clippy --release -p frog-cuda --all-targets -- -D warnings
cargo clippy --release -p frog-bench --features cuda --no-deps --all-targets -- -D warnings

say "tests -p frog-cuda (GPU tests report SKIPPED without a device)"
cargo test --release -p frog-cuda -- --nocapture 2>&1 | tee "$root/target/frog-cuda-tests.log" | grep -E '^(test |SKIPPED|test result|running)' || true
grep -q 'test result: FAILED' "$root/target/frog-cuda-tests.log" && { echo "frog-cuda tests failed" >&2; exit 1; }
grep -q 'test result: ok' "$root/target/frog-cuda-tests.log" || { cat "$root/target/frog-cuda-tests.log" >&2; exit 1; }
skipped=$(grep -c '^SKIPPED' "$root/target/frog-cuda-tests.log" || true)
echo "$skipped GPU tests skipped for lack of a device"

# Every executable of the cuda builds, a line each: target name, kind, path.
artifacts=$({ cargo build --release -p frog-bench --features cuda --message-format=json
  cargo test --release -p frog-cuda -p frog-bench --features frog-bench/cuda --no-run --message-format=json; } 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["target"]["kind"][0], m["executable"])')

say "the binaries open the driver at run time: none needs libcuda.so.1 to start"
bench=$(awk '$3 ~ /\/frog-bench$/ { print $3; exit }' <<< "$artifacts")
for bin in $(awk '{ print $3 }' <<< "$artifacts" | sort -u); do
  if readelf -d "$bin" | grep -q 'NEEDED.*libcuda'; then
    echo "$bin needs libcuda.so.1: a driver function cust calls is missing from src/driver.rs" >&2
    exit 1
  fi
done
nodriver=$(env -u LD_LIBRARY_PATH "$bench" gpu-check 2>&1 || true)
echo "without a driver: $nodriver"
case "$nodriver" in
  *"SKIPPED, no CUDA device (loading libcuda.so.1"*) ;;
  *) echo "a cuda build of frog-bench should report the missing driver" >&2; exit 1 ;;
esac

say "GPU tests on the libcuda host emulator"
emu=$(bash frog-cuda/emu/build.sh "$root/target/cuda-emu")
bins=$(awk '($1 == "gpu" || $1 == "nn" || $1 == "frog_bench") && $2 != "bin" { print $3 }' <<< "$artifacts" | sort -u)
: > "$root/target/frog-cuda-emu.log"
for bin in $bins; do
  case "$bin" in */frog_bench-*) filter=gpu_ ;; *) filter= ;; esac
  LD_LIBRARY_PATH="$emu" "$bin" $filter --test-threads 1 --nocapture 2>&1 | tee -a "$root/target/frog-cuda-emu.log" \
    | grep -E '^(test |gpu_[a-z_]+: |test result)' || true
done
if grep -q 'test result: FAILED' "$root/target/frog-cuda-emu.log" || [ "$(grep -c 'test result: ok' "$root/target/frog-cuda-emu.log")" != 3 ]; then
  echo "GPU tests failed on the emulator" >&2
  exit 1
fi
say "done"
