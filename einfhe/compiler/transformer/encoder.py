"""One transformer encoder layer (BERT's post-LayerNorm block, as in MiniLM): its weights, the exact float layer
(numpy), the calibration of its polynomial blocks on sample inputs, and the layer with those blocks in floating point.

    q, k, v = x Wq + bq, x Wk + bk, x Wv + bv            split into heads: (heads, tokens, head width)
    p = softmax(q k^T / sqrt(head width))                 per head, over the keys (the real ones: `length`)
    h = LayerNorm1(x + (p v) Wo + bo)
    y = LayerNorm2(h + gelu(h W1 + b1) W2 + b2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import ModelError
from .approx import PolyGelu, PolyLayerNorm, PolySoftmax, centred_scores, gelu
from .keymask import check_length

__all__ = ["EncoderWeights", "EncoderBlocks", "encoder_layer", "encoder_stack", "calibrate_encoder",
           "calibrate_stack", "heads_of"]

RANGE_MARGIN = 1.25      # calibrated ranges are widened by this factor around their centre
GELU_DEGREES = (13, 27, 59, 119)  # the largest degree at each level count of OpenFHE's Chebyshev series, 5..8
SOFTMAX_REACH = 8.0      # centred scores past this are halved (and the softmax squared back) until they are not


@dataclass(frozen=True, eq=False)
class EncoderWeights:
    """An encoder layer's weights, matrices as (in, out) so that a layer is x @ W + b; `heads` attention heads."""

    wq: np.ndarray
    bq: np.ndarray
    wk: np.ndarray
    bk: np.ndarray
    wv: np.ndarray
    bv: np.ndarray
    wo: np.ndarray
    bo: np.ndarray
    ln1_gamma: np.ndarray
    ln1_beta: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    ln2_gamma: np.ndarray
    ln2_beta: np.ndarray
    heads: int
    eps: float = 1e-12

    def __post_init__(self) -> None:
        width = np.shape(self.wq)[0]
        if self.heads < 1 or width % self.heads:
            raise ModelError(f"the width {width} must split into {self.heads} heads", heads=self.heads)
        for name in ("wq", "wk", "wv", "wo"):
            if np.shape(getattr(self, name)) != (width, width):
                raise ModelError(f"{name} must be ({width}, {width})", shape=np.shape(getattr(self, name)))
        if np.shape(self.w1)[0] != width or np.shape(self.w2) != (np.shape(self.w1)[1], width):
            raise ModelError("the feed-forward weights must be (width, inner) and (inner, width)",
                             w1=np.shape(self.w1), w2=np.shape(self.w2))

    @property
    def width(self) -> int:
        """The hidden width."""
        return int(np.shape(self.wq)[0])

    @property
    def head_width(self) -> int:
        """The width of one head."""
        return self.width // self.heads

    @classmethod
    def random(cls, rng: np.random.Generator, width: int, heads: int, inner: int) -> "EncoderWeights":
        """A layer with weights drawn like a trained one's scale (for tests and examples)."""
        def matrix(n, m):
            return rng.normal(0, 1 / np.sqrt(n), (n, m))

        def vector(n, spread=0.1):
            return rng.normal(0, spread, n)

        return cls(matrix(width, width), vector(width), matrix(width, width), vector(width),
                   matrix(width, width), vector(width), matrix(width, width), vector(width),
                   1 + vector(width), vector(width), matrix(width, inner), vector(inner),
                   matrix(inner, width), vector(width), 1 + vector(width), vector(width), heads)


def heads_of(weights: EncoderWeights, x: np.ndarray) -> np.ndarray:
    """(tokens, width) -> (heads, tokens, head width)."""
    return x.reshape(x.shape[0], weights.heads, weights.head_width).transpose(1, 0, 2)


@dataclass(frozen=True)
class EncoderBlocks:
    """The polynomial blocks of one layer, fitted on calibrated ranges."""

    softmax: PolySoftmax
    norm1: PolyLayerNorm
    gelu: PolyGelu
    norm2: PolyLayerNorm


def _softmax(scores: np.ndarray, length: int | None) -> np.ndarray:
    if length is not None:  # the padded keys masked out, as BERT's attention mask does
        scores = np.where(np.arange(scores.shape[-1]) < check_length(length, scores.shape[-1]), scores, -np.inf)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _layernorm(x: np.ndarray, gamma, beta, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(axis=-1, keepdims=True) + eps) * gamma + beta


def encoder_layer(weights: EncoderWeights, x: np.ndarray, blocks: EncoderBlocks | None = None,
                  trace: dict | None = None, length: int | None = None) -> np.ndarray:
    """The layer on x (tokens, width) in float64: exact (numpy softmax, LayerNorm, GELU), or with the polynomial
    `blocks` as the encrypted program computes them; `trace` collects the inputs of each non-linear block;
    `length`: only the first `length` tokens are real keys (the rest padding, masked out of every query's
    attention; every position is still computed as a query)."""
    w = weights
    x = np.asarray(x, dtype=np.float64)
    trace = {} if trace is None else trace
    q, k, v = (heads_of(w, x @ m + b) for m, b in ((w.wq, w.bq), (w.wk, w.bk), (w.wv, w.bv)))
    scores = np.einsum("hqe,hke->hqk", q, k) / np.sqrt(w.head_width)
    trace.setdefault("scores", []).append(scores)
    p = _softmax(scores, length) if blocks is None else blocks.softmax(scores, length)
    attended = np.einsum("hqk,hke->qhe", p, v).reshape(x.shape[0], w.width)
    residual = x + attended @ w.wo + w.bo
    trace.setdefault("norm1", []).append(residual)
    h = _layernorm(residual, w.ln1_gamma, w.ln1_beta, w.eps) if blocks is None else blocks.norm1(residual)
    inner = h @ w.w1 + w.b1
    trace.setdefault("gelu", []).append(inner)
    f = (gelu(inner) if blocks is None else blocks.gelu(inner)) @ w.w2 + w.b2
    trace.setdefault("norm2", []).append(h + f)
    return _layernorm(h + f, w.ln2_gamma, w.ln2_beta, w.eps) if blocks is None else blocks.norm2(h + f)


def _widened(values: np.ndarray) -> tuple[float, float]:
    lo, hi = float(values.min()), float(values.max())
    centre, half = (lo + hi) / 2, max((hi - lo) / 2, 1e-6) * RANGE_MARGIN
    return centre - half, centre + half


def calibrate_encoder(weights: EncoderWeights, samples, *, lengths=None, exp_degree: int = 13,
                      gelu_degrees: tuple[int, ...] = GELU_DEGREES, tolerance: float = 1e-4) -> EncoderBlocks:
    """Fit the layer's blocks on the ranges the exact layer meets on `samples` (arrays of (tokens, width); with
    `lengths`, each sample's real token count, its padded keys masked out as the encrypted program masks them),
    widened by RANGE_MARGIN (variances from half their least, the softmax's row sums by the factor the widened range
    lets its largest term grow; scores wider than SOFTMAX_REACH halved and squared back, `PolySoftmax`), GELU by the
    cheapest of `gelu_degrees` within `tolerance`. The exp's range holds every key's centred score, the padded keys'
    too (zeroed before centring: `centred_scores`), as the program meets them. Inputs outside these ranges make the
    polynomials diverge: calibrate on inputs like the ones the layer will see."""
    trace: dict = {}
    samples = list(samples)
    lengths = [None] * len(samples) if lengths is None else list(lengths)
    if len(lengths) != len(samples):
        raise ModelError("calibrate_encoder takes one length per sample", samples=len(samples), lengths=len(lengths))
    for x, length in zip(samples, lengths):
        encoder_layer(weights, x, trace=trace, length=length)
    if not trace:
        raise ModelError("calibrate_encoder needs at least one sample")
    centred, real = zip(*(centred_scores(s, length) for s, length in zip(trace["scores"], lengths)))
    lo, hi = _widened(np.concatenate([c.ravel() for c in centred]))
    length = centred[0].shape[-1]
    squarings = max(0, math.ceil(math.log2(max(-lo, hi) / SOFTMAX_REACH)))
    shrink = 2.0 ** -squarings
    # the largest row sum, grown as the widened range lets the largest term grow (exp(hi - the largest score seen))
    top = max(float(c[..., r > 0].max()) for c, r in zip(centred, real))
    sums = max(float((np.exp(c * shrink) * r).sum(axis=-1).max()) for c, r in zip(centred, real)) * np.exp(
        (hi - top) * shrink)
    softmax = PolySoftmax.fit(lo, hi, length, min(sums, length * np.exp(hi * shrink)), squarings=squarings,
                              exp_degree=exp_degree, tolerance=tolerance)

    def norm(name, gamma, beta):
        var = np.concatenate([v.var(axis=-1) for v in trace[name]])
        return PolyLayerNorm.fit(gamma, beta, var.min() / 2, var.max() * RANGE_MARGIN, eps=weights.eps,
                                 tolerance=tolerance)

    inner = _widened(np.concatenate([v.ravel() for v in trace["gelu"]]))
    for degree in gelu_degrees:  # the cheapest degree within the tolerance (the last one otherwise)
        activation = PolyGelu.fit(*inner, degree)
        if activation.error <= tolerance:
            break
    return EncoderBlocks(softmax, norm("norm1", weights.ln1_gamma, weights.ln1_beta), activation,
                         norm("norm2", weights.ln2_gamma, weights.ln2_beta))


def encoder_stack(layers, x: np.ndarray, blocks=None, length: int | None = None) -> np.ndarray:
    """The `layers` one after another on x (tokens, width), in float64: exact (`blocks` None) or each with its
    polynomial blocks (`length` as in `encoder_layer`)."""
    for index, weights in enumerate(layers):
        x = encoder_layer(weights, x, None if blocks is None else blocks[index], length=length)
    return x


def calibrate_stack(layers, samples, *, lengths=None, **options) -> tuple[EncoderBlocks, ...]:
    """Each of `layers`' blocks fitted (`calibrate_encoder`, with `options`) on `samples` as the exact layers before
    it leave them (`lengths`: each sample's real token count, its padding masked out as keys)."""
    samples, blocks = list(samples), []
    lengths = [None] * len(samples) if lengths is None else list(lengths)
    for weights in layers:
        blocks.append(calibrate_encoder(weights, samples, lengths=lengths, **options))
        samples = [encoder_layer(weights, x, length=length) for x, length in zip(samples, lengths)]
    return tuple(blocks)
