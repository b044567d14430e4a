"""Per-input-channel smoothing scales: round-to-nearest (none), AWQ and SmoothQuant.

Both scale recipes rescale input channel ``j`` of a linear layer by ``s_j`` (weights times ``s``,
activations times ``1 / s``), which leaves the float product unchanged and moves quantization error:

- **AWQ** -- Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression and
  Acceleration", MLSys 2024, section 3.2: ``s = mean|x|^alpha`` (normalized), with ``alpha`` searched on
  a grid to minimize the layer's output error on calibration activations. Salient channels (large
  activations) get larger weights, hence smaller relative rounding error.
- **SmoothQuant** -- Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training Quantization for
  Large Language Models", ICML 2023, section 4, eq. 4: ``s = max|x|^alpha / max|W|^(1 - alpha)``,
  migrating activation outliers into the weights so per-token activation quantization loses less. The
  paper picks ``alpha`` per model; here it is searched per layer on the same grid and objective as AWQ.

The objective is the squared error of the *whole* quantized layer (weights and, for W4A8/W4A4,
activations) against the float layer on the calibration rows; ``alpha = 0`` (no scaling) is always a
candidate, so a recipe never does worse than round-to-nearest on its calibration data.
"""

from __future__ import annotations

import torch
from torch import nn

from quant.configs import QuantConfig
from quant.errors import ConfigError
from quant.layers import layer_type

__all__ = ["RECIPES", "CALIBRATED_RECIPES", "ALPHA_GRID", "recipe_name", "smoothing_candidates", "search_smoothing"]

RECIPES = ("rtn", "awq", "smoothquant", "llm.int8")  # llm.int8: quant.w8a8_linear
CALIBRATED_RECIPES = ("awq", "smoothquant")  # the recipes that need calibration data
ALPHA_GRID = tuple(round(0.1 * i, 1) for i in range(1, 11))


def recipe_name(recipe: object) -> str:
    """Return the canonical (lower-case) name of a recipe, e.g. ``"SmoothQuant"`` -> ``"smoothquant"``."""
    name = recipe.strip().lower() if isinstance(recipe, str) else None
    if name not in RECIPES:
        raise ConfigError("unknown recipe", got=recipe, known=list(RECIPES))
    return name


def smoothing_candidates(recipe: str, weight: torch.Tensor, x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
    """Return ``(alpha, s)`` candidates of one recipe for a ``[N, K]`` weight and ``[T, K]`` activations."""
    recipe = recipe_name(recipe)
    if recipe not in CALIBRATED_RECIPES:
        return []
    a_mean = x.abs().mean(dim=0).clamp(min=1e-5)
    a_max = x.abs().amax(dim=0).clamp(min=1e-5)
    w_max = weight.abs().amax(dim=0).clamp(min=1e-5)
    out = []
    for alpha in ALPHA_GRID:
        if recipe == "awq":
            s = a_mean**alpha
            s = s / torch.sqrt(s.max() * s.min())
        else:
            s = a_max**alpha / w_max ** (1.0 - alpha)
        out.append((alpha, s.clamp(min=1e-4, max=1e4)))
    return out


@torch.no_grad()
def search_smoothing(linear: nn.Linear, x: torch.Tensor, config: QuantConfig, recipe: str,
                     device: torch.device | str | None = None) -> torch.Tensor | None:
    """Return the recipe's best smoothing vector for ``linear`` on activations ``x``, or None if none helps.

    The search runs on ``device`` (default: where ``x`` is); on CUDA each candidate runs the Triton kernels.
    """
    device = torch.device(device) if device is not None else x.device
    local = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None, device=device)
    local.load_state_dict({k: v.detach().float() for k, v in linear.state_dict().items()})
    x = x.to(device)
    weight, act_absmax = local.weight, x.abs().amax(dim=0)
    target = local(x)
    cls = layer_type(config)

    def error(smooth: torch.Tensor | None) -> float:
        layer = cls.from_linear(local, config, smooth=smooth, act_absmax=act_absmax)
        return float((layer(x) - target).pow(2).sum())

    best, best_err = None, error(None)
    for _alpha, s in smoothing_candidates(recipe, weight, x):
        err = error(s)
        if err < best_err:
            best, best_err = s, err
    return best
