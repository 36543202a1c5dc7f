#!/usr/bin/env python3
"""PyTorch's CIFAR ResNet-18 SGD training step, for the ratio against
frog-bench's engine: on the GPU at batch 512 (against gpu_resnet18_throughput)
or on the CPU at batch 32 (against `frog-bench throughput --model resnet18
--batch-size 32`). Prints one line; exits quietly when torch, or the GPU
asked for, is missing.

Examples:
  python3 frog-cuda/scripts/torch_resnet18_step.py                  # GPU, batch 512
  python3 frog-cuda/scripts/torch_resnet18_step.py --device cpu --threads 2
"""
import argparse
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch: not installed, no PyTorch comparison")
    sys.exit(0)


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = None
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        layers, c_in = [], 64
        for i, c in enumerate([64, 128, 256, 512]):
            for b in range(2):
                layers.append(Block(c_in, c, 2 if i > 0 and b == 0 else 1))
                c_in = c
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--batch-size", type=int, help="default 512 on the GPU, 32 on the CPU (the bench's throughput default)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps, after 3 warm-up steps")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print("torch: no CUDA device")
        return
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    batch = a.batch_size or (512 if a.device == "cuda" else 32)
    dev = torch.device(a.device)
    model = ResNet18().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if a.device == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    sync()
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        step()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    ms = times[len(times) // 2]
    if a.device == "cuda":
        where = f"fp32 (cudnn tf32 {torch.backends.cudnn.allow_tf32}) on {torch.cuda.get_device_name()}"
    else:
        where = f"fp32 on the CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} ResNet-18 SGD step, batch {batch}, {where}: "
          f"median {ms:.1f} ms/step (min {times[0]:.1f}), {batch / ms * 1e3:.0f} samples/s")


main()
