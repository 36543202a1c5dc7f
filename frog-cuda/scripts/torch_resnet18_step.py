#!/usr/bin/env python3
"""PyTorch's CIFAR ResNet-18 training step at batch 512 on the GPU, for the
ratio against frog-bench's CUDA engine (gpu_resnet18_throughput). Prints one
line; exits quietly when torch or a GPU is missing."""
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("torch: not installed, no PyTorch comparison")
    sys.exit(0)
if not torch.cuda.is_available():
    print("torch: no CUDA device")
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
    dev = torch.device("cuda")
    model = ResNet18().to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(512, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (512,), device=dev)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    n = 10
    t = time.perf_counter()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    ms = (time.perf_counter() - t) / n * 1e3
    print(f"torch {torch.__version__} ResNet-18 SGD step, batch 512, fp32 (cudnn tf32 {torch.backends.cudnn.allow_tf32}): "
          f"{ms:.1f} ms/step, {512 / ms * 1e3:.0f} samples/s on {torch.cuda.get_device_name()}")


main()
