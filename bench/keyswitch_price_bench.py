"""Key-switching prices, measured against the cost model: one rotation, one product with relinearization, one
plain product (its plaintext encoded) and one rescale on a fresh ciphertext (all its towers), and on one with
levels dropped (a bootstrapped set's: as many as a bootstrap leaves used, and all but two towers), CPU seconds on
one thread (`op_seconds` of bench/transformer_encrypted.py, in one process), beside the cost model's price of
each at that set's key-switching digits and towers (`CostModel.price` with `shape`, einfhe.plan.keyswitch) and
at the calibrated contexts' (the price without a parameter set).

    OMP_NUM_THREADS=1 PYTHONPATH=. flock /work/bigmem.lock python bench/keyswitch_price_bench.py [--repeats 3]
        [--sets small chain secure]

Sets: `small`, `Parameters.derive(3, 8192)` (N=2^14, OpenFHE's default 2 digits: a calibrated context's shape);
`chain`, the chain MiniLM bootstraps on (`derive(9, 4096, bootstrap=True)`: 29 towers, scale 2^55) on an
INSECURE ring of 8,192 with OpenFHE's default 3 digits; `secure`, that 128-bit set itself (N=2^16, 15 digits: one
key of 465 MiB, 2-3 GiB in all, so run it under the big-memory lock).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import einfhe  # noqa: E402,F401  -- loads openfhe before any other extension module

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from einfhe.params import BOOTSTRAP_DEPTH, INSECURE, Parameters  # noqa: E402
from einfhe.plan.cost import load_cost_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transformer_encrypted import op_seconds  # noqa: E402

# op_seconds' ops and the priced op each is (its plain product takes an encoded plaintext: the cached price)
PRICED = {"rotate": "rotate", "mul + relinearize": "mul", "mul_plain": "mul_plain_cached", "rescale": "rescale"}


def parameter_sets() -> dict[str, Parameters]:
    """The sets measured, by name (module docstring)."""
    secure = Parameters.derive(9, 4096, bootstrap=True)
    chain = Parameters(8192, 4096, 9, secure.scale_bits, secure.first_mod_bits, INSECURE, True).validate()
    return {"small": Parameters.derive(3, 8192), "chain": chain, "secure": secure}


def levels_measured(params: Parameters) -> list[int]:
    """Levels a set's ops are measured at: fresh, after a bootstrap where the set bootstraps, two towers left."""
    return sorted({0, params.total_depth - 1} | ({BOOTSTRAP_DEPTH} if params.bootstrap else set()))


def main() -> None:
    """Measure each set's ops and print them against the cost model's prices."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sets", nargs="+", default=["small", "chain", "secure"], choices=["small", "chain", "secure"])
    args = parser.parse_args()
    model, sets = load_cost_model(), parameter_sets()
    for name in args.sets:
        params = sets[name]
        digits, q_towers, p_towers = shape = params.key_switching_towers
        print(f"{name}: N={params.ring_dim}, {digits} digits, {q_towers} Q + {p_towers} P towers ({params.security})")
        for level in levels_measured(params):
            print(f" level {level} ({params.total_depth + 1 - level} towers)")
            measured = op_seconds(params, args.repeats, level)
            for op, priced in PRICED.items():
                at_shape = model.price(priced, params.ring_dim, params.total_depth, level, shape)
                calibrated = model.price(priced, params.ring_dim, params.total_depth, level)
                print(f"  {op:<18} measured {1e3 * measured[op]:8.1f} ms   estimated {1e3 * at_shape:8.1f} ms "
                      f"(measured / estimated {measured[op] / at_shape:5.2f})   at the calibrated shape "
                      f"{1e3 * calibrated:8.1f} ms ({measured[op] / calibrated:5.2f})", flush=True)


if __name__ == "__main__":
    main()
