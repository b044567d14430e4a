"""A whole encoder (every layer of an `EncoderArtifact`) compiled into one plan a service can store and run.

Each layer's polynomial blocks are calibrated on the artifact's example sequences as they reach that layer (the
exact layers before it applied), each layer is compiled in the row packing (`compile_packed_layer`), the layers are
stacked into one chain whose bootstraps the level planner places across it (`stack_programs`, `place_bootstraps`), and
the chain is spliced into one plan (`splice_plan`). The client encrypts one sequence's embeddings, (tokens, width)
in `input_layout`, and decrypts every token's output vector in the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..levels import LevelPlan
from ..model_plan import ModelPlan
from .artifact import EncoderArtifact
from .encoder import EncoderBlocks, calibrate_stack, encoder_stack
from .packed import compile_packed_layer
from .program import EncoderProgram, stack_programs
from .refresh import chain_levels, place_bootstraps
from .stack import splice_plan

__all__ = ["CompiledEncoder", "calibrate_layers", "compile_encoder", "encoder_chain", "polynomial_encoder"]


@dataclass(frozen=True)
class CompiledEncoder:
    """A compiled encoder: its program (one plan and its weights, no batch), the level planner's map, and the
    fewest levels between bootstraps any placement could leave it (its longest stretch no refresh can cut)."""

    program: ModelPlan
    levels: LevelPlan
    least_depth: int


def calibrate_layers(artifact: EncoderArtifact, tokens: int) -> tuple[EncoderBlocks, ...]:
    """Each layer's polynomial blocks, fitted on the example sequences of `tokens` tokens (padded, their padding
    masked out as keys) as the exact layers before it leave them."""
    return calibrate_stack(artifact.layers, artifact.samples(tokens), lengths=artifact.lengths(tokens))


def polynomial_encoder(artifact: EncoderArtifact, blocks: tuple[EncoderBlocks, ...], x: np.ndarray,
                       length: int | None = None) -> np.ndarray:
    """What the encrypted program computes on embeddings x (tokens, width), in float64: every layer with its
    polynomial blocks (`length`: the real tokens, the rest padding masked out as keys; None: all of them)."""
    return encoder_stack(artifact.layers, x, blocks, length)


def encoder_chain(artifact: EncoderArtifact, blocks: tuple[EncoderBlocks, ...], tokens: int, *,
                  slots: int) -> EncoderProgram:
    """Every layer compiled in the row packing and stacked into one chain, before its bootstraps (the chain whose
    values einfhe.runtime.value_magnitudes measures for `compile_encoder`)."""
    return stack_programs(compile_packed_layer(weights, layer_blocks, tokens, slots=slots)
                          for weights, layer_blocks in zip(artifact.layers, blocks))


def compile_encoder(artifact: EncoderArtifact, blocks: tuple[EncoderBlocks, ...], tokens: int, *, slots: int,
                    max_depth: int, ring_dim: int = 65536, magnitudes: dict | None = None,
                    headroom: float | None = None, chain: EncoderProgram | None = None) -> CompiledEncoder:
    """The encoder on `tokens` tokens with its calibrated `blocks` as one plan with its weights, at most `max_depth`
    levels between bootstraps (priced as at `ring_dim`); with the `magnitudes` of `encoder_chain`'s values and the
    bootstrap's `headroom`, each refreshed value past it is shrunk first and grown back after (place_bootstraps).
    `chain` is `encoder_chain`'s result for the same arguments where the caller already has it (compiling every
    layer is most of the work, and the chain does not depend on the depth or the magnitudes)."""
    stacked = chain if chain is not None else encoder_chain(artifact, blocks, tokens, slots=slots)
    chain = chain_levels(stacked)
    bounds = (0, *chain.cuts, chain.depth)
    program, levels = place_bootstraps(stacked, max_depth, slots, ring_dim=ring_dim, magnitudes=magnitudes,
                                       headroom=headroom)
    plan, plains = splice_plan(program, f"encoder[{len(blocks)} layers, {tokens} tokens x {artifact.width}]")
    return CompiledEncoder(ModelPlan(plan, tuple(plains), None, np.ones(1)), levels,
                           max(hi - lo for lo, hi in zip(bounds, bounds[1:])))
