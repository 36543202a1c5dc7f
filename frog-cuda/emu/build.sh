#!/usr/bin/env bash
# Builds the libcuda host emulator: OUTDIR/lib64/libcuda.so.1 with the
# kernels of kernels/*.cu compiled for the host, and every other driver
# symbol cust links answering CUDA_ERROR_UNKNOWN; and OUTDIR/lib64/libnccl-stub.so.2,
# a one-rank NCCL on the emulator's memory.
# Usage, from the workspace root: frog-cuda/emu/build.sh OUTDIR
# Then run GPU test binaries with LD_LIBRARY_PATH=OUTDIR/lib64.
set -euo pipefail
out=${1:?usage: build.sh OUTDIR}
mkdir -p "$out/lib64"
out=$(cd "$out" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
cr=$(cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, os, sys
pk = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "cust_raw"]
print(os.path.dirname(pk[0]["manifest_path"]) if pk else "")')
[ -n "$cr" ] || { echo "cust_raw is not a dependency of this workspace" >&2; exit 1; }
# Signed overflow in the kernels' index arithmetic aborts (UBSan, no recovery).
ubsan="-fsanitize=signed-integer-overflow -fno-sanitize-recover=signed-integer-overflow"
g++ -std=c++20 -O2 -fPIC -fvisibility=default -Wall -Wno-unknown-pragmas $ubsan -I"$here" -c "$here/libcuda_emu.cpp" -o "$out/emu.o"
defined=$(nm -g --defined-only "$out/emu.o" | awk '$2 == "T" {print $3}' | grep '^cu' | sort -u)
grep -o 'pub fn cu[A-Za-z0-9_]*' "$cr/src/cuda.rs" | sed 's/pub fn //' | sort -u \
  | comm -23 - <(printf '%s\n' "$defined") | sed 's/.*/extern "C" int &(void) { return 999; }/' > "$out/rest.cpp"
g++ -fPIC -c -w "$out/rest.cpp" -o "$out/rest.o"
g++ -shared $ubsan -Wl,-soname,libcuda.so.1 -o "$out/lib64/libcuda.so.1" "$out/emu.o" "$out/rest.o" -lpthread
ln -sf libcuda.so.1 "$out/lib64/libcuda.so"
# A one-rank NCCL on the emulator's memory (emu/libnccl_stub.c), for the tests
# of src/nccl.rs: FROG_NCCL_LIB=OUTDIR/lib64/libnccl-stub.so.2 (not named
# libnccl.so.2, so that nothing finds it by accident).
cc -std=c11 -O2 -fPIC -shared -Wall -Wextra -Werror -o "$out/lib64/libnccl-stub.so.2" "$here/libnccl_stub.c" \
  -L"$out/lib64" -l:libcuda.so.1 -Wl,-rpath,'$ORIGIN'
echo "$out/lib64"
