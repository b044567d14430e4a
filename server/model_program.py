"""A registered model: quant's integer export read back with numpy, and its compiled encrypted programs.

Plaintext inference runs in worker processes (server.plaintext_worker), on quant's torch modules loaded from the
same export: the integers, zero points and scales the operator registered, the same ones the encrypted program is
compiled from (`einfhe.load_integer_model`), so plaintext and encrypted answers are two readings of one model.

Each model is compiled twice at registration, each program with parameters for its own depth:
    "single"   one sample per request, features replicated in the slots (iteration-space matvecs, rotations);
    "batch"    up to `slots` samples per request, samples in slots and features across ciphertexts (no rotation);
               it costs the same for one sample as for `slots` of them, so the client fills it.
The work a model may cost is capped by the number of plan steps (`Settings.max_plan_steps`).

The API process reads the export with einfhe's numpy reader only: it never imports quant, and so never torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import einfhe
from einfhe import EinfheError, ModelError, ModelPlan
from einfhe.compiler import (BATCHED_ONLY, encrypted_blockers, load_artifact_model, read_artifact_graph,
                             read_integer_export)
from einfhe.compiler.artifact_model import client_lookup_node
from .encoder_program import encoder_summary
from .errors import ServiceError

__all__ = ["VARIANTS", "CompiledModel", "UploadedModel", "compile_variants", "read_checked"]
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)

VARIANTS = ("single", "batch")


@dataclass(frozen=True)
class UploadedModel:
    """What registration reads of an upload: its kind ("artifact": quant.export; "integer": the older
    quant.export_integer_model), one sample's shape, its layers as "op:name", and the ops that keep it from running
    encrypted (it is then served in plaintext only)."""

    kind: str
    input_shape: list[int] | None
    layers: list[str]
    blockers: list[str]
    n_outputs: int | None = None
    inputs: list[dict] | None = None  # an artifact's inputs: name, shape (batch axis excluded), dtype
    lookup: dict | None = None  # an embedding lookup the client does before encrypting: {"vocab", "dim"}
    encoder: dict | None = None  # a transformer encoder served by server.encoder_program (its summary)


@dataclass(frozen=True)
class CompiledModel:
    """The einfhe programs of one model, by variant (none for a plaintext-only model), and its sizes."""

    programs: dict[str, ModelPlan]
    n_features: int
    n_outputs: int


def _load_layers(directory: Path, model: UploadedModel) -> tuple[list, int]:
    """einfhe's layers of the uploaded model and its number of input features."""
    try:
        if model.kind == "artifact":
            return load_artifact_model(directory)
        return einfhe.load_integer_model(directory)
    except ModelError as exc:
        raise ServiceError("unsupported_model", exc.message) from exc
    except _MALFORMED as exc:
        raise ServiceError("malformed_model", f"the model's layers are malformed: {exc!r}") from exc


def compile_variants(directory: Path, model: UploadedModel, slots: int) -> CompiledModel:
    """Compile the single-sample and batched programs of the model in `directory` at `slots` slots (an artifact
    whose skip connections need the batched packing gets the batched one only; one with ops that cannot run
    encrypted gets none; an encoder's program is server.encoder_program's)."""
    if model.blockers or model.encoder:
        return CompiledModel({}, int(np.prod(model.input_shape)), int(model.n_outputs))
    layers, n_features = _load_layers(directory, model)
    dim = model.lookup["dim"] if model.lookup else 1  # the client encrypts each token id's embedding
    if model.input_shape is not None and int(np.prod(model.input_shape)) * dim != n_features:
        raise ServiceError("malformed_model",
                           f"the manifest's input shape {model.input_shape} does not feed {n_features} features")
    programs = {}
    try:
        programs["batch"] = einfhe.compile_model(layers, n_features, batch=slots, slots=slots)
        if not any(isinstance(layer, BATCHED_ONLY) for layer in layers):  # no residuals, products, reorders
            programs["single"] = einfhe.compile_model(layers, n_features, slots=slots)
    except EinfheError as exc:
        raise ServiceError("unsupported_model", f"the model does not compile: {exc}") from exc
    except _MALFORMED as exc:  # shapes einfhe's reader let through but the compiler cannot use
        raise ServiceError("malformed_model", f"the model's arrays do not fit together: {exc!r}") from exc
    return CompiledModel(programs, n_features, int(programs["batch"].plan.output_layout.shape[0]))


def _check_arrays(arrays: dict[str, np.ndarray], source: str) -> None:
    """Refuse non-numeric or non-finite weights."""
    for array in arrays.values():
        if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
            raise ServiceError("malformed_model", f"{source} holds non-numeric or non-finite arrays")


def _read_artifact(directory: Path) -> UploadedModel:
    """Read and check an uploaded artifact (graph.json + weights.safetensors, checksums from manifest.json)."""
    try:
        graph, arrays = read_artifact_graph(directory)
        inputs = [{"name": str(spec["name"]), "shape": [int(n) for n in spec["shape"]], "dtype": str(spec["dtype"])}
                  for spec in graph["inputs"]]
        shape = inputs[0]["shape"]
        nodes = graph["nodes"]
        names = {spec["name"] for spec in inputs}
        for node in nodes:
            if not isinstance(node, dict) or not isinstance(node.get("op"), str) or any(
                    name not in names for name in node["inputs"]):
                raise ServiceError("malformed_model", f"graph node {node!r:.80} is not an op over earlier values")
            if any(ref not in arrays for ref in node.get("weights", {}).values()):
                raise ServiceError("malformed_model", f"node {node['name']!r} names weights the file lacks")
            names.add(node["name"])
        (output,) = graph["outputs"]
        last = next(node for node in nodes if node["name"] == output)
        blockers = encrypted_blockers(graph)
        encoder, why = encoder_summary(graph, arrays) if blockers else (None, [])
        blockers = why if encoder is not None else blockers
        lookup = client_lookup_node(graph)
        if lookup is not None:
            vocab, dim = (int(n) for n in arrays[lookup["weights"]["weight"]].shape)
            lookup = {"vocab": vocab, "dim": dim}
    except ModelError as exc:
        raise ServiceError("malformed_model", f"not a readable quant artifact: {exc.message}") from exc
    except (*_MALFORMED, StopIteration) as exc:
        raise ServiceError("malformed_model", f"the artifact's graph is malformed: {exc!r}") from exc
    _check_arrays(arrays, "weights.safetensors")
    layers = [f"{node['op']}:{node.get('module') or node['name']}" for node in nodes]
    return UploadedModel("artifact", shape, layers, blockers, int(np.prod(last["shape"])), inputs, lookup, encoder)


def read_checked(directory: Path) -> UploadedModel:
    """Read an uploaded model (an artifact, or an integer export: its arrays checked numeric and finite), answering
    a malformed one with 400 malformed_model."""
    if (directory / "graph.json").exists():
        return _read_artifact(directory)
    try:
        manifest, arrays = read_integer_export(directory)
    except ModelError as exc:
        raise ServiceError("malformed_model",
                           f"not a quant integer model (model.npz + manifest.json): {exc.message}") from exc
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not all(isinstance(layer, dict) and "op" in layer for layer in layers):
        raise ServiceError("malformed_model", "the manifest's layers must be a list of objects with an 'op'")
    for layer in layers:
        refs = layer.get("arrays", {})
        missing = [ref for ref in (refs.values() if isinstance(refs, dict) else [refs]) if ref is not None
                   and (not isinstance(ref, str) or ref not in arrays)]
        if missing:
            raise ServiceError("malformed_model", f"layer {layer.get('name')!r} names arrays model.npz lacks: {missing}")
    _check_arrays(arrays, "model.npz")
    return UploadedModel("integer", manifest.get("input_shape"),
                         [f"{layer['op']}:{layer.get('fn') or layer.get('name', '')}" for layer in layers], [])
