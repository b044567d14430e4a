"""Read quant's model artifact (`quant.artifact` v1: graph.json + weights.safetensors) with numpy, into einfhe layers.

The artifact's DAG becomes the model compiler's nested sequence of layers. Every value is reached from the one
before it on its path: a one-input node from its input, a node joining two values from the value where their
paths meet (the two branches its layers are). A skip connection (an `add` of a value and a branch from it) becomes
a `Residual`, whose deferred scales the compiler aligns; a `matmul` or elementwise `mul` of two encrypted values a
`MatMul` of the two branches (cipher x cipher). What each op becomes is in `einfhe.compiler.artifact_ops`'s
tables: linear layers keep their integers where one scale per row allows, convolutions and average pooling
become the sparse integer matrices they are on flattened (C, H, W) features, activations polynomials fitted on the
calibrated input range the export recorded, reshapes are free and permutes rename ciphertexts. An embedding
lookup of the model's input marked client-side is the client's (`client_lookup`): the encrypted program starts
from its output. An op with no encrypted form yet (softmax, layernorm, a linear format it cannot read, ...) is
refused with its node's name: `encrypted_blockers` lists them all, so a service can still serve such a model in
plaintext. torch is never imported (safetensors.numpy).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import ModelError
from .artifact_ops import JOINS, LINEAR_FORMATS, UNARY
from .integer_model import checked_layers

__all__ = ["ARTIFACT_FORMAT", "client_lookup", "client_lookup_node", "encrypted_blockers", "load_artifact_model",
           "read_artifact_graph"]

ARTIFACT_FORMAT, ARTIFACT_VERSION = "quant.artifact", 1


def read_artifact_graph(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """Read an artifact's graph and its weights as numpy arrays, checking format, version and checksums."""
    from safetensors.numpy import load_file

    directory = Path(directory)
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
        if not isinstance(manifest, dict) or (manifest.get("format"), manifest.get("version")) != (
                ARTIFACT_FORMAT, ARTIFACT_VERSION):
            raise ModelError(f"not a {ARTIFACT_FORMAT} v{ARTIFACT_VERSION} manifest", path=str(directory))
        for name in ("graph.json", "weights.safetensors"):
            digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
            if digest != manifest.get("sha256", {}).get(name):
                raise ModelError(f"{name} does not match the manifest's checksum", path=str(directory))
        graph = json.loads((directory / "graph.json").read_text())
        arrays = load_file(str(directory / "weights.safetensors"))
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelError(f"cannot read a model artifact from {directory}: {exc}") from exc
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise ModelError("the artifact's graph.json has no node list", path=str(directory))
    return graph, arrays


def _blocker(node: dict) -> str | None:
    """Why a node has no encrypted form, or None when it has one."""
    op, attrs, label = node.get("op"), node.get("attrs", {}), node.get("module") or node.get("name")
    two = len(node.get("inputs", [])) == 2
    if op not in (JOINS if two else UNARY):
        return f"{label} ({op}{' of two values' if two and op in UNARY else ''})"
    if op == "linear" and attrs.get("format") not in LINEAR_FORMATS:
        return f"{label} (linear {attrs.get('format')}: a format with no encrypted form)"
    return None


def client_lookup_node(graph: dict) -> dict | None:
    """The embedding lookup the client does before encrypting: the one node that reads the model's one input, when
    the export marked it client-side (token ids never reach the server, their embeddings arrive encrypted)."""
    if len(graph.get("inputs", [])) != 1:
        return None
    source = graph["inputs"][0]["name"]
    readers = [node for node in graph["nodes"] if source in node.get("inputs", [])]
    if len(readers) == 1 and readers[0].get("op") == "embedding" and readers[0].get("attrs", {}).get("client_side"):
        return readers[0]
    return None


def encrypted_blockers(graph: dict) -> list[str]:
    """Every node of the graph that cannot run encrypted yet, as "name (op)" (the torch module path for a module),
    after "inputs (...)" when the graph has more than one input; a client-side lookup of the input is none."""
    count = len(graph.get("inputs", []))
    reasons = [] if count == 1 else [f"inputs ({count} model inputs: an encrypted model takes one)"]
    lookup = client_lookup_node(graph)
    return reasons + [reason for node in graph["nodes"]
                      if node is not lookup and (reason := _blocker(node)) is not None]


def client_lookup(directory: str | Path) -> np.ndarray | None:
    """The embedding table [vocab, dim] the client looks the model's token ids up in before encrypting (the input
    of the encrypted program is then `table[ids]`, flattened), or None when the model takes features."""
    graph, arrays = read_artifact_graph(directory)
    node = client_lookup_node(graph)
    return None if node is None else np.asarray(arrays[node["weights"]["weight"]], dtype=np.float64)


class _Paths:
    """Each value of the DAG as the value its layers start from and those layers."""

    def __init__(self, graph: dict, arrays: dict[str, np.ndarray], degree: int) -> None:
        lookup = client_lookup_node(graph)
        source = graph["inputs"][0] if lookup is None else lookup  # the client looks ids up before encrypting
        self.source = source["name"]
        self.shapes = {self.source: tuple(source["shape"])}
        self.start: dict[str, str] = {}
        self.layers: dict[str, list] = {}
        for node in graph["nodes"]:
            if node is lookup:
                continue
            name, inputs = node["name"], list(node["inputs"])
            if name in self.shapes or any(value not in self.shapes for value in inputs):
                raise ModelError(f"node {name!r} repeats a name or reads a value not computed before it")
            if len(inputs) == 2:
                left, right = inputs
                meet = next(value for value in self._back(left) if value in set(self._back(right)))
                self.start[name] = meet
                self.layers[name] = [JOINS[node["op"]](node, tuple(self.path(left, meet)),
                                                       tuple(self.path(right, meet)), self.shapes[left],
                                                       self.shapes[right])]
            else:
                weights = {key: arrays[tensor] for key, tensor in node.get("weights", {}).items()}
                self.start[name] = inputs[0]
                self.layers[name] = UNARY[node["op"]](node, weights, self.shapes[inputs[0]], degree)
            self.shapes[name] = tuple(node["shape"])

    def _back(self, value: str) -> list[str]:
        """The value and every value its path goes back through, to the model's input."""
        trail = [value]
        while trail[-1] != self.source:
            trail.append(self.start[trail[-1]])
        return trail

    def path(self, value: str, base: str) -> list:
        """The layers that compute `value` from `base` (an earlier value on its path)."""
        pieces = []
        while value != base:
            pieces.append(self.layers[value])
            value = self.start[value]
        return [layer for piece in reversed(pieces) for layer in piece]


def _layers(graph: dict, arrays: dict[str, np.ndarray], degree: int) -> list:
    """The DAG as the layers that compute its one output from its one input."""
    if len(graph.get("inputs", [])) != 1 or len(graph.get("outputs", [])) != 1:
        raise ModelError("an encrypted model takes exactly one input and gives one output")
    paths = _Paths(graph, arrays, degree)
    return paths.path(graph["outputs"][0], paths.source)


def load_artifact_model(directory: str | Path, activation_degree: int = 2) -> tuple[list, int]:
    """Read the artifact in `directory` as einfhe layers and the number of input features; an op with no
    encrypted form is refused with its node's name (see `encrypted_blockers`)."""
    graph, arrays = read_artifact_graph(directory)
    blockers = encrypted_blockers(graph)
    if blockers:
        raise ModelError(f"these ops cannot run encrypted yet: {', '.join(blockers)}", path=str(directory))
    layers = checked_layers(lambda: _layers(graph, arrays, activation_degree), "model artifact", directory)
    source = client_lookup_node(graph) or graph["inputs"][0]
    return layers, int(np.prod(source["shape"]))
