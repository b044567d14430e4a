"""The CKKS error bound of an encoder layer's chain with bootstraps inside it, on the small test rings: shared by
the row-packing tests (tests/einfhe/compiler/test_packed_layer.py), the Dask runner's (its stages on a cluster) and
the served encoder's (tests/client/test_encoder_model.py)."""

import numpy as np

import einfhe
from einfhe.backends.simulator import SimCiphertext
from einfhe.compiler.transformer import encoder_layer
from einfhe.params.precision import error_bound

BOOTSTRAP_ERROR = 2.0**-10  # what a bootstrap leaves at these rings (tests/einfhe/compiler/test_levels.py)


def largest_value(blocks, trace) -> float:
    """The largest magnitude the layer meets: its traced block inputs, the reciprocal of the smallest softmax sum,
    the inverse square root of the smallest variance, and the exp's peak on its fitted range inside the softmax."""
    return max(max(np.abs(v).max() for values in trace.values() for v in values),
               1 / blocks.softmax.reciprocal.lo, blocks.norm1.inverse_sqrt.lo ** -0.5,
               blocks.norm2.inverse_sqrt.lo ** -0.5, np.exp(blocks.softmax.exp.hi * 2.0 ** -blocks.softmax.squarings))


def stack_largest_value(layers, blocks, x, length=None) -> float:
    """The largest magnitude layers stacked one after another meet (largest_value of each on its own input; with
    `length`, the padding past it masked out as keys)."""
    largest = 0.0
    for weights, layer_blocks in zip(layers, blocks):
        trace = {}
        x = encoder_layer(weights, x, layer_blocks, trace=trace, length=length)
        largest = max(largest, largest_value(layer_blocks, trace))
    return largest


def move_bootstraps(ctx) -> None:
    """Make the simulator context's bootstraps move every slot by BOOTSTRAP_ERROR, signs drawn at random (seeded)."""
    exact_bootstrap, noise = ctx.backend.bootstrap, np.random.default_rng(5)

    def moved_bootstrap(ct):
        fresh = exact_bootstrap(ct)
        return SimCiphertext(fresh.values + BOOTSTRAP_ERROR * noise.choice([-1.0, 1.0], fresh.values.shape),
                             fresh.level)

    ctx.backend.bootstrap = moved_bootstrap


def bootstrapped_bound(weights, blocks, refreshed, params, x, inner: int) -> float:
    """The CKKS bound of the chain's levels and key switches for the layer's largest value, plus how far its
    bootstraps' errors carry: measured on the simulator with every bootstrap moving every slot by BOOTSTRAP_ERROR,
    signs drawn at random (doubled with its value where a value was shrunk for its bootstrap)."""
    trace = {}
    expected = encoder_layer(weights, x, blocks, trace=trace)
    simulated = einfhe.Context.for_plan(*refreshed.plans, backend="simulator", params=params)
    move_bootstraps(simulated)
    moved = refreshed.run(lambda plan, *ops: einfhe.run(simulated, plan, *ops),
                          einfhe.encrypt(simulated, x, refreshed.input_layout))
    carried = np.abs(einfhe.decrypt(simulated, moved) - expected).max()
    keyswitches = sum(plan.keyswitches for plan in refreshed.plans)
    return error_bound(params, largest_value(blocks, trace), inner, refreshed.depth, keyswitches) + carried
