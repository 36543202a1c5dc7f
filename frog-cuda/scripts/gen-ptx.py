#!/usr/bin/env python3
"""Compiles frog-cuda/kernels/*.cu to frog-cuda/ptx/*.ptx with a pinned NVRTC.

The PTX must load on the drivers A100 clusters run (CUDA 11.8 and newer), so
it is produced by NVRTC 11.8 (wheel nvidia-cuda-nvrtc-cu11==11.8.89, PTX ISA
7.8) for compute_80 and committed. Output is deterministic.

usage: gen-ptx.py --nvrtc DIR [--check] [--out DIR]
  --nvrtc DIR  folder holding libnvrtc.so.11.2 (the wheel's nvidia/cuda_nvrtc/lib)
  --check      compile into a temporary folder and fail on any difference
               from the committed PTX (prints a unified diff)
"""
import argparse
import ctypes
import difflib
import pathlib
import sys

CRATE = pathlib.Path(__file__).resolve().parent.parent
KERNELS = CRATE / "kernels"
PTX = CRATE / "ptx"
OPTIONS = [b"--gpu-architecture=compute_80", b"--std=c++14", b"--fmad=true"]
EXPECTED_VERSION = ".version 7.8"


def compile_one(lib, src: pathlib.Path) -> str:
    prog = ctypes.c_void_p()
    text = src.read_bytes()
    name = src.name.encode()
    # The kernels' shared headers (kernels/*.cuh), handed to NVRTC by name.
    headers = sorted(KERNELS.glob("*.cuh"))
    contents = (ctypes.c_char_p * len(headers))(*[h.read_bytes() for h in headers])
    names = (ctypes.c_char_p * len(headers))(*[h.name.encode() for h in headers])
    check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), text, name, len(headers), contents, names), "create")
    opts = (ctypes.c_char_p * len(OPTIONS))(*OPTIONS)
    res = lib.nvrtcCompileProgram(prog, len(OPTIONS), opts)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if res != 0:
        sys.exit(f"nvrtc failed on {src}:\n{log.value.decode()}")
    if log.value.strip():
        print(f"nvrtc log for {src.name}:\n{log.value.decode()}", file=sys.stderr)
    check(lib, lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "ptx size")
    buf = ctypes.create_string_buffer(size.value)
    check(lib, lib.nvrtcGetPTX(prog, buf), "ptx")
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    ptx = buf.value.decode()
    if EXPECTED_VERSION not in ptx:
        sys.exit(f"{src.name}: NVRTC did not emit PTX ISA 7.8 (wrong NVRTC version?)")
    return ptx


def check(lib, res, what):
    if res != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        sys.exit(f"nvrtc {what}: {lib.nvrtcGetErrorString(res).decode()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nvrtc", required=True)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    lib = ctypes.CDLL(str(pathlib.Path(args.nvrtc) / "libnvrtc.so.11.2"))
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    if (major.value, minor.value) != (11, 8):
        sys.exit(f"NVRTC {major.value}.{minor.value} found, 11.8 required (nvidia-cuda-nvrtc-cu11==11.8.89)")
    sources = sorted(KERNELS.glob("*.cu"))
    failed = False
    for src in sources:
        ptx = compile_one(lib, src)
        dst = PTX / (src.stem + ".ptx")
        if args.check:
            old = dst.read_text() if dst.exists() else ""
            if old != ptx:
                failed = True
                diff = difflib.unified_diff(old.splitlines(True), ptx.splitlines(True), str(dst), "regenerated")
                sys.stdout.writelines(list(diff)[:200])
                print(f"\n{dst} differs from the PTX regenerated from {src} (run scripts/gen-ptx.py)")
            else:
                print(f"{dst.relative_to(CRATE)}: matches the pinned NVRTC output")
        else:
            PTX.mkdir(exist_ok=True)
            dst.write_text(ptx)
            print(f"wrote {dst.relative_to(CRATE)} ({len(ptx)} bytes)")
    stale = {p.stem for p in PTX.glob("*.ptx")} - {s.stem for s in sources}
    if stale:
        failed = True
        print(f"committed PTX without a source: {sorted(stale)}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
