"""KV4 on a small decoder language model trained here: perplexity float / KV8 / KV4 (+ SmoothAttention), cache bytes.

The model is byte-level (2 layers, d_model 128, 2 heads of 64, rotate-half RoPE, context 128), trained for
``--steps`` on the docstrings of the Python standard library (every Python ships them; nothing is
downloaded); one module in eight is held out for evaluation. The float perplexity runs the whole window at
once; the quantized ones decode token by token through :class:`quant.QuantKVCache` (keys after RoPE; per
head, or with keys in smaller groups of channels; plain or centered on the calibration means; or static
per-channel ranges from calibration, with keys cached before RoPE and rotated when read, or after it) and
the decode attention's torch reference (on CUDA the Triton kernel, tested equal to it), so the cache that
is measured is the one that is read. Prints each perplexity's ratio to float and the cache's bytes against
an fp16 cache of the same tokens: over all the windows, for one window of 128 tokens, and per token (the
asymptote: without the tables of centers or ranges, which do not grow with the tokens).

Usage: ``python bench/kv_cache_bench.py [--steps 500] [--windows 400] [--checkpoint lm.pt] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
from torch import nn

from quant import QuantKVCache, fold_smooth_attention, kv_centers, kv_ranges, rotate_half_rope, smooth_attention_scales
from quant.kernels import decode_attention
from stdlib_text import stdlib_docstrings

CONTEXT = 128
ROPE_BASE = 10000.0


class Block(nn.Module):
    """Pre-LayerNorm decoder block: causal self-attention with RoPE, then a GELU MLP."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def qkv(self, h: torch.Tensor, positions: torch.Tensor, rope_keys: bool = True) -> tuple[torch.Tensor, ...]:
        """Queries (after RoPE), keys (after RoPE unless ``rope_keys`` is False) and values, ``[B, H, T, D]``."""
        b, t, d = h.shape

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        x = self.ln1(h)
        k = split(self.k_proj(x))
        k = rotate_half_rope(k, positions, ROPE_BASE) if rope_keys else k
        return rotate_half_rope(split(self.q_proj(x)), positions, ROPE_BASE), k, split(self.v_proj(x))

    def finish(self, h: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Add the attention output (``[B, H, T, D]``) and the MLP to the residual stream."""
        b, _, t, _ = attended.shape
        h = h + self.o_proj(attended.transpose(1, 2).reshape(b, t, -1))
        return h + self.fc2(nn.functional.gelu(self.fc1(self.ln2(h))))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Causal attention over the whole window (training and the float perplexity)."""
        q, k, v = self.qkv(h, torch.arange(h.shape[1]))
        return self.finish(h, nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))


class TinyLM(nn.Module):
    """Byte-level decoder language model."""

    def __init__(self, d: int = 128, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, 256, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, 256]`` for a window of tokens."""
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, caches: list[QuantKVCache]) -> torch.Tensor:
        """Logits of each position, computed one token at a time through quantized KV caches."""
        out = []
        for t in range(tokens.shape[1]):
            h = self.embed(tokens[:, t:t + 1])
            for block, cache in zip(self.blocks, caches):
                q, k, v = block.qkv(h, torch.tensor([t]), rope_keys=cache.rope_base is None)
                cache.append(k, v)
                attended = decode_attention(q[:, :, 0], cache, q.shape[-1] ** -0.5)
                h = block.finish(h, attended[:, :, None])
            out.append(self.head(self.ln(h)))
        return torch.cat(out, dim=1)


def corpus() -> tuple[torch.Tensor, torch.Tensor]:
    """Training and held-out bytes: the docstrings of every eighth module are held out."""
    train, test = [], []
    modules = sorted({module for module, _ in stdlib_docstrings()})
    held_out = set(modules[3::8])
    for module, doc in stdlib_docstrings():
        (test if module in held_out else train).append(doc.encode("ascii", "replace") + b"\n\n")
    as_tensor = lambda parts: torch.tensor(list(b"".join(parts)), dtype=torch.long)  # noqa: E731
    return as_tensor(train), as_tensor(test)


def train(model: TinyLM, data: torch.Tensor, steps: int, seed: int) -> float:
    """Train on random windows with AdamW (cosine schedule); return the last step's loss."""
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - CONTEXT - 1, (32,), generator=generator)
        batch = torch.stack([data[s:s + CONTEXT + 1] for s in starts])
        loss = nn.functional.cross_entropy(model(batch[:, :-1]).reshape(-1, 256), batch[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return float(loss.detach())


def perplexity(logits: torch.Tensor, windows: torch.Tensor) -> float:
    """exp(mean cross-entropy) of next-byte prediction."""
    return math.exp(float(nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 256), windows[:, 1:].reshape(-1))))


@torch.no_grad()
def smoothed_copy(model: TinyLM, calibration: torch.Tensor) -> TinyLM:
    """A copy of the model with SmoothAttention factors (from calibration keys after RoPE) folded in."""
    smoothed = TinyLM()
    smoothed.load_state_dict(model.state_dict())
    h = smoothed.embed(calibration)
    for block in smoothed.blocks:
        _, k, _ = block.qkv(h, torch.arange(h.shape[1]))
        fold_smooth_attention(block.q_proj, block.k_proj, smooth_attention_scales(k.transpose(1, 2).flatten(0, 1)))
        h = block(h)
    return smoothed


@torch.no_grad()
def calibration_kv(model: TinyLM, calibration: torch.Tensor, rope_keys: bool = True) -> list[tuple[torch.Tensor, ...]]:
    """Each layer's keys (after RoPE, or before it) and values ``[B, H, T, D]`` on the calibration windows."""
    kv, h = [], model.embed(calibration)
    for block in model.blocks:
        _, k, v = block.qkv(h, torch.arange(h.shape[1]), rope_keys=rope_keys)
        kv.append((k, v))
        h = block(h)
    return kv


def main() -> None:
    """Train, then measure perplexity and cache bytes for float, KV8, KV4 (+ SmoothAttention, + key groups)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--windows", type=int, default=400, help="held-out windows of 128 bytes (400: all of them)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the rows to this JSON file")
    parser.add_argument("--checkpoint", help="load the trained model from this file if it exists, else train and "
                                             "save it there")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    train_bytes, test_bytes = corpus()
    model = TinyLM()
    if args.checkpoint and os.path.exists(args.checkpoint):
        model.load_state_dict(torch.load(args.checkpoint))
        print(f"loaded the trained model from {args.checkpoint}", flush=True)
    else:
        t0 = time.time()
        loss = train(model, train_bytes, args.steps, args.seed)
        print(f"trained {args.steps} steps on {len(train_bytes)} bytes in {time.time() - t0:.0f} s, last loss "
              f"{loss:.3f}; {len(test_bytes)} held-out bytes", flush=True)
        if args.checkpoint:
            torch.save(model.state_dict(), args.checkpoint)
    model.eval()
    stride = (len(test_bytes) - CONTEXT) // args.windows
    windows = torch.stack([test_bytes[i * stride:i * stride + CONTEXT] for i in range(args.windows)])
    with torch.no_grad():
        base = perplexity(model(windows), windows)
    fp16_bytes = 2 * len(model.blocks) * windows.numel() * model.blocks[0].q_proj.out_features * 2
    rows = [{"cache": "float (fp16 bytes)", "perplexity": base, "ratio": 1.0, "cache_bytes": fp16_bytes,
             "smaller": 1.0, "smaller_one_window": 1.0, "smaller_per_token": 1.0}]
    calibration = train_bytes[:CONTEXT * 16].view(16, CONTEXT)
    print(f"{rows[0]['cache']:<40} perplexity {base:.4f}  cache {fp16_bytes} bytes", flush=True)
    smoothed = smoothed_copy(model, calibration)
    centers = [kv_centers(k, v) for k, v in calibration_kv(model, calibration)]
    ranges = [kv_ranges(k, v) for k, v in calibration_kv(model, calibration)]
    pre_rope = [kv_ranges(k, v) for k, v in calibration_kv(model, calibration, rope_keys=False)]
    variants = [("KV8", model, lambda i: QuantKVCache(8)), ("KV4", model, lambda i: QuantKVCache(4)),
                ("KV4 + SmoothAttention (alpha 0.5)", smoothed, lambda i: QuantKVCache(4)),
                ("KV4, keys in groups of 16", model, lambda i: QuantKVCache(4, key_group=16)),
                ("KV4 centered", model, lambda i: QuantKVCache(4, centers=centers[i])),
                ("KV4 centered, keys in groups of 32", model, lambda i: QuantKVCache(4, 32, centers=centers[i])),
                ("KV4 static ranges, keys after RoPE", model, lambda i: QuantKVCache(4, ranges=ranges[i])),
                ("KV4 static ranges, keys before RoPE", model,
                 lambda i: QuantKVCache(4, ranges=pre_rope[i], rope_base=ROPE_BASE))]
    for name, lm, make_cache in variants:
        caches = [make_cache(i) for i in range(len(lm.blocks))]
        ppl = perplexity(lm.decode(windows, caches), windows)
        held, constant = sum(c.nbytes() for c in caches), sum(c.constant_bytes() for c in caches)
        one_window = (held - constant) // len(windows) + constant
        rows.append({"cache": name, "perplexity": ppl, "ratio": ppl / base, "cache_bytes": held,
                     "smaller": fp16_bytes / held, "smaller_one_window": fp16_bytes / len(windows) / one_window,
                     "smaller_per_token": fp16_bytes / (held - constant)})
        row = rows[-1]
        print(f"{row['cache']:<40} perplexity {row['perplexity']:.4f}  x{row['ratio']:.4f} of float  "
              f"cache {held} bytes: {row['smaller']:.3f}x smaller than fp16 ({row['smaller_one_window']:.3f}x for "
              f"one window, {row['smaller_per_token']:.3f}x per token)", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    main()
