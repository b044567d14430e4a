"""A BERT-style encoder (MiniLM's shape) read from quant's model artifact with numpy: the token embeddings the client
computes itself, and each encoder layer's weights as `EncoderWeights`.

The graph must be what a BERT forward traces to (bench/quant_accuracy.py's MiniLM, Hugging Face's layout):
    embeddings  word[ids] + position[arange] (+ token_type[zeros]), LayerNorm         -> the client's, in numpy
    layer l     q, k, v = linear(x); softmax(q k^T / sqrt(head) + mask) v; linear; LayerNorm(x + .);
                linear, gelu, linear; LayerNorm(h + .)                                 -> the server's, encrypted
    pooling     the mean over the real tokens (the attention mask), then L2 normalisation -> the client's
Each layer's wiring is checked (which value every linear, residual and LayerNorm reads), so a pre-LayerNorm or
otherwise different block is refused, never silently run as this one. Linear layers in any of quant's formats are
read as the real weights their integers stand for (einfhe.compiler.artifact_ops). A sentence is padded with `pad_id`
up to the program's token positions; the encrypted layers mask the padded positions out as keys, as the attention
mask does (the row packing's key masks take the sentence's real token count at run time:
einfhe.compiler.transformer.keymask), and the pooling skips them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import ModelError
from ..artifact_ops import UNARY
from .encoder import EncoderWeights

__all__ = ["EncoderArtifact", "TokenEmbeddings", "read_encoder_artifact"]

PAD_ID = 0  # BERT's [PAD]: the id a sentence is padded with to the program's token count


@dataclass(frozen=True, eq=False)
class TokenEmbeddings:
    """The embedding block a client computes on its own token ids: word + position (+ token type 0), LayerNorm."""

    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray | None
    gamma: np.ndarray
    beta: np.ndarray
    eps: float

    ARRAYS = ("word", "position", "token_type", "gamma", "beta")

    def __call__(self, ids) -> np.ndarray:
        """(tokens, width) float64 for one sequence of token ids, the i-th at position i."""
        ids = np.asarray(ids)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ModelError(f"token ids are one sequence of integers, not {ids.dtype} {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.word)):
            raise ModelError(f"token ids must lie in 0..{len(self.word) - 1}")
        if len(ids) > len(self.position):
            raise ModelError(f"{len(ids)} tokens: the model has {len(self.position)} positions")
        e = self.word[ids].astype(np.float64) + self.position[:len(ids)]
        if self.token_type is not None:
            e = e + self.token_type[0]
        mean = e.mean(axis=-1, keepdims=True)
        return (e - mean) / np.sqrt(e.var(axis=-1, keepdims=True) + self.eps) * self.gamma + self.beta

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The tables as float32 arrays by name (for np.savez), eps as a one-element array."""
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float32) for name in self.ARRAYS
                  if getattr(self, name) is not None}
        return {**arrays, "eps": np.asarray([self.eps])}

    @classmethod
    def from_arrays(cls, arrays) -> "TokenEmbeddings":
        """Rebuild from `to_arrays`' output (an np.load of its .npz)."""
        tables = {name: np.asarray(arrays[name], dtype=np.float64) if name in arrays else None for name in cls.ARRAYS}
        return cls(**tables, eps=float(np.asarray(arrays["eps"])[0]))


@dataclass(frozen=True, eq=False)
class EncoderArtifact:
    """A BERT-style encoder: the client's embeddings, the layers, whether the model L2-normalises its pooled output,
    and the example token ids the export kept (None when it kept none)."""

    embeddings: TokenEmbeddings
    layers: tuple[EncoderWeights, ...]
    normalize: bool
    example: np.ndarray | None

    @property
    def width(self) -> int:
        """The hidden width."""
        return self.layers[0].width

    def samples(self, tokens: int) -> list[np.ndarray]:
        """The example sequences as the client sends them to a program of `tokens` tokens (cut, or padded with
        PAD_ID), embedded: what the encrypted layers are calibrated on."""
        padded = np.full((len(self._examples()), tokens), PAD_ID, dtype=np.int64)
        cut = self.example[:, :tokens]
        padded[:, :cut.shape[1]] = cut
        return [self.embeddings(ids) for ids in padded]

    def lengths(self, tokens: int) -> list[int]:
        """Each example sequence's real token count in a program of `tokens` tokens (up to its last id that is not
        PAD_ID, at least 1, at most `tokens`): the lengths `samples` are masked with."""
        real = self._examples()[:, :tokens] != PAD_ID
        return [int(row.nonzero()[0].max()) + 1 if row.any() else 1 for row in real]

    def _examples(self) -> np.ndarray:
        """The example token ids, or ModelError when the export kept none."""
        if self.example is None:
            raise ModelError("the artifact keeps no example inputs to calibrate the encrypted layers on: export it "
                             "with quant.export(..., keep_example=True)")
        return self.example


class _Graph:
    """The artifact's nodes by name, and who reads what."""

    def __init__(self, graph: dict, arrays: dict[str, np.ndarray]) -> None:
        self.nodes = {node["name"]: node for node in graph["nodes"]}
        self.order = [node["name"] for node in graph["nodes"]]
        self.arrays = arrays

    def of(self, op: str) -> list[dict]:
        """Every node of one op, in graph order."""
        return [self.nodes[name] for name in self.order if self.nodes[name]["op"] == op]

    def weight(self, node: dict, key: str) -> np.ndarray:
        """A node's tensor as float64."""
        return np.asarray(self.arrays[node["weights"][key]], dtype=np.float64)

    def readers(self, value: str, op: str) -> list[dict]:
        """The nodes of `op` that read `value`."""
        return [node for node in self.of(op) if value in node["inputs"]]

    def reaches(self, value: str, op: str) -> bool:
        """True when `value` is computed from a node of `op` through one-input nodes."""
        while value in self.nodes:
            node = self.nodes[value]
            if node["op"] == op:
                return True
            if len(node["inputs"]) != 1:
                return False
            value = node["inputs"][0]
        return False


def _refuse(why: str) -> ModelError:
    return ModelError(f"not a BERT-style encoder the encrypted program can run: {why}")


def _linear(graph: _Graph, node: dict) -> tuple[np.ndarray, np.ndarray]:
    """A linear node's real weight (in, out) and bias."""
    (layer,) = UNARY["linear"](node, {k: graph.arrays[v] for k, v in node["weights"].items()}, (1,), 1)
    weight = np.asarray(layer.weight, dtype=np.float64)
    bias = np.zeros(weight.shape[0]) if layer.bias is None else np.asarray(layer.bias, dtype=np.float64)
    return weight.T, bias


def _embeddings(graph: _Graph, source: str) -> tuple[TokenEmbeddings, str]:
    """The embedding block and the value it ends with (its LayerNorm)."""
    lookups = graph.of("embedding")
    word = [node for node in lookups if node["inputs"] == [source]]
    kinds = {"word": word[0] if len(word) == 1 else None, "position": None, "token_type": None}
    for node in lookups:
        if node is kinds["word"]:
            continue
        kind = "token_type" if graph.reaches(node["inputs"][0], "zeros_like") else \
            "position" if graph.reaches(node["inputs"][0], "arange") else None
        if kind is None or kinds[kind] is not None:
            raise _refuse(f"embedding {node['name']!r} is neither the position nor the token-type table")
        kinds[kind] = node
    if kinds["word"] is None or kinds["position"] is None:
        raise _refuse("it needs a word and a position embedding of the token ids")
    norms = graph.of("layernorm")
    if not norms:
        raise _refuse("no LayerNorm after the embeddings")
    norm = norms[0]
    table = {kind: None if node is None else graph.weight(node, "weight") for kind, node in kinds.items()}
    return TokenEmbeddings(table["word"], table["position"], table["token_type"], graph.weight(norm, "weight"),
                           graph.weight(norm, "bias"), float(norm["attrs"].get("eps", 1e-12))), norm["name"]


def _one(nodes: list[dict], what: str) -> dict:
    if len(nodes) != 1:
        raise _refuse(f"{what} ({len(nodes)} found)")
    return nodes[0]


def _layer(graph: _Graph, x: str, index: int) -> tuple[EncoderWeights, str]:
    """The encoder layer reading value `x`, checked wire by wire, and the value it ends with."""
    linears = graph.readers(x, "linear")
    if len(linears) != 3:
        raise _refuse(f"layer {index} must start with three projections of its input, not {len(linears)}")
    q, k, v = linears  # in forward order: query, key, value
    heads = int(_one([n for n in graph.of("reshape") if n["inputs"] == [q["name"]]], f"layer {index}'s head split")
                ["shape"][-2])
    residual = _one([n for n in graph.of("add") if x in n["inputs"] and len(n["inputs"]) == 2],
                    f"layer {index}'s attention residual")
    out = graph.nodes[next(name for name in residual["inputs"] if name != x)]
    norm1 = _one(graph.readers(residual["name"], "layernorm"), f"layer {index}'s first LayerNorm")
    inner = _one(graph.readers(norm1["name"], "linear"), f"layer {index}'s feed-forward input")
    act = _one(graph.readers(inner["name"], "gelu"), f"layer {index}'s GELU")
    down = _one(graph.readers(act["name"], "linear"), f"layer {index}'s feed-forward output")
    residual2 = _one([n for n in graph.readers(norm1["name"], "add") if down["name"] in n["inputs"]],
                     f"layer {index}'s feed-forward residual")
    norm2 = _one(graph.readers(residual2["name"], "layernorm"), f"layer {index}'s second LayerNorm")
    if out["op"] != "linear" or act["attrs"].get("approximate", "none") != "none":
        raise _refuse(f"layer {index}'s attention output must be a linear layer and its GELU the exact one")
    (wq, bq), (wk, bk), (wv, bv), (wo, bo), (w1, b1), (w2, b2) = (_linear(graph, n)
                                                                  for n in (q, k, v, out, inner, down))
    width = wq.shape[0]
    if heads < 1 or width % heads:
        raise _refuse(f"layer {index} splits width {width} into {heads} heads")
    scale = [n for n in graph.of("div") if n["attrs"].get("constant") is not None]
    if scale and not math.isclose(scale[index]["attrs"]["constant"], math.sqrt(width // heads), rel_tol=1e-6):
        raise _refuse(f"layer {index} scales its scores by {scale[index]['attrs']['constant']}, not sqrt(head width)")
    weights = EncoderWeights(wq, bq, wk, bk, wv, bv, wo, bo, graph.weight(norm1, "weight"), graph.weight(norm1, "bias"),
                             w1, b1, w2, b2, graph.weight(norm2, "weight"), graph.weight(norm2, "bias"), heads,
                             float(norm1["attrs"].get("eps", 1e-12)))
    return weights, norm2["name"]


def read_encoder_artifact(graph: dict, arrays: dict[str, np.ndarray]) -> EncoderArtifact:
    """The encoder in an artifact's graph and weights (einfhe.compiler.read_artifact_graph's), or ModelError saying
    what does not fit."""
    if not graph.get("inputs") or graph["inputs"][0].get("dtype", "").rstrip("0123456789") not in ("int", "uint"):
        raise _refuse("its first input must be integer token ids")
    nodes = _Graph(graph, arrays)
    try:
        embeddings, x = _embeddings(nodes, graph["inputs"][0]["name"])
        layers = []
        while nodes.readers(x, "linear"):
            weights, x = _layer(nodes, x, len(layers))
            layers.append(weights)
    except (KeyError, TypeError, ValueError, IndexError, StopIteration) as exc:
        raise _refuse(f"its graph is malformed for one ({exc!r})") from exc
    if not layers:
        raise _refuse("no encoder layer after the embeddings")
    if len(nodes.of("softmax")) != len(layers):
        raise _refuse("one softmax per layer")
    masked = [n["name"] for n in nodes.of("mul") if x in n["inputs"]]
    if not any(nodes.readers(name, "sum") for name in masked):
        raise _refuse("the last layer's output must be mean-pooled over the masked tokens")
    example = graph.get("example", {}).get(graph["inputs"][0]["name"])
    example = None if example is None else np.asarray(arrays[example]).astype(np.int64)
    if example is not None and example.ndim != 2:
        raise _refuse("the kept example token ids must be a (batch, length) array")
    normalize = nodes.nodes.get(graph["outputs"][0], {}).get("op") == "normalize"
    return EncoderArtifact(embeddings, tuple(layers), normalize, example)
