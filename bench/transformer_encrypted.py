"""MiniLM-L6 encrypted on OpenFHE: one encoder layer or the whole six-layer model in the row packing, bootstraps
placed by the level planner across the layers, on threads or Dask workers. Needs numpy, openfhe and dask only:
the weights and the client's token embeddings come from bench/transformer_export.py's file.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/transformer_encrypted.py --data minilm_l6.npz [--tokens 8]
        [--layers 1] [--sentences 1] [--slots 4096] [--max-depth 7] [--basis plan|bsgs|pow2]
        [--threads 1 2 4] [--dask 1 2 4] [--ring 8192 | --simulate 2.4e-3] [--census] [--stages] [--dry]

Per sentence length: each layer's blocks calibrated on the file's 32 calibration sentences (GELU's degree the
largest that fits `--max-depth` with the product after it), each layer compiled in the row packing at `--slots`
slots (`compile_packed_layer`), the layers stacked into one chain (`stack_programs`) and its bootstraps placed by
the level planner at `--max-depth` levels between refreshes (`place_bootstraps`), every rotation in `--basis`
(`plan`: one key per offset; `bsgs`, `pow2`: fewer keys, more key switches). Parameters: the 128-bit set
`Parameters.derive(depth, slots, bootstrap=True)` (ring 2^16); `--ring R` keeps its chain (scale, first
modulus) on a ring of R with OpenFHE's default key-switching digits (smaller keys) and NO security (how the work
spreads and what the arithmetic does, not a 128-bit latency); `--simulate E` runs on the exact slot simulator with every bootstrap adding normal noise of standard
deviation E / 4 to every slot (its largest about E: OpenFHE's largest bootstrap error at these scales is 2.41e-3,
BENCHMARKS.md issue 20) and reports the largest value a bootstrap met (it must stay below the headroom: larger
values are shrunk before their bootstrap and grown back after, `place_bootstraps`). `--census` measures the
128-bit key set without holding it (`key_census`: one key generated and serialized, the keys counted on a tiny
chain of the same ring) and one op's CPU seconds there and on `--ring`'s ring. `--dry` prints the plan,
parameters and key estimate and stops.

Printed: the chain (depth, bootstrap points and steps, rotation keys and rotations), the parameters, key generation
seconds, evaluation-key bytes (rotation and bootstrapping keys: their count times one key's serialized bytes),
then per sentence and per run (threads, then Dask workers): seconds in all, and per layer in wall seconds and this
process's CPU seconds (on one thread on a shared machine, the latency an idle core would give), the ops run, bytes
moved (the client's input and output ciphertexts; under Dask also every stage's values through the caller), and
the decrypted embedding against the float model with the same weights (numpy, exact softmax/LayerNorm/GELU, the
baseline): cosine of the mean-pooled embeddings, and the max error against the polynomial model in float; at the
end, per run, the cosines' mean and worst and the retrieval top-1 agreement (each sentence's nearest other
sentence among those run, by the decrypted embeddings and by the float model's).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from dataclasses import fields  # noqa: E402

import numpy as np  # noqa: E402

from einfhe.backends.simulator import SimCiphertext  # noqa: E402
from einfhe.compiler.transformer import (EncoderWeights, RowPacking, calibrate_stack,  # noqa: E402
                                         compile_packed_layer, encoder_stack, place_bootstraps, stack_programs)
from einfhe.compiler.transformer.encoder import GELU_DEGREES  # noqa: E402
from einfhe.compiler.transformer.refresh import HEADROOM_MARGIN  # noqa: E402
from einfhe.crypto import EncryptedTensor  # noqa: E402
from einfhe.params import (BOOTSTRAP_LEVEL_BUDGET, INSECURE, Parameters, bootstrap_headroom,  # noqa: E402
                           correction_factor)
from einfhe.plan import ROTATION_OPS, chebyshev_levels  # noqa: E402
from einfhe.plan.cost import key_switching_key_bytes  # noqa: E402
from einfhe.runtime.magnitudes import value_magnitudes  # noqa: E402

CALIBRATION = 32  # the export's calibration sentences come first


def load_layers(data) -> list[EncoderWeights]:
    """The layers of an exported file as EncoderWeights (float64)."""
    count = len({key.split(".")[0] for key in data.files if key.startswith("L")})
    names = [f.name for f in fields(EncoderWeights) if f.name not in ("heads", "eps")]
    return [EncoderWeights(*(data[f"L{i}.{name}"].astype(np.float64) for name in names), int(data["heads"]))
            for i in range(count)]


def pooled(hidden: np.ndarray) -> np.ndarray:
    """Mean pooling over the tokens, normalized (sentence-transformers' head for this model)."""
    v = hidden.mean(axis=0)
    return v / np.linalg.norm(v)


def nearest(vectors: np.ndarray) -> np.ndarray:
    """Each row's nearest other row by cosine (rows normalized)."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    return sims.argmax(axis=1)


def calibrate(layers, samples, max_depth: int):
    """Per layer, the blocks calibrated on the hidden states the exact model feeds it; GELU's degree among those
    whose series leaves a level for the product after it within `max_depth`."""
    degrees = tuple(d for d in GELU_DEGREES if chebyshev_levels(d) < max_depth)
    return calibrate_stack(layers, samples, gelu_degrees=degrees)


def parameters(args, depth: int, slots: int) -> Parameters:
    """The 128-bit set for `depth` levels between bootstraps, or its chain on the insecure ring `--ring`."""
    secure = Parameters.derive(depth, slots, bootstrap=True)
    if not args.ring:
        return secure
    return Parameters(args.ring, slots, depth, secure.scale_bits, secure.first_mod_bits, INSECURE, True).validate()


def context(program, params: Parameters, noise: float | None):
    """The context (keys generated here, timed by the caller); under `noise` a simulator whose bootstraps add
    normal noise of standard deviation noise / 4 to every slot (its largest over a ciphertext's thousands of slots
    about `noise`) and record the largest value they meet (`ctx.largest`)."""
    if noise is None:
        return einfhe.Context.for_plan(*program.plans, params=params)
    ctx = einfhe.Context.for_plan(*program.plans, backend="simulator", params=params)
    exact, rng, ctx.largest = ctx.backend.bootstrap, np.random.default_rng(0), [0.0]

    def moved(ct):
        ctx.largest[0] = max(ctx.largest[0], float(np.abs(ct.values).max()))
        fresh = exact(ct)
        return SimCiphertext(fresh.values + rng.normal(0, noise / 4, fresh.values.shape), fresh.level)

    ctx.backend.bootstrap = moved
    return ctx


def evaluation_key_bytes(ctx) -> tuple[int, int]:
    """(key-switching keys held, their bytes: the count times one serialized relinearization key, a key of the
    same shape, as bench/bootstrap_bench.py counts them)."""
    import openfhe

    backend = ctx.backend
    count = len(backend.cc.GetExistingEvalAutomorphismKeyIndices(backend.key_tag)) + 1
    return count, count * len(openfhe.SerializeEvalMultKeyString(openfhe.BINARY, backend.key_tag))


def op_seconds(params: Parameters, repeats: int = 3, level: int = 0) -> dict[str, float]:
    """CPU seconds of one rotation, product with relinearization, plain product and rescale on a fresh ciphertext
    of `params` (all its towers; `level` of them dropped first), each the best of `repeats`, OpenFHE called directly
    (it clears OpenFHE's key caches after: call it before making a run's context)."""
    import openfhe

    from einfhe.backends.openfhe_context import crypto_context

    cc = crypto_context(params)
    keys = cc.KeyGen()
    cc.EvalMultKeyGen(keys.secretKey)
    cc.EvalRotateKeyGen(keys.secretKey, [1])
    plain = cc.MakeCKKSPackedPlaintext(list(np.linspace(-1, 1, params.slots)))
    ct = cc.Encrypt(keys.publicKey, plain)
    if level:
        ct = cc.LevelReduce(ct, None, level)
    ops = {"rotate": lambda: cc.EvalRotate(ct, 1), "mul + relinearize": lambda: cc.EvalMult(ct, ct),
           "mul_plain": lambda: cc.EvalMult(ct, plain), "rescale": lambda: cc.Rescale(ct)}
    seconds = {}
    for name, op in ops.items():
        times = []
        for _ in range(repeats):
            start = time.process_time()
            op()
            times.append(time.process_time() - start)
        seconds[name] = min(times)
    openfhe.ClearEvalMultKeys()
    cc.ClearEvalAutomorphismKeys()
    return seconds


def key_census(params: Parameters, rotations: tuple[int, ...]) -> dict:
    """The 128-bit key set measured without holding it: one key-switching key generated at `params` and serialized
    (the relinearization key), and the automorphism keys bootstrapping and `rotations` need together (their union),
    generated for the same ring and slots on a 1-level insecure chain with one digit (tiny keys: which rotations
    OpenFHE's bootstrapping takes depends on the ring, the slots and the level budget only). It clears OpenFHE's
    key caches after: call it before making a run's context."""
    import openfhe

    from einfhe.backends.openfhe_context import crypto_context

    cc = crypto_context(params)
    keys = cc.KeyGen()
    start = time.process_time()
    cc.EvalMultKeyGen(keys.secretKey)
    keygen = time.process_time() - start
    one = len(openfhe.SerializeEvalMultKeyString(openfhe.BINARY, keys.publicKey.GetKeyTag()))
    openfhe.ClearEvalMultKeys()
    shallow = Parameters(params.ring_dim, params.slots, 1, params.scale_bits, params.first_mod_bits, INSECURE, True, 1)
    small = crypto_context(shallow)
    small_keys = small.KeyGen()
    small.EvalBootstrapSetup(list(BOOTSTRAP_LEVEL_BUDGET), [0, 0], shallow.slots,
                             correction_factor(params.ring_dim, params.slots), False)
    small.EvalBootstrapKeyGen(small_keys.secretKey, shallow.slots)
    bootstrap = len(small.GetExistingEvalAutomorphismKeyIndices(small_keys.publicKey.GetKeyTag()))
    small.EvalRotateKeyGen(small_keys.secretKey, list(rotations))
    union = len(small.GetExistingEvalAutomorphismKeyIndices(small_keys.publicKey.GetKeyTag()))
    small.ClearEvalAutomorphismKeys()
    return {"one key bytes": one, "one key seconds": keygen, "bootstrap keys": bootstrap, "keys": union + 1,
            "bytes": (union + 1) * one, "seconds": (union + 1) * keygen}


def timed_run(program, run_plan, x, verbose: bool = False) -> tuple[EncryptedTensor, dict, dict]:
    """Run the chain stage by stage; wall seconds and this process's CPU seconds per layer (the stage names'
    "L<i>." prefix: on one thread on a shared machine the CPU seconds are the latency an idle core would give),
    under `verbose` also printed per stage as each ends."""
    seconds, cpu, stages = defaultdict(float), defaultdict(float), iter(program.stages)

    def each(plan, *operands):
        name = next(stages).name
        layer = name.split(".")[0]
        start, start_cpu = time.perf_counter(), time.process_time()
        out = run_plan(plan, *operands)
        wall, used = time.perf_counter() - start, time.process_time() - start_cpu
        seconds[layer] += wall
        cpu[layer] += used
        if verbose:
            print(f"    stage {name}: {wall:.1f} s wall, {used:.1f} s CPU, {plan.bootstraps} bootstrap(s), "
                  f"{sum(plan.op_counts()[op] for op in ROTATION_OPS)} rotations; peak RSS {peak_gib():.1f} GiB", flush=True)
        return out

    return program.run(each, x), dict(seconds), dict(cpu)


def dask_runner(ctx, workers: int):
    """(a run_plan for EncoderProgram.run on a LocalCluster of `workers` single-threaded processes, each stage
    through einfhe.runtime.dask_runner cut into its level stages and parts; a function that closes the cluster)."""
    import distributed

    from einfhe.runtime.dask_runner import DaskRunner

    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None, memory_limit=0, env={"OMP_NUM_THREADS": "1"})
    client = distributed.Client(cluster)
    keys = einfhe.evaluation_keys_to_bytes(ctx)
    run_plan = DaskRunner(client, timeout=36000.0).tensor_runner(ctx, "minilm", keys)
    run_plan.keys = len(keys)
    return run_plan, lambda: (client.close(), cluster.close())


def measure(args, tokens: int, data) -> None:
    """Compile, key, run and check the model on `tokens` tokens."""
    layers = load_layers(data)[:args.layers]
    x_all = data[f"x{tokens}"].astype(np.float64)
    blocks = calibrate(layers, x_all[:CALIBRATION], args.max_depth)
    slots = args.slots or RowPacking(tokens, layers[0].width, layers[0].heads, layers[0].w1.shape[1], 1 << 15).block
    start = time.perf_counter()
    chain = stack_programs(compile_packed_layer(w, b, tokens, slots=slots) for w, b in zip(layers, blocks))
    secure = Parameters.derive(args.max_depth, slots, bootstrap=True)
    headroom = bootstrap_headroom(secure.scale_bits, secure.first_mod_bits)
    magnitudes = value_magnitudes(chain, x_all[:CALIBRATION])
    refreshed, level_plan = place_bootstraps(chain, args.max_depth, slots, magnitudes=magnitudes, headroom=headroom)
    program = refreshed.with_rotation_basis(args.basis)
    params = parameters(args, program.depth, slots)
    shrunk = sum(p.op_counts()["mul_plain"] for p in program.plans) - sum(p.op_counts()["mul_plain"] for p in chain.plans)
    one_key = key_switching_key_bytes(params)
    print(f"{tokens} tokens, {len(layers)} layer(s), compiled in {time.perf_counter() - start:.0f} s: depth "
          f"{chain.depth} before refreshes, {len(level_plan.bootstrap_before)} bootstrap points, "
          f"{sum(p.bootstraps for p in program.plans)} bootstrap steps ({shrunk} shrunk first: values past "
          f"{headroom:g} / {HEADROOM_MARGIN}), {program.depth} levels between refreshes, {len(program.stages)} stages; basis "
          f"{args.basis}: {len(program.rotation_keys)} rotation keys, {program.rotation_count:,} rotations; "
          f"level planner's estimate {level_plan.seconds:.0f} s ({level_plan.bootstrap_cost:.0f} s bootstrapping + "
          f"{level_plan.compute_cost:.0f} s compute)\n  {params}\n  one key-switching key "
          f"{one_key / 2**20:.0f} MiB: the rotation keys {len(program.rotation_keys) * one_key / 2**30:.1f} GiB, "
          "bootstrapping's own beside them", flush=True)
    if args.census:
        report_census(params, program)
    if args.dry:
        return
    start = time.perf_counter()
    ctx = context(program, params, args.simulate)
    keygen = time.perf_counter() - start
    if not args.simulate:
        count, size = evaluation_key_bytes(ctx)
        print(f"  keys generated in {keygen:.1f} s: {count} key-switching keys (rotation, bootstrapping, "
              f"relinearization), {size / 2**30:.2f} GiB; peak RSS {peak_gib():.1f} GiB", flush=True)
    runs = [(f"{w} thread(s)", w, None) for w in args.threads] + [(f"dask {w} worker(s)", None, w) for w in args.dask]
    cosines, embeddings = defaultdict(list), defaultdict(list)
    try:
        for index, x in enumerate(x_all[CALIBRATION:CALIBRATION + args.sentences]):
            exact, poly = encoder_stack(layers, x), encoder_stack(layers, x, blocks)
            embeddings["float"].append(pooled(exact))
            start = time.perf_counter()
            xe = einfhe.encrypt(ctx, x, program.input_layout)
            encrypt_s = time.perf_counter() - start
            for label, threads, workers in runs:
                moved, stats, close = Counter(), einfhe.RunStats(), None
                if workers:
                    run_plan, close = dask_runner(ctx, workers)
                else:
                    def run_plan(plan, *operands):
                        return einfhe.run(ctx, plan, *operands, stats=stats, workers=threads)
                start = time.perf_counter()
                out, per_layer, cpu = timed_run(program, run_plan, xe, args.stages)
                total = time.perf_counter() - start
                if close:
                    close()
                    moved["keys to each worker"] = run_plan.keys
                    moved["stage values through the caller"] = run_plan.moved
                got = einfhe.decrypt(ctx, out)
                if not args.simulate:
                    moved["client input"] = len(einfhe.tensor_to_bytes(ctx, xe))
                    moved["client output"] = len(einfhe.tensor_to_bytes(ctx, out))
                cosine = float(pooled(got) @ pooled(exact))
                cosines[label].append(cosine)
                embeddings[label].append(pooled(got))
                ops = ", ".join(f"{op} {n}" for op, n in stats.counts.most_common(6))
                print(f"  sentence {index} {label}: {total:.1f} s (encrypt {encrypt_s:.1f} s), per layer "
                      + " ".join(f"{s:.1f}" for s in per_layer.values()) + " s wall, "
                      + " ".join(f"{s:.1f}" for s in cpu.values())
                      + f" s CPU here; cosine to the float model {cosine:.6f} (the polynomial model's "
                      f"{pooled(poly) @ pooled(exact):.6f}),"
                      f" max |decrypted - polynomial model| {np.abs(got - poly).max():.2e}; {ops}; bytes moved "
                      + ", ".join(f"{k} {v / 2**20:.1f} MiB" for k, v in moved.items())
                      + (f"; largest value bootstrapped {ctx.largest[0]:.2f} (headroom {headroom:g})" if args.simulate
                         else "")
                      + f"; peak RSS {peak_gib():.1f} GiB", flush=True)
    except KeyboardInterrupt:  # stopped early: the sentences done so far are summarized
        print("  interrupted", flush=True)
    for label, values in cosines.items():
        agree = np.mean(nearest(np.stack(embeddings[label])) == nearest(np.stack(embeddings["float"][:len(values)])))
        print(f"  {label}: cosine to the float model on {len(values)} sentence(s), mean {np.mean(values):.6f} "
              f"worst {np.min(values):.6f}; retrieval top-1 agreement with it {agree:.2f} (each sentence's "
              "nearest other sentence)")


def report_census(params: Parameters, program) -> None:
    """Print the 128-bit key set of `program` (key_census) and the ops' seconds there against `params`'."""
    secure = Parameters.derive(program.depth, params.slots, bootstrap=True)
    census = key_census(secure, program.rotation_keys)
    print(f"  128-bit key set ({secure}), measured: one key-switching key {census['one key bytes'] / 2**20:.0f} MiB "
          f"serialized, generated in {census['one key seconds']:.1f} CPU s; bootstrapping's keys for {secure.slots} "
          f"slots {census['bootstrap keys']}, with the plan's {len(program.rotation_keys)} rotations "
          f"{census['keys'] - 1}, and the relinearization key: {census['keys']} keys, "
          f"{census['bytes'] / 2**30:.1f} GiB (about {census['seconds'] / 60:.0f} CPU min to generate); "
          f"peak RSS {peak_gib():.1f} GiB", flush=True)
    runs = {"128-bit": op_seconds(secure)} | ({} if params == secure else {f"N={params.ring_dim}": op_seconds(params)})
    for name, seconds in runs.items():
        print(f"  one op on a fresh ciphertext, {name}: "
              + ", ".join(f"{op} {s * 1e3:.1f} ms" for op, s in seconds.items()), flush=True)
    if len(runs) == 2:
        fast, slow = runs[f"N={params.ring_dim}"], runs["128-bit"]
        print("  128-bit / this ring: " + ", ".join(f"{op} {slow[op] / fast[op]:.1f}x" for op in slow), flush=True)


def peak_gib() -> float:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="minilm_l6.npz")
    parser.add_argument("--tokens", type=int, nargs="+", default=[8])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--sentences", type=int, default=1)
    parser.add_argument("--slots", type=int, help="slots per ciphertext (default: the fewest the packing needs)")
    parser.add_argument("--max-depth", type=int, default=8)
    parser.add_argument("--basis", default="pow2", choices=("plan", "bsgs", "pow2", "pow4"))
    parser.add_argument("--threads", type=int, nargs="*", default=[1])
    parser.add_argument("--dask", type=int, nargs="*", default=[])
    parser.add_argument("--ring", type=int, help="run the 128-bit chain on this insecure ring instead")
    parser.add_argument("--simulate", type=float, help="the simulator, bootstraps moving each slot by this much")
    parser.add_argument("--census", action="store_true", help="measure the 128-bit key set (key_census) first")
    parser.add_argument("--stages", action="store_true", help="print each stage's seconds as it ends")
    parser.add_argument("--dry", action="store_true")
    args = parser.parse_args()
    data = np.load(args.data)
    for tokens in args.tokens:
        measure(args, tokens, data)


if __name__ == "__main__":
    main()
