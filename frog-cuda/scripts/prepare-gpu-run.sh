#!/usr/bin/env bash
# Prepares the GPU run on a machine without a GPU: builds the GPU test
# binaries and `frog-bench` (feature cuda) against the libcuda stub (they load
# the real libcuda.so.1 on the GPU machine), copies them and the golden files
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
mkdir -p "$out/bin" "$out/golden"
cp ../shared/golden/*.json ../shared/golden/FORMAT.md "$out/golden/"
cp frog-cuda/scripts/torch_resnet18_step.py "$out/"
strip -o "$out/bin/frog-bench" "${CARGO_TARGET_DIR:-$root/target}/release/frog-bench"
while read -r name path; do
  case "$name" in
    gpu|nn|frog_cuda|frog_bench) strip -o "$out/bin/test-$name" "$path" ;;
  esac
done <<< "$tests"
cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs every GPU test, then `frog-bench gpu-check`, whose short table comes last.
cd "$(dirname "$0")"
set -o pipefail
export FROG_GOLDEN_DIR=$PWD/golden
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
status=0
for t in bin/test-frog_cuda bin/test-gpu bin/test-nn; do
  echo "== $t"
  timeout 300 "$t" --test-threads 1 --nocapture 2>&1 | grep -Ev '^\s*$' || status=1
done
echo "== bin/test-frog_bench (the CUDA device: tiny CNN against the CPU, ResNet-18 steps)"
timeout 400 bin/test-frog_bench gpu_ --test-threads 1 --nocapture 2>&1 | grep -Ev '^\s*$' || status=1
echo "== bin/frog-bench gpu-check"
timeout 300 bin/frog-bench gpu-check --torch-script torch_resnet18_step.py "$@" || status=1
exit $status
RUN
chmod +x "$out/run.sh"
du -sh "$out"
echo
echo "On the GPU machine, from the repository root (send .gpu-run along):"
echo "  bash .gpu-run/run.sh"
