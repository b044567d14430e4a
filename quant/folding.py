"""Fold smoothing factors into the op before the smoothed layers, as SmoothQuant and AWQ do.

Xiao et al., "SmoothQuant" (ICML 2023), section 4: the factor ``1 / s`` that smooths a layer's input is
folded into the op that produces that input (a LayerNorm's weight and bias, or a linear layer's output
rows), and ``s`` into the layer's weights, so nothing is multiplied at run time. That is exact only when the
producer's output feeds nothing but the smoothed layers, which then share one ``s`` (the query, key and
value projections after a pre-LayerNorm, say). :func:`foldable_groups` finds such producers by tracing the
model with ``torch.fx``; a model that does not trace can name them itself.
"""

from __future__ import annotations

import torch
from torch import nn

from quant.errors import ConfigError

__all__ = ["foldable_groups", "fold_into_producer"]


def foldable_groups(model: nn.Module) -> dict[str, list[str]]:
    """Map each LayerNorm or Linear whose output feeds only ``nn.Linear`` layers to those layers (by tracing)."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as exc:  # fx raises many kinds of errors on untraceable Python
        raise ConfigError("cannot trace the model with torch.fx to find the ops to fold smoothing into; "
                          "pass fold={producer: [layers]} instead", reason=str(exc)[:200]) from exc
    modules = dict(model.named_modules())
    groups = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], (nn.LayerNorm, nn.Linear)):
            continue
        users = list(node.users)
        if users and all(user.op == "call_module" and isinstance(modules[user.target], nn.Linear)
                         and user.args[:1] == (node,) and not user.kwargs for user in users):
            groups[str(node.target)] = [str(user.target) for user in users]
    return groups


@torch.no_grad()
def fold_into_producer(producer: nn.Module, consumers: list[nn.Linear], smooth: torch.Tensor) -> None:
    """Divide the producer's output channels by ``smooth`` and multiply the consumers' input channels by it."""
    s = smooth.detach().float()
    if isinstance(producer, nn.LayerNorm) and producer.elementwise_affine and producer.weight.shape == s.shape:
        producer.weight.div_(s.to(producer.weight))
        if producer.bias is not None:
            producer.bias.div_(s.to(producer.bias))
    elif isinstance(producer, nn.Linear) and producer.out_features == s.shape[0]:
        producer.weight.div_(s.to(producer.weight)[:, None])
        if producer.bias is not None:
            producer.bias.div_(s.to(producer.bias))
    else:
        raise ConfigError("smoothing folds into an affine LayerNorm or a Linear of matching width",
                          producer=type(producer).__name__, width=s.shape[0])
    for layer in consumers:
        layer.weight.mul_(s.to(layer.weight)[None, :])
