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
from einfhe.compiler import read_integer_export
from .errors import ServiceError

__all__ = [
    "VARIANTS", "CompiledModel", "compile_variants", "read_checked",
]
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)

VARIANTS = ("single", "batch")


@dataclass(frozen=True)
class CompiledModel:
    """The einfhe programs of one model, by variant, and the features each sample has."""

    programs: dict[str, ModelPlan]
    n_features: int
    n_outputs: int


def compile_variants(directory: Path, input_shape: list[int] | None, slots: int) -> CompiledModel:
    """Compile the single-sample and batched programs of the integer model in `directory` at `slots` slots."""
    try:
        layers, n_features = einfhe.load_integer_model(directory)
    except ModelError as exc:
        raise ServiceError("unsupported_model", exc.message) from exc
    except _MALFORMED as exc:
        raise ServiceError("malformed_model", f"the manifest's layers are malformed: {exc!r}") from exc
    if input_shape is not None and int(np.prod(input_shape)) != n_features:
        raise ServiceError("malformed_model",
                           f"the manifest's input shape {input_shape} does not feed {n_features} features")
    try:
        programs = {
            "single": einfhe.compile_model(layers, n_features, slots=slots),
            "batch": einfhe.compile_model(layers, n_features, batch=slots, slots=slots),
        }
    except EinfheError as exc:
        raise ServiceError("unsupported_model", f"the model does not compile: {exc}") from exc
    except _MALFORMED as exc:  # shapes einfhe's reader let through but the compiler cannot use
        raise ServiceError("malformed_model", f"the model's arrays do not fit together: {exc!r}") from exc
    return CompiledModel(programs, n_features, int(programs["single"].plan.output_layout.shape[0]))


def read_checked(directory: Path) -> dict:
    """Read an uploaded model's manifest (its arrays checked numeric and finite), answering a malformed one with
    400 malformed_model."""
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
    for array in arrays.values():
        if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
            raise ServiceError("malformed_model", "model.npz holds non-numeric or non-finite arrays")
    return manifest
