"""Lowering to plans: the einsum compiler (`einsum`), the step emitter it and the model compiler share (`builder`,
with `relayout`), the choice among candidate plans within budgets (`search`, pricing by `pricing`), the ring
choice (`rings`, the default where `bounds` keeps results safe on the small ring), the contraction strategies
(`strategies`), the model compiler (`model`, returning `model_plan`'s ModelPlan, over the layers of `layers`, an
opening quadratic block collapsed by `quadratic_form`, with the composite ReLU of `activations`, the per-layer
ReLU choice of `activation_choice` and the branching layers of `branches`), its bootstrap placement (`levels`),
CNN layers as linear layers (`cnn`), one-sample CNNs in the channel-packed layout (`packed_cnn`, over
`image_layout` and `slot_linear`), the integer-model reader (`integer_model`) and the model-artifact reader
(`artifact_model`)."""

from __future__ import annotations

from .artifact_model import client_lookup, encrypted_blockers, load_artifact_model, read_artifact_graph
from .branches import BATCHED_ONLY
from .builder import CostCapExceeded, Packed, PlanBuilder
from .cnn import avg_pool2d, conv2d, conv_output_shape, fold_batchnorm
from .einsum import DEFAULT_MAX_CTS, DEFAULT_SLOTS, Cipher, cipher, compile_einsum
from .integer_model import load_integer_model, read_integer_export
from .levels import LevelPlan, greedy_levels, plan_levels
from .pricing import FloorPrices, MemoizedCostModel
from .relayout import Move, relayout_moves
from .search import choose_plan
from .activation_choice import ReLUChoice, choose_relu
from .layers import (ChebyshevActivation, CompositeReLU, IntLinear, Linear, MatMul, Quadratic, ReLUWithin, Reorder,
                     Residual, Square)
from .model import ModelPlan, SmallBatchWarning, compile_model

__all__ = [
    "BATCHED_ONLY", "CostCapExceeded", "FloorPrices", "MemoizedCostModel", "Move", "choose_plan", "relayout_moves",
    "ChebyshevActivation", "Cipher", "CompositeReLU", "DEFAULT_MAX_CTS", "DEFAULT_SLOTS", "IntLinear", "LevelPlan",
    "Linear", "MatMul", "ModelPlan", "Packed", "PlanBuilder", "Quadratic", "Reorder", "Residual", "SmallBatchWarning", "Square", "cipher",
    "compile_einsum", "compile_model", "greedy_levels", "load_integer_model", "plan_levels", "read_integer_export",
    "avg_pool2d", "conv2d", "conv_output_shape", "fold_batchnorm", "client_lookup", "encrypted_blockers",
    "load_artifact_model", "read_artifact_graph", "ReLUChoice", "ReLUWithin", "choose_relu",
]
