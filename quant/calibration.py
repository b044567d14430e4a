"""Collect the inputs of a model's linear layers on calibration batches (deterministic subsampling)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from quant.errors import CalibrationError

__all__ = ["run_batch", "collect_inputs"]


def run_batch(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on one batch: a tensor, a tuple/list of positional args, or a dict of keyword args."""
    if isinstance(batch, torch.Tensor):
        return model(batch)
    if isinstance(batch, (tuple, list)):
        return model(*batch)
    if isinstance(batch, dict):
        return model(**batch)
    raise CalibrationError("a calibration batch must be a tensor, a tuple of args or a dict of kwargs",
                           got=type(batch).__name__)


@torch.no_grad()
def collect_inputs(model: nn.Module, names: Iterable[str], calibration: Iterable[Any], *, seed: int,
                   max_rows: int = 1024) -> dict[str, torch.Tensor]:
    """Return, for each named submodule, up to ``max_rows`` of its input rows as float32 ``[T, K]``.

    Rows are drawn without replacement by a generator seeded with ``seed``, so results are reproducible.
    """
    names = list(names)
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_pre_hook(
        lambda _m, args, name=name: rows[name].append(args[0].detach().reshape(-1, args[0].shape[-1]).float().cpu()))
        for name in names]
    try:
        batches = 0
        for batch in calibration:
            run_batch(model, batch)
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
            x = x[torch.randperm(x.shape[0], generator=generator)[:max_rows]]
        out[name] = x
    return out
