#!/usr/bin/env bash
# Prepares the GPU run on a machine without a GPU: builds `frog-bench`
# (feature cuda) and every GPU test binary (frog-cuda's unit tests, one per
# frog-cuda/tests/*.rs, frog-bench's unit tests) against the libcuda stub
# (they open the real libcuda.so.1 at run time on the GPU machine), packs
# them gzipped with the golden vectors (frog-cpu/golden, every subfolder:
# the layer cases, lowp/ and muon/, which gpu-check and the `gpu` tests
# run) into .gpu-run/ (ignored by git; at most 60 MiB), writes .gpu-run/run.sh
# and prints how to run it.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
eval "$(bash frog-cuda/scripts/libcuda-stub.sh "$root/target/cuda-stub")"
export CARGO_TERM_COLOR=never
cargo build --release -p frog-bench --features cuda
cuda_tests=$(for f in frog-cuda/tests/*.rs; do printf -- '--test %s ' "$(basename "$f" .rs)"; done)
# Every test executable, a line each: target name, path.
# shellcheck disable=SC2086 # one word per flag
tests=$(cargo test --release -p frog-cuda -p frog-bench --features frog-bench/cuda --lib $cuda_tests --no-run --message-format=json \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] != ["bin"]:
        print(m["target"]["name"], m["executable"])' | sort -u)
want=$(($(find frog-cuda/tests -maxdepth 1 -name '*.rs' | wc -l) + 2))
[ "$(wc -l <<< "$tests")" = "$want" ] || { printf 'expected %s test binaries, got:\n%s\n' "$want" "$tests" >&2; exit 1; }

out=$root/.gpu-run
rm -rf "$out"
mkdir -p "$out/bin"
cp -r frog-cpu/golden "$out/golden"
cp frog-cuda/scripts/torch_resnet18_step.py "$out/"
pack() {  # name, path
  strip -o "$out/bin/$1" "$2"
  gzip -9 "$out/bin/$1"
}
pack frog-bench "$CARGO_TARGET_DIR/release/frog-bench"
while read -r name path; do pack "test-$name" "$path"; done <<< "$tests"

cat > "$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# The GPU run: prints the GPU, its driver and compute capability
# (nvidia-smi), runs `frog-bench gpu-check` (its first line: the SM count,
# compute capability and the driver's CUDA version as the backend sees
# them), then every GPU test binary in bin/, then the one-rank NCCL check,
# and last a table of the steps and the check's own table.
# FROG_REQUIRE_GPU=1 makes every skip a failure: no device, a driver that
# rejects the PTX, or a too-old driver or GPU fail the run, naming why. NCCL
# is optional and never fails the run: where FROG_NCCL_LIB, the loader or a
# common place (the CUDA toolkit's, a pip wheel's) has a libnccl.so.2, the
# view binary's gpu_nccl tests report its version and check init and every
# collective on one rank (their own step, reported in the table but not
# counted); elsewhere they print "NCCL: not found (...): skipped". Each step
# has its own timeout, and the timeouts sum to under 540 s (checked before
# anything runs); a step that runs out of
# time is reported as timed out and the table still printed. Logs go to .gpu-run/logs, and into the archive
# $OUT/gpu-run-logs.tar.gz when OUT names a folder. Exits non-zero when
# anything failed.
cd "$(dirname "$0")"
set -o pipefail
export FROG_GOLDEN_DIR=$PWD/golden FROG_REQUIRE_GPU=1
logs=$PWD/logs
rm -rf "$logs"
mkdir -p "$logs"
start=$(date +%s)
status=0
table=()
archive() {
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && tar -czf "$OUT/gpu-run-logs.tar.gz" -C "$PWD" logs && echo "logs: $OUT/gpu-run-logs.tar.gz"
  else
    echo "logs: $logs"
  fi
}
trap archive EXIT
# Runs a step with a timeout of `limit` seconds, its output in
# logs/NAME.log; one table line.
step() {  # name, limit, command...
  local name=$1 limit=$2; shift 2
  local t0 rc
  t0=$(date +%s)
  timeout "$limit" "$@" > "$logs/$name.log" 2>&1
  rc=$?
  local took=$(($(date +%s) - t0)) what
  case $rc in
    0) what=ok ;;
    124) what="TIMED OUT after $limit s"; status=1 ;;
    *) what="FAILED (exit $rc)"; status=1 ;;
  esac
  local summary
  summary=$(grep -E '^test result' "$logs/$name.log" | tail -1)
  table+=("$(printf '%-22s %-24s %4s s  %s' "$name" "$what" "$took" "$summary")")
  if [ "$rc" != 0 ]; then
    # Why, in its own words: the first panic or error messages of the log,
    # else its last lines.
    local why
    why=$(grep -E -A1 'panicked at|^error' "$logs/$name.log" | grep -vE '^--$| panicked at ' | head -3)
    [ -n "$why" ] || why=$(tail -2 "$logs/$name.log")
    while IFS= read -r line; do table+=("    $line"); done <<< "$why"
  fi
  echo "== $name: $what ($took s) $summary"
}

# The timeouts: nvidia-smi, gpu-check, frog-bench's GPU tests, the GPU
# tests binary (the golden suites and the 8 GiB fill), every other one, the
# NCCL check (opening NCCL and a one-rank communicator take seconds).
smi=10 check=200 bench=60 gpu=60 other=30 nccl=20
tests=$(find bin -name 'test-*.gz' | wc -l)
total=$((smi + check + bench + gpu + (tests - 2) * other + nccl))
echo "timeouts sum to $total s"
[ "$total" -lt 540 ] || { echo "the timeouts sum to $total s, not under 540" >&2; exit 1; }
for f in bin/*.gz; do
  gzip -dc "$f" > "${f%.gz}" && chmod +x "${f%.gz}" || { echo "cannot unpack $f" >&2; exit 1; }
done
# compute_cap is a newer query field: asked alone, so that an older
# nvidia-smi refusing it loses nothing else.
step nvidia-smi "$smi" bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader &&
  echo "compute capability: $(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>&1 | head -1)"'
cat "$logs/nvidia-smi.log"
step gpu-check "$check" bin/frog-bench gpu-check --torch-script torch_resnet18_step.py "$@"
head -1 "$logs/gpu-check.log"
for bin in bin/test-*; do
  case $bin in *.gz) continue ;; esac
  name=${bin#bin/}
  case $name in
    test-frog_bench) step "$name" "$bench" "$bin" gpu_ --test-threads 1 --nocapture ;;
    test-gpu) step "$name" "$gpu" "$bin" --test-threads 1 --nocapture ;;
    # Its NCCL tests run in their own step below.
    test-view) step "$name" "$other" "$bin" --skip gpu_nccl --test-threads 1 --nocapture ;;
    *) step "$name" "$other" "$bin" --test-threads 1 --nocapture ;;
  esac
done
# NCCL, when this machine has one: FROG_NCCL_LIB as given, else a
# libnccl.so.2 the loader knows, in the nvidia-nccl-cu12 wheel (which torch
# installs), or in a common place.
find_nccl() {
  local p
  p=$(ldconfig -p 2>/dev/null | awk '$1 == "libnccl.so.2" { print $NF; exit }')
  [ -n "$p" ] && { echo "$p"; return; }
  p=$(timeout 10 python3 -c 'import os, nvidia.nccl as m; print(os.path.join(list(m.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null)
  [ -n "$p" ] && [ -e "$p" ] && { echo "$p"; return; }
  for p in /usr/lib/x86_64-linux-gnu/libnccl.so.2 /usr/lib64/libnccl.so.2 /usr/local/cuda/lib64/libnccl.so.2 \
    /usr/local/nccl/lib/libnccl.so.2 /opt/conda/lib/libnccl.so.2 /usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2 \
    /usr/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2 /usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 \
    /opt/conda/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2 "$HOME"/.local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2; do
    [ -e "$p" ] && { echo "$p"; return; }
  done
}
if [ -z "${FROG_NCCL_LIB:-}" ]; then
  found=$(find_nccl)
  if [ -n "$found" ]; then export FROG_NCCL_LIB=$found; fi
fi
echo "NCCL library: ${FROG_NCCL_LIB:-none found (FROG_NCCL_LIB unset; the tests try libnccl.so.2 on the loader path)}"
# Never fails the run: its result is in the table, its status not counted.
counted=$status
step nccl "$nccl" bin/test-view gpu_nccl --test-threads 1 --nocapture
status=$counted
said=$(grep -m1 -oE 'NCCL: not found.*|gpu_nccl_one_rank[a-z_]*: NCCL [0-9].*' "$logs/nccl.log")
table+=("    ${said:-no NCCL line in logs/nccl.log} (NCCL is optional: not counted)")
echo "${said:-NCCL: no line in logs/nccl.log}"
echo
echo "==== GPU run ($(($(date +%s) - start)) s; timeouts sum to $total s) ===="
printf '%s\n' "${table[@]}"
if grep -q '^==== frog-bench gpu-check ====' "$logs/gpu-check.log"; then
  sed -n '/^==== frog-bench gpu-check ====/,$p' "$logs/gpu-check.log"
else
  echo "gpu-check printed no table (see above)"
fi
exit $status
RUN
chmod +x "$out/run.sh"
size=$(du -sm "$out" | cut -f1)
echo ".gpu-run: $size MiB ($(du -sb "$out" | cut -f1) bytes)"
[ "$size" -le 60 ] || { echo ".gpu-run is over 60 MiB" >&2; exit 1; }
echo
echo "Copy .gpu-run/ into the checkout on the GPU machine and run, from the"
echo "repository root (about 9 minutes at most):"
echo "  bash .gpu-run/run.sh"
