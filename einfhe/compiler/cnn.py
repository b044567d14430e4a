"""Convolutional layers as the model compiler's linear layers: strided, padded 2-D convolutions, BatchNorm folded
into the layer before it, and average pooling, each a `Linear` over features flattened as (channels, rows, columns)
(torch's flatten order).

In the batched packing (`compile_model(..., batch=B)`: one ciphertext per feature, samples across the slots) a
convolution is a sparse matrix: each output ciphertext sums its kernel's k*k*C_in input ciphertexts times plaintext
scalars, with no rotation, and the compiler skips the zero weights (`_sparse_batched_linear`), so a layer costs its
multiply-accumulates, not its dense size. A stride only drops output rows; padding drops the terms that fall
outside. BatchNorm at inference is y = gamma * (x - mean) / sqrt(var + eps) + beta per channel: folded into the
rows of the layer before it, it costs nothing. Average pooling is a convolution with a constant kernel per channel.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .layers import Linear

__all__ = ["conv2d", "fold_batchnorm", "avg_pool2d", "conv_output_shape"]


def conv_output_shape(in_shape: tuple[int, int, int], channels: int, kernel: int, stride: int = 1,
                      padding: int = 0) -> tuple[int, int, int]:
    """(channels, rows, columns) a convolution of `kernel` x `kernel` gives on inputs of `in_shape`."""
    _, height, width = in_shape
    rows, cols = (height + 2 * padding - kernel) // stride + 1, (width + 2 * padding - kernel) // stride + 1
    if rows < 1 or cols < 1 or kernel < 1 or stride < 1 or padding < 0:
        raise ModelError(f"a {kernel}x{kernel} kernel with stride {stride} and padding {padding} does not fit "
                         f"inputs of shape {tuple(in_shape)}")
    return channels, rows, cols


def conv2d(weight: np.ndarray, bias: np.ndarray | None, in_shape: tuple[int, int, int], stride: int = 1,
           padding: int = 0) -> Linear:
    """A 2-D convolution (weight of shape (C_out, C_in, k, k), as torch's Conv2d) as a Linear layer on inputs of
    `in_shape` = (C_in, H, W)."""
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 4 or weight.shape[2] != weight.shape[3] or weight.shape[1] != in_shape[0]:
        raise ModelError(f"expected a square kernel of shape (C_out, {in_shape[0]}, k, k), got {weight.shape}")
    c_out, c_in, kernel, _ = weight.shape
    _, rows, cols = conv_output_shape(in_shape, c_out, kernel, stride, padding)
    _, height, width = in_shape
    matrix = np.zeros((c_out, rows, cols, c_in, height, width))
    for i in range(kernel):
        for j in range(kernel):
            for r in range(rows):
                y = r * stride + i - padding
                if not 0 <= y < height:
                    continue
                for c in range(cols):
                    x = c * stride + j - padding
                    if 0 <= x < width:
                        matrix[:, r, c, :, y, x] = weight[:, :, i, j]
    full_bias = None if bias is None else np.repeat(np.asarray(bias, dtype=np.float64), rows * cols)
    return Linear(matrix.reshape(c_out * rows * cols, c_in * height * width), full_bias)


def fold_batchnorm(layer: Linear, gamma, beta, mean, var, eps: float = 1e-5) -> Linear:
    """The layer followed by an inference-time BatchNorm over its output channels, as one Linear layer (the rows
    of channel c are rows c*P .. (c+1)*P - 1, P the positions per channel)."""
    gamma, beta, mean, var = (np.asarray(v, dtype=np.float64) for v in (gamma, beta, mean, var))
    rows = layer.weight.shape[0]
    if rows % gamma.size or not gamma.shape == beta.shape == mean.shape == var.shape:
        raise ModelError(f"BatchNorm over {gamma.size} channels does not divide the layer's {rows} outputs")
    per_row = np.repeat(gamma / np.sqrt(var + eps), rows // gamma.size)
    bias = np.zeros(rows) if layer.bias is None else np.asarray(layer.bias, dtype=np.float64)
    shift = np.repeat(beta - mean * gamma / np.sqrt(var + eps), rows // gamma.size)
    return Linear(np.asarray(layer.weight, dtype=np.float64) * per_row[:, None], bias * per_row + shift)


def avg_pool2d(in_shape: tuple[int, int, int], kernel: int, stride: int | None = None) -> Linear:
    """Average pooling of `kernel` x `kernel` windows (stride `kernel` unless given) as a Linear layer; a global
    average pool is `avg_pool2d(shape, shape[1])` on square inputs."""
    channels = in_shape[0]
    weight = np.zeros((channels, channels, kernel, kernel))
    weight[np.arange(channels), np.arange(channels)] = 1.0 / kernel**2
    return conv2d(weight, None, in_shape, stride or kernel, 0)
