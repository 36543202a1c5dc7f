#!/usr/bin/env python3
"""Time the original PyTorch FROG optimizer step per CIFAR-10 ResNet-18 conv layer.

Counterpart of `frog-bench layers`: same 11 conv shapes, same FLOP count
(4*K*N*D*R with N = r*Ho*Wo, D = C_in*kh*kw, R = C_out), same TOTAL_MS line
(sum of median_ms times the layer's multiplicity in ResNet-18).

The reference implementation (frog.py from the Fullfix/frog-optimizer
repository) is NOT part of this repository. Put it in a directory and pass that
directory with --ref or the FROG_REF environment variable (default
/tmp/frog-ref); this script imports `Frog` from `frog.py` there.

Only `Frog.step()` is timed: momentum, normalized trace, Lambda, K CG
iterations, row scale and the update. Forward and backward are not run. The
reference's hooks store, per Conv2d module, the sampled inputs
(`in_acts[module]`, shape [r, C_in, H, W]) and the squared, scaled output
gradients of the same samples (`out_grads[module]` = Y^2 * B^2/r for a
batch-averaged loss); this script fills those two stores directly before every
step (outside the timed region; the step divides `out_grads` in place and
clears both stores, so each step gets a fresh copy).

Example:
  FROG_REF=/tmp/frog-ref python3 frog-bench/scripts/torch_layers.py --sample 64 --iters 4 --threads 2
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

# name, c_in, c_out, kernel, stride, input hw, multiplicity in ResNet-18 (as frog-bench/src/layers.rs)
LAYERS = [
    ("stem", 3, 64, 3, 1, 32, 1),
    ("l1.conv", 64, 64, 3, 1, 32, 4),
    ("l2.down", 64, 128, 3, 2, 32, 1),
    ("l2.conv", 128, 128, 3, 1, 16, 3),
    ("l2.short", 64, 128, 1, 2, 32, 1),
    ("l3.down", 128, 256, 3, 2, 16, 1),
    ("l3.conv", 256, 256, 3, 1, 8, 3),
    ("l3.short", 128, 256, 1, 2, 16, 1),
    ("l4.down", 256, 512, 3, 2, 8, 1),
    ("l4.conv", 512, 512, 3, 1, 4, 3),
    ("l4.short", 256, 512, 1, 2, 8, 1),
]


def load_frog(ref):
    path = ref if ref.endswith(".py") else os.path.join(ref, "frog.py")
    if not os.path.isfile(path):
        sys.exit(f"error: reference implementation not found at {path} (set --ref or FROG_REF)")
    spec = importlib.util.spec_from_file_location("frog_ref", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    if not hasattr(mod, "Frog"):
        sys.exit(f"error: {path} defines no Frog class")
    return mod.Frog


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", default=os.environ.get("FROG_REF", "/tmp/frog-ref"),
                    help="directory holding the original frog.py (or the file itself); default $FROG_REF or /tmp/frog-ref")
    ap.add_argument("--sample", type=int, default=64, help="sampled rows r (default 64)")
    ap.add_argument("--iters", type=int, default=4, help="CG iterations K (default 4)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--batch", type=int, default=128, help="full batch size B, only enters the B^2/r scale (default 128)")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per layer, median reported (default 5, at least 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per layer first (default 1)")
    ap.add_argument("--layers", default="", help="comma-separated subset of layer names (default all)")
    ap.add_argument("--json", action="store_true", help="also print one JSON object per layer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.sample < 1 or args.iters < 1 or args.threads < 1 or args.repeats < 3 or args.warmup < 0:
        sys.exit("error: --sample, --iters and --threads must be >= 1, --repeats >= 3, --warmup >= 0")
    if args.sample > args.batch:
        sys.exit("error: --sample must not exceed --batch")

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    Frog = load_frog(args.ref)
    wanted = set(filter(None, args.layers.split(",")))
    unknown = wanted - {l[0] for l in LAYERS}
    if unknown:
        sys.exit(f"error: unknown layers {sorted(unknown)}")

    r, k_iters, B = args.sample, args.iters, args.batch
    print(f"original FROG step per ResNet-18 conv layer, PyTorch {torch.__version__}, f32, "
          f"{torch.get_num_threads()} threads, sample {r}, {k_iters} CG iterations, ref {args.ref}")
    print(f"{'layer':<9} {'c_in':>5} {'c_out':>5} {'hw':>3} {'k':>3} {'s':>3} {'count':>6} "
          f"{'median_ms':>10} {'GFLOP/s':>8} {'total_ms':>9}")
    total_ms = 0.0
    total_flop = 0.0
    for name, c_in, c_out, k, s, hw, count in LAYERS:
        if wanted and name not in wanted:
            continue
        conv = torch.nn.Conv2d(c_in, c_out, k, stride=s, padding=k // 2, bias=False)
        model = torch.nn.Sequential(conv)
        opt = Frog(model.parameters(), model, lr=0.01, momentum=0.9, weight_decay=5e-4,
                   sample_size=r, num_iters=k_iters, tau=1e-3, batch_averaged=True)
        ho = (hw + 2 * (k // 2) - k) // s + 1
        with torch.no_grad():
            conv.weight.grad = torch.randn_like(conv.weight) * 1e-3
            # post-ReLU-like sampled inputs and the hook's stored Y^2 * B^2/r
            x = torch.randn(r, c_in, hw, hw).clamp_(min=0).contiguous()
            y2 = (torch.randn(r, c_out, ho, ho) * 1e-4).square_().mul_(B * B / r).contiguous()

        def one_step():
            opt.in_acts[conv] = x
            opt.out_grads[conv] = y2.clone()
            t0 = time.perf_counter()
            opt.step()
            return time.perf_counter() - t0

        for _ in range(args.warmup):
            one_step()
        times = [one_step() for _ in range(args.repeats)]
        if not torch.isfinite(conv.weight).all():
            sys.exit(f"error: non-finite weight after steps on {name}")
        ms = 1e3 * statistics.median(times)
        n = r * ho * ho
        flop = 4.0 * k_iters * n * (c_in * k * k) * c_out
        gflops = flop / (ms * 1e-3) / 1e9
        total_ms += ms * count
        total_flop += flop * count
        print(f"{name:<9} {c_in:>5} {c_out:>5} {hw:>3} {k:>3} {s:>3} {count:>6} "
              f"{ms:>10.2f} {gflops:>8.1f} {ms * count:>9.1f}", flush=True)
        if args.json:
            print(f'{{"name":"{name}","c_in":{c_in},"c_out":{c_out},"hw":{hw},"stride":{s},"kernel":{k},'
                  f'"count":{count},"sample":{r},"median_ms":{ms:.3f},"gflops":{gflops:.1f},'
                  f'"min_ms":{1e3 * min(times):.3f},"max_ms":{1e3 * max(times):.3f}}}', flush=True)
    rate = total_flop / (total_ms * 1e-3) / 1e9 if total_ms > 0 else 0.0
    print(f"{total_flop / 1e9:.1f} GFLOP in all, {rate:.1f} GFLOP/s overall")
    print(f"TOTAL_MS {total_ms:.1f}")


if __name__ == "__main__":
    main()
