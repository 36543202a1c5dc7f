#!/usr/bin/env python3
"""Make frog-cpu/golden/airbench/recipe.json, the airbench94_muon recipe's golden case.

The case is the record recipe (KellerJordan/cifar10-airbench, `airbench94_muon.py`)
run by the reference file's own code with torch on the CPU in float64, on a
reduced-width network and a few synthetic images, so that frog-bench can check
its whole recipe (whitening, forward, label-smoothed loss, backward, both
optimizers under their schedules, BatchNorm statistics, test-time augmentation)
against it. `frog-cpu/golden/airbench/README.md` documents the file.

The reference file is NOT part of this repository: pass its path. It is loaded
as a module from its source text after these edits, each of which must match
exactly once (a different version of the file fails here rather than making a
different case):
  - `@torch.compile` is dropped (no compilation on the CPU);
  - the Newton-Schulz iteration's `G.bfloat16()` becomes a copy in the run's
    precision, as the Muon cases in golden/muon/ were made;
  - `init_whiten`'s `.float()` becomes the run's precision;
  - the widths become 8/16/16 instead of 64/256/256, so the file stays small.
torchvision (imported by the reference at top level, used only for
`T.Normalize`) is replaced by a module that provides `Normalize` with
torchvision's arithmetic. The default dtype is the run's, so the reference's
CIFAR_MEAN and CIFAR_STD are the decimal constants in float64.

The optimizers, their hyperparameters and the training step come from the
source text of the reference's `main()`: its assignments of the optimizers and
the schedule lengths, its `initial_lr` loop, and its inner training loop, run
with a one-batch loader in place of its CifarLoader (so `len(train_loader)` is
1 step per epoch: 8 steps in the schedule, 3 for the whitening bias).
Evaluation is the reference's `infer()`.

--f32-report replays the same recipe in float32 from the float64 initial state
(and its own float32 whitening from the same images) and prints each field's
max-norm relative error against the float64 values: the measured basis of the
float32 tolerance in the README. It writes nothing.

Usage (the output path defaults to the repository's golden folder):
  python3 frog-bench/scripts/airbench_golden.py /path/to/airbench94_muon.py [--out FILE] [--f32-report]
"""

import argparse
import ast
import hashlib
import inspect
import json
import os
import random
import sys
import types

import torch
import torch.nn.functional as F

DATA_SEED = 25  # Python's random.Random: the synthetic images and labels
TORCH_SEED = 94  # torch.manual_seed right before model.reset()
N_TRAIN, N_TEST, BATCH, STEPS = 64, 8, 16, 4
WIDTHS = dict(block1=8, block2=16, block3=16)
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                           "frog-cpu", "golden", "airbench", "recipe.json")

# The names main() assigns that make up the optimizers and the schedule lengths.
MAIN_SETUP = {"batch_size", "bias_lr", "head_lr", "wd", "total_train_steps",
              "whiten_bias_train_steps", "filter_params", "norm_biases",
              "param_configs", "optimizer1", "optimizer2", "optimizers", "step"}


def fail(msg):
    sys.exit(f"error: {msg}")


class Normalize:
    """torchvision.transforms.Normalize's arithmetic on a [.., C, H, W] tensor: (x - mean) / std per channel."""

    def __init__(self, mean, std):
        self.mean, self.std = mean, std

    def __call__(self, x):
        mean = torch.as_tensor(self.mean, dtype=x.dtype).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=x.dtype).view(-1, 1, 1)
        return (x - mean) / std


def install_torchvision_stub():
    tv = types.ModuleType("torchvision")
    tvt = types.ModuleType("torchvision.transforms")
    tvt.Normalize = Normalize
    tv.transforms = tvt
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = tvt


def load_reference(path, dtype):
    """The reference as a module, edited as the module docstring says, built with `dtype` as default dtype."""
    with open(path) as f:
        src = f.read()
    name = {torch.float64: "float64", torch.float32: "float32"}[dtype]
    widths = "widths = dict(%s)" % ", ".join(f"{k}={v}" for k, v in WIDTHS.items())
    edits = [
        ("@torch.compile\n", ""),
        ("X = G.bfloat16()", f"X = G.to(torch.{name}, copy=True)"),
        (".reshape(-1,c,h,w).float()", f".reshape(-1,c,h,w).to(torch.{name})"),
        ("widths = dict(block1=64, block2=256, block3=256)", widths),
    ]
    for old, new in edits:
        if src.count(old) != 1:
            fail(f"{path}: expected exactly one {old!r}; is this airbench94_muon.py?")
        src = src.replace(old, new)
    install_torchvision_stub()
    torch.set_default_dtype(dtype)
    mod = types.ModuleType("airbench94_muon")
    mod.__file__ = path
    exec(compile(src, path, "exec"), mod.__dict__)
    return mod, ast.parse(src, path)


def main_parts(tree, path):
    """main()'s optimizer and schedule statements, and its inner training loop, compiled."""
    main = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"), None)
    if main is None:
        fail(f"{path}: no main()")
    setup = []
    for s in main.body:
        if (isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                and s.targets[0].id in MAIN_SETUP):
            setup.append(s)
        elif isinstance(s, ast.For) and isinstance(s.iter, ast.Name) and s.iter.id == "optimizers":
            setup.append(s)  # group["initial_lr"] = group["lr"]
    assigned = sorted(s.targets[0].id for s in setup if isinstance(s, ast.Assign))
    if assigned != sorted(MAIN_SETUP) or len(setup) != len(MAIN_SETUP) + 1:
        fail(f"{path}: main() does not assign {sorted(MAIN_SETUP)} once each plus one initial_lr loop")
    loops = [n for n in ast.walk(main) if isinstance(n, ast.For)
             and isinstance(n.iter, ast.Name) and n.iter.id == "train_loader"]
    if len(loops) != 1:
        fail(f"{path}: main() has {len(loops)} loops over train_loader, expected 1")
    setup_code = compile(ast.Module(body=setup, type_ignores=[]), path, "exec")
    train_code = compile(ast.Module(body=loops, type_ignores=[]), path, "exec")
    return setup_code, train_code


class OneBatchLoader:
    """Stands in for main()'s train_loader: one batch per epoch, the batch set before each step."""

    def __init__(self):
        self.batch = None

    def __len__(self):
        return 1

    def __iter__(self):
        yield self.batch


def synthetic_data():
    """uint8 images [N, 3, 32, 32] (CIFAR-10's byte order) and labels, from Python's random.Random.

    Smooth random fields mixed across channels plus noise with a different
    horizontal and vertical correlation and amplitude per channel: the 12
    eigenvalues of the 2x2 patch covariance are then well apart (uniform noise
    would leave near-equal ones, whose eigenvectors are ill-determined), and
    a tanh squash keeps every pixel inside [18, 237], so no window of equal
    saturated pixels makes max-pool ties.
    """
    rng = random.Random(DATA_SEED)

    def gauss(*shape, sigma=1.0):
        n = 1
        for d in shape:
            n *= d
        return torch.tensor([rng.gauss(0.0, sigma) for _ in range(n)], dtype=torch.float64).view(*shape)

    base_mix = torch.tensor([[1.0, 0.6, 0.3], [0.6, 1.0, 0.6], [0.3, 0.6, 1.0]], dtype=torch.float64)
    ah = torch.tensor([0.8, 0.2, -0.4], dtype=torch.float64).view(3, 1, 1)
    av = torch.tensor([0.1, 0.7, 0.3], dtype=torch.float64).view(3, 1, 1)
    amp = torch.tensor([0.15, 0.3, 0.6], dtype=torch.float64).view(3, 1, 1)
    images = []
    for _ in range(N_TRAIN + N_TEST):
        fields = F.interpolate(gauss(1, 3, 5, 8), size=(32, 32), mode="bicubic", align_corners=True)[0]
        mix = base_mix + gauss(3, 3, sigma=0.3)
        e = gauss(3, 33, 33)
        noise = amp * (e[:, 1:, 1:] + ah * e[:, 1:, :-1] + av * e[:, :-1, 1:])
        v = torch.einsum("cd,dhw->chw", mix, fields) + noise + gauss(3, 1, 1, sigma=0.3)
        images.append(torch.round(127.5 + 110.0 * torch.tanh(v / 2)))
    images = torch.stack(images).to(torch.uint8)
    labels = torch.tensor([rng.randrange(10) for _ in range(N_TRAIN)], dtype=torch.int64)
    return images[:N_TRAIN], labels, images[N_TRAIN:]


def watch_maxpool_ties(model):
    """Counts max-pool windows whose maximum occurs more than once (the gradient's route would be a convention)."""
    ties = [0]

    def hook(module, inputs, _output):
        x, k = inputs[0], module.kernel_size
        h, w = x.shape[-2] // k * k, x.shape[-1] // k * k
        win = x[..., :h, :w].unfold(-2, k, k).unfold(-2, k, k).flatten(-2)
        ties[0] += int(((win == win.amax(-1, keepdim=True)).sum(-1) > 1).sum())

    for m in model.modules():
        if isinstance(m, torch.nn.MaxPool2d):
            m.register_forward_hook(hook)
    return ties


def flat(t):
    return t.detach().reshape(-1).tolist()


def running_stats(model):
    """The BatchNorm buffers a replay compares: running_mean and running_var (num_batches_tracked is a count)."""
    return [(n, b) for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")]


def snapshot(model):
    return {
        "params": {n: flat(p) for n, p in model.named_parameters()},
        "buffers": {n: flat(b) for n, b in running_stats(model)},
    }


def run_recipe(ref_path, dtype, data, initial_state=None):
    """The record and the model's state dict after init_whiten; with `initial_state`, the steps start from it."""
    mod, tree = load_reference(ref_path, dtype)
    setup_code, train_code = main_parts(tree, ref_path)
    train_u8, labels, test_u8 = data

    model = mod.CifarNet().to(dtype)
    ties = watch_maxpool_ties(model)
    loader = OneBatchLoader()
    losses = []

    def cross_entropy(*args, **kwargs):
        loss = F.cross_entropy(*args, **kwargs)
        losses.append((loss.detach(), kwargs))
        return loss

    ns = dict(vars(mod), model=model, train_loader=loader,
              F=types.SimpleNamespace(cross_entropy=cross_entropy))
    exec(setup_code, ns)

    normalize = mod.T.Normalize(mod.CIFAR_MEAN, mod.CIFAR_STD)
    train = normalize(train_u8.to(dtype) / 255)
    torch.manual_seed(TORCH_SEED)
    model.reset()
    eigh, eigenvalues = torch.linalg.eigh, []

    def recording_eigh(*args, **kwargs):
        result = eigh(*args, **kwargs)
        eigenvalues.append(result.eigenvalues.clone())
        return result

    torch.linalg.eigh = recording_eigh
    try:
        model.init_whiten(train)
    finally:
        torch.linalg.eigh = eigh
    whitening = {"eigenvalues": flat(eigenvalues[0]), "weight": flat(model.whiten.weight)}
    if initial_state is not None:
        model.load_state_dict(initial_state)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    names = {id(p): n for n, p in model.named_parameters()}
    opt1, opt2 = ns["optimizer1"], ns["optimizer2"]
    if len(opt1.param_groups) != 3 or len(opt2.param_groups) != 1:
        fail("expected 3 SGD groups (whitening bias, norm biases, head) and 1 Muon group")
    muon = opt2.param_groups[0]
    groups = ["whiten_bias", "norm_biases", "head", "muon"]
    norm = next(m for m in model.modules() if isinstance(m, mod.BatchNorm))
    record = {
        "architecture": {
            "widths": list(WIDTHS.values()),
            "whiten_width": model.whiten.out_channels,
            "whiten_kernel": model.whiten.kernel_size[0],
            "whiten_eps": inspect.signature(mod.CifarNet.init_whiten).parameters["eps"].default,
            "bn_eps": norm.eps,
            "bn_momentum": norm.momentum,
            "num_classes": model.head.out_features,
            "batch_size_for_wd": ns["batch_size"],
        },
        "seed": TORCH_SEED,
        "normalize": {"mean": flat(mod.CIFAR_MEAN), "std": flat(mod.CIFAR_STD)},
        "whitening": whitening,
        "param_names": list(names.values()),
        "param_shapes": {n: list(p.shape) for n, p in model.named_parameters()},
        "buffer_names": [n for n, _ in running_stats(model)],
        "optimizers": {
            "schedule": {"total_train_steps": ns["total_train_steps"],
                         "whiten_bias_train_steps": ns["whiten_bias_train_steps"]},
            "sgd": [{"group": g, "params": [names[id(p)] for p in pg["params"]],
                     "lr": pg["initial_lr"], "momentum": pg["momentum"], "nesterov": pg["nesterov"],
                     "dampening": pg["dampening"], "weight_decay": pg["weight_decay"]}
                    for g, pg in zip(groups, opt1.param_groups)],
            "muon": {"params": [names[id(p)] for p in muon["params"]],
                     "lr": muon["initial_lr"], "momentum": muon["momentum"], "nesterov": muon["nesterov"],
                     "ns_steps": inspect.signature(mod.zeropower_via_newtonschulz5).parameters["steps"].default},
        },
        "initial": snapshot(model),
        "steps": [],
    }

    for k in range(STEPS):
        rows = slice(BATCH * k, BATCH * (k + 1))
        loader.batch = (train[rows], labels[rows])
        whiten_bias_grad = ns["step"] < ns["whiten_bias_train_steps"]
        bias_before = model.whiten.bias.detach().clone()
        exec(train_code, ns)
        if ns["step"] != k + 1 or len(losses) != k + 1:
            fail(f"main()'s training loop did not take exactly one step at step {k}")
        if not whiten_bias_grad and not torch.equal(bias_before, model.whiten.bias):
            fail("the whitening bias moved after its schedule ended")
        lrs = [pg["lr"] for pg in opt1.param_groups + opt2.param_groups]
        record["steps"].append({
            "images": [rows.start, rows.stop],
            "whiten_bias_grad": whiten_bias_grad,
            "lr": dict(zip(groups, lrs)),
            "loss": losses[-1][0].item(),
            "logits": flat(ns["outputs"]),
            **snapshot(model),
        })

    test_loader = types.SimpleNamespace(images=test_u8.to(dtype) / 255, normalize=normalize)
    loss_kwargs = losses[0][1]
    if any(kw != loss_kwargs for _, kw in losses):
        fail("main()'s loss changed its arguments between steps")
    record["architecture"]["loss"] = loss_kwargs
    record["eval"] = {"logits": flat(mod.infer(model, test_loader, tta_level=0)),
                      "tta_logits": flat(mod.infer(model, test_loader, tta_level=2))}
    if ties[0]:
        fail(f"{ties[0]} max-pool windows have tied maxima; change DATA_SEED or TORCH_SEED")
    return record, state


def write_case(path, ref_path, data, record):
    train_u8, labels, test_u8 = data
    with open(ref_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    case = {
        "name": "airbench_recipe",
        "covers": ("airbench94_muon's model, whitening, label-smoothed summed loss, Nesterov SGD and Muon "
                   "under the reference schedule (4 steps, 1 step per epoch), BatchNorm statistics, "
                   "plain and test-time-augmented evaluation; float64, widths 8/16/16"),
        "reference": {"file": "airbench94_muon.py", "sha256": sha,
                      "generator": "frog-bench/scripts/airbench_golden.py", "torch": torch.__version__},
        "data": {"seed": DATA_SEED, "train_images": bytes(train_u8.reshape(-1).tolist()).hex(),
                 "train_labels": labels.tolist(), "test_images": bytes(test_u8.reshape(-1).tolist()).hex()},
        **record,
    }
    lines = []
    for key, value in case.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            inner = ",\n".join(json.dumps(v, separators=(",", ":"), allow_nan=False) for v in value)
            lines.append(f"{json.dumps(key)}:[\n{inner}\n]")
        else:
            lines.append(f"{json.dumps(key)}:{json.dumps(value, separators=(',', ':'), allow_nan=False)}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("{\n" + ",\n".join(lines) + "\n}\n")


def rel_err(got, want):
    """Max-norm relative error of two equally long lists (absolute where `want` is all zeros)."""
    scale = max(abs(w) for w in want) or 1.0
    return max(abs(g - w) for g, w in zip(got, want)) / scale


def f32_report(ref_path, data, record64, state64):
    record32, _ = run_recipe(ref_path, torch.float32, data, initial_state=state64)
    worst = {}

    def note(field, err):
        worst[field] = max(worst.get(field, 0.0), err)

    ev32, ev64 = record32["whitening"]["eigenvalues"], record64["whitening"]["eigenvalues"]
    note("whitening eigenvalues (own f32 whitening)", rel_err(ev32, ev64))
    w32 = torch.tensor(record32["whitening"]["weight"], dtype=torch.float64).view(24, 12)
    w64 = torch.tensor(record64["whitening"]["weight"], dtype=torch.float64).view(24, 12)
    signs = torch.sign((w32 * w64).sum(1, keepdim=True))
    note("whitening weight up to sign (own f32 whitening)", rel_err(flat(w32 * signs), flat(w64)))
    for s32, s64 in zip(record32["steps"], record64["steps"]):
        note("step loss", abs(s32["loss"] - s64["loss"]) / abs(s64["loss"]))
        note("step logits", rel_err(s32["logits"], s64["logits"]))
        for kind in ("params", "buffers"):
            for name, want in s64[kind].items():
                note(f"step {kind}", rel_err(s32[kind][name], want))
    for key in ("logits", "tta_logits"):
        note(f"eval {key}", rel_err(record32["eval"][key], record64["eval"][key]))
    for field, err in worst.items():
        print(f"{field:50s} {err:.2e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reference", help="path of airbench94_muon.py")
    ap.add_argument("--out", default=DEFAULT_OUT, help="where to write the case (default: %(default)s)")
    ap.add_argument("--f32-report", action="store_true",
                    help="print float32's error against the float64 case instead of writing it")
    args = ap.parse_args()
    if not os.path.isfile(args.reference):
        fail(f"reference not found: {args.reference}")
    torch.set_num_threads(1)  # one summation order, so a rerun reproduces the file byte for byte
    data = synthetic_data()
    record, state = run_recipe(args.reference, torch.float64, data)
    if args.f32_report:
        f32_report(args.reference, data, record, state)
    else:
        write_case(args.out, args.reference, data, record)
        print(f"wrote {os.path.normpath(args.out)} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
