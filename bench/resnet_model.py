"""The CIFAR-shaped ResNet of bench/resnet_bench.py in torch, under Orion's parameter names, with seeded random
weights whose BatchNorm statistics are those of the model's own activations (so every ReLU sees values of order 1,
as in a trained network), and the problem file bench/orion_resnet.py reads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

RESNET20 = {"blocks": (3, 3, 3), "channels": (16, 32, 64)}


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the shortcut (a strided 1x1 conv + BN where the shape changes), then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, momentum=None)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, momentum=None)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(c_out, momentum=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block on a batch of activations."""
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stem conv 3x3 + BN + ReLU, stages of basic blocks (the first stride 1, the others stride 2), global average
    pool, a Linear head: ResNet-20 with blocks (3, 3, 3) and channels (16, 32, 64)."""

    def __init__(self, blocks=RESNET20["blocks"], channels=RESNET20["channels"], classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0], momentum=None)
        self.layers = nn.ModuleList()
        c_in = channels[0]
        for stage, (count, c_out) in enumerate(zip(blocks, channels)):
            strides = [1 if stage == 0 else 2] + [1] * (count - 1)
            self.layers.append(nn.Sequential(*(BasicBlock(c_in if i == 0 else c_out, c_out, s)
                                               for i, s in enumerate(strides))))
            c_in = c_out
        self.linear = nn.Linear(channels[-1], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of (3, 32, 32) images."""
        out = torch.relu(self.bn1(self.conv1(x)))
        for layer in self.layers:
            out = layer(out)
        return self.linear(out.mean(dim=(2, 3)))


def seeded_resnet(blocks=RESNET20["blocks"], channels=RESNET20["channels"], seed: int = 0,
                  calibration: int = 64) -> tuple[ResNet, np.ndarray]:
    """A ResNet with seeded He-initialised weights, random BatchNorm affine terms and running statistics measured
    on `calibration` random images, in eval mode, and one more random image (1, 3, 32, 32) to encrypt."""
    torch.manual_seed(seed)
    net = ResNet(blocks, channels)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
        images = torch.randn(calibration + 1, 3, 32, 32).clamp(-2.5, 2.5)
        net.train()
        net(images[:calibration])
    net.eval()
    return net, images[calibration:].numpy()


def write_problem(path: str, net: ResNet, x: np.ndarray, blocks, channels, degrees, **extra) -> None:
    """The file bench/orion_resnet.py and bench/resnet_encrypted.py read: input, stages, ReLU degrees, the weights
    by parameter name, and any `extra` arrays."""
    arrays = {key: value.detach().numpy() for key, value in net.state_dict().items()}
    np.savez(path, x=np.asarray(x, np.float32), blocks=np.asarray(blocks), channels=np.asarray(channels),
             degrees=np.asarray(degrees), **arrays, **extra)
