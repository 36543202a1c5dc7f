#!/usr/bin/env bash
# Builds a link-only libcuda stub for machines without an NVIDIA driver, so
# that binaries and tests that depend on cust can be linked (and run: every
# driver call returns CUDA_ERROR_NO_DEVICE, so GPU code reports "no device"
# instead of crashing). The symbol list comes from cust_raw's own bindings in
# the cargo registry.
#
# Usage, from the workspace root (cust must be in Cargo.lock):
#   eval "$(bash frog-cuda/scripts/libcuda-stub.sh DIR)"
# prints: export CUDA_LIBRARY_PATH=DIR LD_LIBRARY_PATH=DIR/lib64:...
# A binary linked against the stub loads the real libcuda.so.1 on a GPU
# machine (frog-cuda opens it at run time, see src/driver.rs).
set -euo pipefail
out=${1:?usage: libcuda-stub.sh OUTDIR}
mkdir -p "$out/lib64"
out=$(cd "$out" && pwd)
cr=$(cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, os, sys
pk = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "cust_raw"]
print(os.path.dirname(pk[0]["manifest_path"]) if pk else "")')
[ -n "$cr" ] || { echo "cust_raw is not a dependency of this workspace" >&2; exit 1; }
{
  echo 'int cuGetErrorString(int e, const char **p) { *p = "CUDA_ERROR_NO_DEVICE (libcuda stub: no NVIDIA driver here)"; return 0; }'
  echo 'int cuGetErrorName(int e, const char **p) { *p = "CUDA_ERROR_NO_DEVICE"; return 0; }'
  grep -o 'pub fn cu[A-Za-z0-9_]*' "$cr/src/cuda.rs" | sed 's/pub fn //' | sort -u \
    | grep -vx 'cuGetErrorString\|cuGetErrorName' | sed 's/.*/int &(void) { return 100; }/'
} > "$out/cuda_stub.c"
cc -shared -fPIC -w -Wl,-soname,libcuda.so.1 -o "$out/lib64/libcuda.so.1" "$out/cuda_stub.c"
ln -sf libcuda.so.1 "$out/lib64/libcuda.so"
echo "export CUDA_LIBRARY_PATH=$out LD_LIBRARY_PATH=$out/lib64\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
