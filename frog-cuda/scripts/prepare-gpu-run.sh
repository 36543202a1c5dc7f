#!/usr/bin/env bash
# Prepares the GPU run on a machine without a GPU: builds the GPU test
# binaries and `frog-bench` (feature cuda) against the libcuda stub (they open
# the real libcuda.so.1 at run time on the GPU machine), copies them and the golden files
# into .gpu-run/ (ignored by git; ../shared is not sent along), writes
# .gpu-run/run.sh and prints the one command to run there.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
eval "$(bash ../shared/cuda/libcuda-stub.sh "$root/target/cuda-stub")"
export CARGO_TERM_COLOR=never
cargo build --release -p frog-bench --features cuda
cargo test --release -p frog-cuda -p frog-bench --features frog-bench/cuda --no-run
tests=$(cargo test --release -p frog-cuda -p frog-bench --features frog-bench/cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] != ["bin"]:
        print(m["target"]["name"], m["executable"])')
out=$root/.gpu-run
rm -rf "$out"
mkdir -p "$out/bin" "$out/golden/lowp"
cp ../shared/golden/*.json ../shared/golden/FORMAT.md "$out/golden/"
cp ../shared/golden/lowp/*.json "$out/golden/lowp/"
cp frog-cuda/scripts/torch_resnet18_step.py "$out/"
strip -o "$out/bin/frog-bench" "${CARGO_TARGET_DIR:-$root/target}/release/frog-bench"
while read -r name path; do
  case "$name" in
    gpu|nn|lowp|frog_cuda|frog_bench) strip -o "$out/bin/test-$name" "$path" ;;
  esac
done <<< "$tests"
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Prints the GPU, its driver and compute capability (nvidia-smi), then runs
# `frog-bench gpu-check` (at most 4 minutes; its first line: the SM count,
# compute capability and the driver's CUDA version as the backend sees
# them), then every GPU test with a summary line each, then prints the
# check's short table again, last.
# Full logs go to $OUT (the device tool's returned folder) when it is set,
# else to .gpu-run/logs.
cd "$(dirname "$0")"
set -o pipefail
export FROG_GOLDEN_DIR=$PWD/golden
logs=${OUT:-$PWD/logs}
mkdir -p "$logs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$logs/nvidia-smi.txt"
# compute_cap is a newer query field: asked alone, so an older nvidia-smi
# refusing it loses nothing else.
echo "compute capability: $(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>&1 | head -1)" | tee -a "$logs/nvidia-smi.txt"
status=0
echo "== bin/frog-bench gpu-check"
timeout 240 bin/frog-bench gpu-check --torch-script torch_resnet18_step.py "$@" 2>&1 | tee "$logs/gpu-check.log" || status=1
run_tests() {  # name, timeout, filter...
  local name=$1 limit=$2; shift 2
  timeout "$limit" "bin/test-$name" "$@" --test-threads 1 --nocapture > "$logs/test-$name.log" 2>&1 || status=1
  echo "== test-$name: $(grep -E '^test result' "$logs/test-$name.log" | tail -1)"
  grep -E 'FAILED|panicked|SKIPPED|^gpu_[a-z_]+: ' "$logs/test-$name.log" | head -20
}
run_tests frog_cuda 60
run_tests gpu 120
run_tests nn 60
run_tests lowp 60
run_tests frog_bench 150 gpu_
echo
sed -n '/^==== frog-bench gpu-check ====/,$p' "$logs/gpu-check.log"
exit $status
RUN
chmod +x "$out/run.sh"
du -sh "$out"
echo
echo "On the GPU machine, from the repository root (send .gpu-run along; about"
echo "10 minutes at most, the check itself at most 4):"
echo "  bash .gpu-run/run.sh"
