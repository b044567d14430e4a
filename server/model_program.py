"""A registered model: quant's integer export read back, its plaintext forward, and its compiled encrypted programs.

Plaintext inference is `quant.integer_format.run_integer_model`, the numpy forward that defines the integer
format: the server keeps only the export (not the torch module), and this forward runs exactly the integers,
zero points and scales the operator registered, the same ones the encrypted program is compiled from
(`einfhe.load_integer_model`), so plaintext and encrypted answers are two readings of one model.

Each model is compiled twice at registration, each program with parameters for its own depth:
    "single"   one sample per request, features replicated in the slots (iteration-space matvecs, rotations);
    "batch"    up to `slots` samples per request, samples in slots and features across ciphertexts (no rotation);
               it costs the same for one sample as for `slots` of them, so the client fills it.
The work a model may cost is capped by the number of plan steps (`Settings.max_plan_steps`).

quant is imported where it is used: importing it loads torch (~2 s), which the API process needs for plaintext
inference but the job workers (which import this package too) never do.
"""

from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import einfhe
from einfhe import EinfheError, ModelError, ModelPlan
from .errors import ServiceError

if TYPE_CHECKING:
    from quant.integer_format import IntegerModel

__all__ = [
    "VARIANTS", "CompiledModel", "compile_variants", "load_model", "plaintext_forward", "read_checked",
]
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)

VARIANTS = ("single", "batch")


@dataclass(frozen=True)
class CompiledModel:
    """The einfhe programs of one model, by variant, and the features each sample has."""

    programs: dict[str, ModelPlan]
    n_features: int
    n_outputs: int


@functools.lru_cache(maxsize=8)
def load_model(directory: str) -> IntegerModel:
    """The integer model stored in `directory` (registered models never change, so reads are cached)."""
    from quant.integer_format import read_integer_model

    return read_integer_model(directory)


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


def plaintext_forward(model: IntegerModel, x: np.ndarray) -> np.ndarray:
    """The model on a plaintext batch (rows are samples), by the integer format's numpy forward."""
    from quant.integer_format import run_integer_model

    return run_integer_model(model, x).astype(np.float64)


def read_checked(directory: Path) -> IntegerModel:
    """Read an uploaded model, answering a malformed one with 400 malformed_model."""
    from quant.integer_format import read_integer_model

    try:
        model = read_integer_model(directory)
    except (*_MALFORMED, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ServiceError("malformed_model",
                           f"not a quant integer model (model.npz + manifest.json): {exc!r}") from exc
    for array in model.arrays.values():
        if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
            raise ServiceError("malformed_model", "model.npz holds non-numeric or non-finite arrays")
    return model
