"""A transformer encoder artifact (MiniLM's shape: einfhe.compiler.transformer.artifact) served encrypted.

Registration reads the artifact as a BERT-style encoder; when it is one, its encrypted program is the "tokens"
variant: one sentence per request, its `tokens` token vectors in the row packing, every layer on the server with
the bootstraps the level planner places, on 128-bit bootstrapping parameters with the most levels between refreshes
whose evaluation keys fit the server's key-set cap (more levels take more key-switching digits: larger keys, fewer
bootstraps), or on the test-only ring where the server allows it. A bootstrap refreshes only values below its
headroom: for a program it serves, each value's largest magnitude on the example sequences
(einfhe.runtime.magnitudes, on the exact simulator) tells the level planner which refreshed values to shrink first
and grow back after.

The client computes the embeddings (its token ids never leave it), pads the sentence to `tokens` with the pad id,
and sends its real token count as the job's `length`: the layers mask the padded positions out as keys, as the
plaintext path's attention mask does (the program's key masks, made per job for that length: `key_mask_operands`).
So the server learns each sentence's length, what an attention mask would tell it too; the token ids and vectors
stay encrypted. The client decrypts every token's output vector and mean-pools over its real tokens: the result is
one ciphertext either way, so pooling on the server would save no bytes and would cost it rotations and a level.

An encoder whose export kept no example inputs, or whose evaluation keys would exceed this server's key-set cap,
is served in plaintext only, the reason named among its encrypted blockers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from einfhe import EinfheError, ModelError, ModelPlan, Parameters, ParameterError
from einfhe.compiler import read_artifact_graph
from einfhe.compiler.transformer import (CompiledEncoder, EncoderArtifact, KeyMask, calibrate_layers,
                                         compile_encoder, encoder_chain, read_encoder_artifact)
from einfhe.params import bootstrap_headroom
from einfhe.plan.cost import evaluation_key_bytes
from einfhe.runtime.magnitudes import value_magnitudes

from .errors import ServiceError

__all__ = ["ENCODER_VARIANT", "EncoderProgram", "compile_encoder_program", "encoder_embeddings", "encoder_summary",
           "key_mask_operands", "refresh_choices"]

ENCODER_VARIANT = "tokens"
MAX_REFRESH_DEPTH = 12  # levels between bootstraps tried first (then fewer, until a 128-bit ring holds them)


@dataclass(frozen=True)
class EncoderProgram:
    """The compiled encoder: its program, its parameters, its evaluation keys' estimated bytes, the fewest bytes
    any number of levels between bootstraps would take (what a key-set cap must allow at least), the fewest
    levels between bootstraps it can have (its longest stretch no refresh can cut), and the level planner's map
    of its stages and bootstraps."""

    program: ModelPlan
    params: Parameters
    key_bytes: int
    least_key_bytes: int
    least_depth: int
    level_map: str


def encoder_summary(graph: dict, arrays: dict[str, np.ndarray]) -> tuple[dict | None, list[str]]:
    """What a client needs of an encoder artifact ({layers, width, heads, vocab, positions, normalize, inputs: the
    names of its plaintext inputs, token ids then the attention mask}) and why it
    cannot run encrypted (empty when it can); (None, []) for an artifact that is no encoder."""
    try:
        encoder = read_encoder_artifact(graph, arrays)
    except ModelError:
        return None, []
    summary = {"layers": len(encoder.layers), "width": encoder.width, "heads": encoder.layers[0].heads,
               "vocab": len(encoder.embeddings.word), "positions": len(encoder.embeddings.position),
               "normalize": encoder.normalize, "inputs": [spec["name"] for spec in graph["inputs"]]}
    if encoder.example is None:
        return summary, ["example (no example inputs kept to calibrate the encrypted layers on: export with "
                         "quant.export(..., keep_example=True))"]
    return summary, []


def _read(directory: Path) -> EncoderArtifact:
    return read_encoder_artifact(*read_artifact_graph(directory))


def refresh_choices(slots: int, insecure: bool) -> list[Parameters]:
    """Bootstrapping parameters for each number of levels between refreshes a 128-bit ring holds at `slots` slots,
    deepest first (the fewest bootstraps; more levels take more key-switching digits, so larger keys)."""
    if insecure:
        return [Parameters.insecure_for_tests(MAX_REFRESH_DEPTH, slots, bootstrap=True)]
    choices = []
    for depth in range(MAX_REFRESH_DEPTH, 0, -1):
        try:
            choices.append(Parameters.derive(depth, slots, bootstrap=True))
        except ParameterError:
            continue
    if not choices:
        raise ServiceError("work_limit_exceeded", f"no 128-bit ring with bootstrapping holds {slots} slots")
    return choices


def _compiled(encoder: EncoderArtifact, blocks, tokens: int, chain, slots: int, refresh: Parameters, insecure: bool,
              magnitudes: dict | None = None) -> tuple[CompiledEncoder, Parameters]:
    """The encoder (its stacked `chain`) with at most `refresh.depth` levels between bootstraps (with `magnitudes`,
    each refreshed value kept below the bootstrap's headroom), and the parameters for its depth."""
    headroom = None if magnitudes is None else bootstrap_headroom(refresh.scale_bits, refresh.first_mod_bits)
    compiled = compile_encoder(encoder, blocks, tokens, slots=slots, max_depth=refresh.depth,
                               ring_dim=refresh.ring_dim, magnitudes=magnitudes, headroom=headroom, chain=chain)
    made = Parameters.insecure_for_tests if insecure else Parameters.derive
    return compiled, made(compiled.program.plan.depth, slots, bootstrap=True)


def compile_encoder_program(directory: Path, tokens: int, slots: int, insecure: bool,
                            key_cap: int) -> EncoderProgram:
    """Calibrate and compile the encoder in `directory` for `tokens` tokens at `slots` slots on bootstrapping
    parameters (the test-only ring when `insecure`), with the most levels between bootstraps whose evaluation keys
    fit `key_cap` bytes (the most the ring holds when none fit); a program that fits is compiled again with its
    values' magnitudes on the example sequences, so that no bootstrap meets a value past its headroom (measuring
    them runs the whole chain once per example on the simulator: about 30 s per sentence for MiniLM-L6)."""
    choices = refresh_choices(slots, insecure)
    try:
        encoder = _read(directory)
        blocks = calibrate_layers(encoder, tokens)
        chain = encoder_chain(encoder, blocks, tokens, slots=slots)  # compiled once: the placements below reuse it
        refresh = choices[0]
        compiled, params = _compiled(encoder, blocks, tokens, chain, slots, refresh, insecure)
        rotations = len(compiled.program.plan.rotations)
        choices = [p for p in choices if p.depth >= compiled.least_depth]  # shallower: a series no refresh can cut
        fitting = [p for p in choices if evaluation_key_bytes(p, rotations) <= key_cap]
        if fitting and fitting[0].depth < compiled.program.plan.depth:
            refresh = fitting[0]
            compiled, params = _compiled(encoder, blocks, tokens, chain, slots, refresh, insecure)
        if compiled.program.plan.estimate(params).key_bytes <= key_cap:  # it will be served encrypted
            magnitudes = value_magnitudes(chain, encoder.samples(tokens), encoder.lengths(tokens))
            compiled, params = _compiled(encoder, blocks, tokens, chain, slots, refresh, insecure, magnitudes)
    except EinfheError as exc:
        raise ServiceError("unsupported_model", f"the encoder does not compile for {tokens} tokens at {slots} "
                                                f"slots: {exc.message}") from exc
    least = min(evaluation_key_bytes(p, rotations) for p in choices)
    program = compiled.program
    return EncoderProgram(program, params, program.plan.estimate(params).key_bytes, least, compiled.least_depth,
                          str(compiled.levels))


def key_mask_operands(program: dict, length: int | None) -> tuple[tuple[int, np.ndarray], ...]:
    """The plain operands a stored program's job takes for a sentence of `length` real tokens: its key masks made
    for that length, by operand position (none for None: the stored ones, every token real); 400 invalid_request
    for a length the program cannot take."""
    if length is None:
        return ()
    masks = [(position, KeyMask.from_json(mask)) for position, mask in program.get("key_masks", ())]
    if not masks:
        raise ServiceError("invalid_request", f"the {program['variant']!r} program takes no length: only an "
                                              "encoder's 'tokens' program masks padding (register it again if it "
                                              "was registered before its programs had key masks)")
    try:
        return tuple((position, mask.array(length)) for position, mask in masks)
    except ModelError as exc:  # a length past the program's tokens
        raise ServiceError("invalid_request", f"length: {exc.message}") from exc


def encoder_embeddings(directory: Path) -> dict[str, np.ndarray]:
    """The embedding tables and LayerNorm a client computes its token vectors with (TokenEmbeddings.to_arrays)."""
    return _read(directory).embeddings.to_arrays()
