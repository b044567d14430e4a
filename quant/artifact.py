"""The model artifact quant and einfhe share: one directory, a JSON DAG of ops and safetensors weights, versioned.

    manifest.json        {"format": "quant.artifact", "version": 1, "graph": "graph.json",
                          "weights": "weights.safetensors", "sha256": {file: hex digest}, "formats": [...]}
    graph.json           {"inputs": [{"name", "shape", "dtype"}], "nodes": [<node>, ...], "outputs": [names],
                          "example": {input name: tensor name} (only with export(..., keep_example=True))}
    weights.safetensors  every tensor a node names, under "<node name>.<key>"; the kept example inputs (the
                         batch the ranges were recorded on) under "example.<input name>"

A ``<node>`` is ``{"name", "op", "inputs": [names of inputs or earlier nodes], "attrs": {...},
"weights": {key: tensor name}, "range": [lo, hi] | null, "shape": [...]}`` (and ``"module"``, the torch
module path, for a submodule's call): ``range`` is the calibrated range of
its first input on the example inputs (what a polynomial stand-in for an activation is fitted on), ``shape`` its
output's shape without the batch axis (the first axis, always the batch). Ops and their attrs:

- ``linear`` ``{"format": the config's name, "layer": QuantLayer.describe()}`` with the quantized layer's own
  buffers (for ``QuantLinear``: ``qweight`` int32 packed int4 as ``quant.packing`` documents, W4A16's
  ``scales``/``zeros`` fp16 [groups, N], W4A8's ``gscale``/``gzero`` uint8 and ``wscale``, W4A4's ``scales``,
  ``oweight``/``oscale``/``outlier_idx``; ``W8A8Linear``, ``FMPQLinear``: theirs; ``bias``, ``input_scale``);
  or, without ``layer``, ``{"format": "W8A16" | "W8A8", "in_features", "out_features"}`` with ``weight`` int8
  [N, K], ``scale`` float32 [N] and ``bias``, ``input_scale`` (W8A8: activations int8 per token): a float
  ``nn.Linear`` quantized at export, or a ``W8A8Linear`` with float activations (``act_bits=16``); both read
  back as a ``W8A8Linear``.
- ``conv2d`` ``{"format": "W8A16", "stride", "padding"}``: ``weight`` int8 [Cout, Cin, kh, kw], ``scale``,
  ``bias``; a BatchNorm right after a convolution is folded into it at export.
- ``batchnorm`` (one not folded): ``scale``, ``shift`` float32 per channel (axis 1).
- ``layernorm`` ``{"normalized_shape", "eps"}``, ``weight``, ``bias``; ``embedding`` ``{"client_side": true}``,
  ``weight`` float32 [vocab, dim]: a lookup the client does before encrypting.
- ``add``, ``sub``, ``mul``, ``div``: two inputs, or one and ``{"constant": c}`` (``"reversed": true``: the
  constant on the left); ``matmul``: two inputs.
- ``relu``, ``gelu`` ``{"approximate"}``, ``silu``, ``tanh``, ``sigmoid``, ``square``, ``softmax`` ``{"dim"}``,
  ``normalize`` ``{"p", "dim", "eps"}``, ``clamp`` ``{"min", "max"}``.
- ``avgpool`` ``{"kernel_size", "stride"}``, ``mean`` and ``sum`` ``{"dim", "keepdim"}``, ``flatten``
  ``{"start_dim", "end_dim"}``, ``reshape`` ``{"shape"}``, ``permute`` ``{"dims"}``, ``transpose`` ``{"dim0",
  "dim1"}``, ``index`` ``{"index": [null | ":" | "..." | int, ...]}``, ``cast`` ``{"dtype"}``, ``zeros_like``,
  ``arange`` ``{"end"}`` (no input; made on the device of the graph's inputs). A size in ``shape`` or ``end`` is
  an int or ``["size", value, axis]`` (the size of an earlier value, so the model follows its input's shape) or
  ``["floordiv", size, c]``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from quant.errors import FormatError

__all__ = ["ARTIFACT_FORMAT", "ARTIFACT_VERSION", "read_artifact", "write_artifact"]

ARTIFACT_FORMAT, ARTIFACT_VERSION = "quant.artifact", 1
_GRAPH, _WEIGHTS = "graph.json", "weights.safetensors"


def _digest(path: Path) -> str:
    """The sha256 of a file, hex."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_artifact(path: str | Path, graph: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write the graph, the weights and the manifest that names and checksums them under ``path``; return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / _GRAPH).write_text(json.dumps(graph, indent=1))
    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(path / _WEIGHTS))
    formats = sorted({n["attrs"]["format"] for n in graph["nodes"] if "format" in n.get("attrs", {})})
    manifest = {"format": ARTIFACT_FORMAT, "version": ARTIFACT_VERSION, "graph": _GRAPH, "weights": _WEIGHTS,
                "sha256": {name: _digest(path / name) for name in (_GRAPH, _WEIGHTS)}, "formats": formats}
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return path


def read_artifact(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read an artifact's graph and weights, checking its format, version and checksums."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise FormatError("no readable manifest.json in the artifact", path=str(path)) from exc
    if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("version")) != (ARTIFACT_FORMAT,
                                                                                              ARTIFACT_VERSION):
        raise FormatError(f"not a {ARTIFACT_FORMAT} v{ARTIFACT_VERSION} manifest", path=str(path))
    for name in (_GRAPH, _WEIGHTS):
        if not (path / name).is_file() or _digest(path / name) != manifest.get("sha256", {}).get(name):
            raise FormatError("an artifact file is missing or does not match its checksum", file=name)
    return json.loads((path / _GRAPH).read_text()), load_file(str(path / _WEIGHTS))
