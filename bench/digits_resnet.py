"""A ResNet-style CNN for scikit-learn's digits, in plain torch: a stem, one residual block, BatchNorm after every
convolution, square activations (one CKKS level each), average pooling and a linear head.

Used by bench/models_bench.py and by the tests of the model artifact (quant.export, einfhe's reader, the service).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import quant

__all__ = ["DigitsResNet", "digits_split", "export_quantized", "train"]


class DigitsResNet(nn.Module):
    """conv-BN-square, then x + BN(conv(square(BN(conv(x))))), square, 2x2 average pooling, linear: 8x8 -> classes."""

    def __init__(self, channels: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(1, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels)
        self.act0, self.act1, self.act2 = quant.Square(), quant.Square(), quant.Square()
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(channels * 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores for images ``[B, 1, 8, 8]``."""
        h = self.act0(self.bn0(self.stem(x)))
        h = self.act2(h + self.bn2(self.conv2(self.act1(self.bn1(self.conv1(h))))))
        return self.head(torch.flatten(self.pool(h), 1))


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as float32 images ``[N, 1, 8, 8]`` in [0, 1]: train and test images and labels (70/30, stratified)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return tuple(train_test_split(X, y, test_size=0.3, random_state=0, stratify=y))


def train(model: nn.Module, X: np.ndarray, y: np.ndarray, *, epochs: int = 150, seed: int = 0) -> nn.Module:
    """Full-batch Adam on cross-entropy (a few seconds on a CPU); the model is returned in eval mode."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    return model.eval()


def export_quantized(directory: str | Path, *, seed: int = 0) -> dict:
    """Train the ResNet on the digits split, quantize its head (W4A16, one group per row) and export it with
    ``quant.export`` to ``directory``: the model, the test images flattened, labels, float and quantized
    predictions."""
    Xtr, Xte, ytr, yte = digits_split()
    torch.manual_seed(seed)
    model = train(DigitsResNet(), Xtr, ytr, seed=seed)
    with torch.no_grad():
        float_pred = model(torch.from_numpy(Xte)).argmax(1).numpy()
        quant.quantize_(model, quant.W4A16(group_size=64))
        quant_pred = model(torch.from_numpy(Xte)).argmax(1).numpy()
    quant.export(model, torch.from_numpy(Xtr[:256]), directory)
    return {"model": model, "images": Xte, "X": Xte.reshape(len(Xte), -1), "y": yte, "float": float_pred,
            "quant": quant_pred}
