"""Collect the inputs of a model's linear layers on calibration batches (deterministic subsampling).

A batch is adapted to the model's call the way data loaders hand it out: a tensor is the one argument; a
mapping (a dict, a tokenizer's ``BatchEncoding``) is keyword arguments; a tuple or list is positional
arguments when ``model.forward`` accepts them all, and otherwise ``(inputs, targets)`` of a
``DataLoader`` whose first element alone is the input. A batch the model cannot take raises
:class:`~quant.errors.CalibrationError` naming the shapes it saw.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from quant.errors import CalibrationError

__all__ = ["describe_batch", "batch_arguments", "run_batch", "collect_inputs"]


def describe_batch(batch: Any) -> str:
    """Describe a batch's structure and tensor shapes, e.g. ``(Tensor[32, 64] float32, Tensor[32] int64)``."""
    if isinstance(batch, torch.Tensor):
        return f"Tensor{list(batch.shape)} {str(batch.dtype).removeprefix('torch.')}"
    if isinstance(batch, Mapping):
        return "{" + ", ".join(f"{key!r}: {describe_batch(value)}" for key, value in batch.items()) + "}"
    if isinstance(batch, (tuple, list)):
        return "(" + ", ".join(describe_batch(item) for item in batch) + ("," if len(batch) == 1 else "") + ")"
    return type(batch).__name__


def _accepts(model: nn.Module, args: tuple) -> bool:
    """Return True if ``model.forward`` can be called with these positional arguments."""
    try:
        inspect.signature(model.forward).bind(*args)
    except TypeError:
        return False
    except ValueError:  # no signature to inspect: let the call decide
        return True
    return True


def batch_arguments(model: nn.Module, batch: Any) -> tuple[tuple, dict]:
    """Return the ``(args, kwargs)`` that call ``model`` on one calibration batch (see the module docstring)."""
    if isinstance(batch, torch.Tensor):
        return (batch,), {}
    if isinstance(batch, Mapping):
        return (), dict(batch)
    if isinstance(batch, (tuple, list)) and batch:
        if _accepts(model, tuple(batch)):
            return tuple(batch), {}
        if len(batch) >= 2 and _accepts(model, (batch[0],)):  # a DataLoader's (inputs, targets)
            return (batch[0],), {}
    raise CalibrationError("a calibration batch must be a tensor, a mapping of keyword arguments, a tuple of "
                           "positional arguments, or (inputs, targets)", seen=describe_batch(batch))


def run_batch(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on one batch, turning a model's refusal of it into a CalibrationError."""
    args, kwargs = batch_arguments(model, batch)
    try:
        return model(*args, **kwargs)
    except (TypeError, RuntimeError, ValueError, IndexError) as exc:
        raise CalibrationError("the model cannot run on a calibration batch", seen=describe_batch(batch),
                               reason=str(exc)[:200]) from exc


def _to_device(batch: Any, device: torch.device | None) -> Any:
    """Move every tensor of a batch (nested tuples, lists and mappings) to ``device``."""
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {key: _to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)([_to_device(item, device) for item in batch])
    return batch


@torch.no_grad()
def collect_inputs(model: nn.Module, names: Iterable[str], calibration: Iterable[Any], *, seed: int,
                   max_rows: int = 1024, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Return, for each named submodule, up to ``max_rows`` of its input rows as float32 ``[T, K]``.

    Batches are moved to ``device`` (where the model is) before the call; the rows are kept on that device.
    Rows are drawn without replacement by a generator seeded with ``seed``, so results are reproducible.
    """
    device = torch.device(device) if device is not None else None
    names = list(names)
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(
        lambda _m, args, name=name: rows[name].append(args[0].detach().reshape(-1, args[0].shape[-1]).float()))
        for name in names]
    try:
        batches = 0
        for batch in calibration:
            run_batch(model, _to_device(batch, device))
            batches += 1
    finally:
        for handle in handles:
            handle.remove()
    if batches == 0:
        raise CalibrationError("calibration data is empty; pass at least one batch")
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, chunks in rows.items():
        if not chunks:
            raise CalibrationError("a layer saw no input during calibration", layer=name)
        x = torch.cat(chunks)
        if x.shape[0] > max_rows:
            x = x[torch.randperm(x.shape[0], generator=generator)[:max_rows].to(x.device)]
        out[name] = x
    return out
