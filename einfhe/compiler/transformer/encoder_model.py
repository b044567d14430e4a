"""A whole encoder (every layer of an `EncoderArtifact`) compiled into one plan a service can store and run.

Each layer's polynomial blocks are calibrated on the artifact's example sequences as they reach that layer (the
exact layers before it applied), each layer is compiled in the row packing (`compile_packed_layer`), the layers are
stacked into one chain whose bootstraps the level planner places across it (`stack_layers`, `place_bootstraps`), and
the chain is spliced into one plan (`splice_plan`). The client encrypts one sequence's embeddings, (tokens, width)
in `input_layout`, and decrypts every token's output vector in the same layout.
"""

from __future__ import annotations

import numpy as np

from ..levels import LevelPlan
from ..model_plan import ModelPlan
from .artifact import EncoderArtifact
from .encoder import EncoderBlocks, calibrate_encoder, encoder_layer
from .packed import compile_packed_layer
from .refresh import place_bootstraps
from .stack import splice_plan, stack_layers

__all__ = ["calibrate_layers", "compile_encoder", "polynomial_encoder"]


def calibrate_layers(artifact: EncoderArtifact, tokens: int) -> tuple[EncoderBlocks, ...]:
    """Each layer's polynomial blocks, fitted on the example sequences of `tokens` tokens as the exact layers before
    it leave them."""
    samples, blocks = artifact.samples(tokens), []
    for weights in artifact.layers:
        blocks.append(calibrate_encoder(weights, samples))
        samples = [encoder_layer(weights, x) for x in samples]
    return tuple(blocks)


def polynomial_encoder(artifact: EncoderArtifact, blocks: tuple[EncoderBlocks, ...], x: np.ndarray) -> np.ndarray:
    """What the encrypted program computes on embeddings x (tokens, width), in float64: every layer with its
    polynomial blocks."""
    for weights, layer_blocks in zip(artifact.layers, blocks):
        x = encoder_layer(weights, x, layer_blocks)
    return x


def compile_encoder(artifact: EncoderArtifact, blocks: tuple[EncoderBlocks, ...], tokens: int, *, slots: int,
                    max_depth: int, ring_dim: int = 65536) -> tuple[ModelPlan, LevelPlan]:
    """The encoder on `tokens` tokens with its calibrated `blocks` as one plan with its weights (a `ModelPlan` of
    no batch), at most `max_depth` levels between bootstraps (priced as at `ring_dim`), and the level planner's
    map."""
    layers = [compile_packed_layer(weights, layer_blocks, tokens, slots=slots)
              for weights, layer_blocks in zip(artifact.layers, blocks)]
    program, levels = place_bootstraps(stack_layers(layers), max_depth, slots, ring_dim=ring_dim)
    plan, plains = splice_plan(program, f"encoder[{len(layers)} layers, {tokens} tokens x {artifact.width}]")
    return ModelPlan(plan, tuple(plains), None, np.ones(1)), levels
