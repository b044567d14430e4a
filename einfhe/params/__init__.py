"""CKKS parameters at 128-bit security (`parameters`), what bootstrapping needs of them (`bootstrap`), the error
bounds they give (`precision`), and noise-flooded decryption (`flooding`)."""

from __future__ import annotations

from .bootstrap import (
    BOOTSTRAP_CHAIN_LEVELS, BOOTSTRAP_DEPTH, BOOTSTRAP_LEVEL_BUDGET, BOOTSTRAP_GAP, BOOTSTRAP_MIN_SCALE_BITS,
    bootstrap_headroom,
    bootstrap_scale_bits, correction_factor,
)
from .flooding import FLOODING_FIRST_MOD_BITS, FLOODING_SCALE_BITS, NoiseFlooding, measure_noise
from .parameters import INSECURE, MAX_LOG_QP, SECURE, SMALL_RING_FIRST_MOD_BITS, Parameters, estimate_log_qp
from .precision import error_bound

__all__ = [
    "BOOTSTRAP_CHAIN_LEVELS", "BOOTSTRAP_DEPTH", "BOOTSTRAP_GAP", "BOOTSTRAP_LEVEL_BUDGET", "BOOTSTRAP_MIN_SCALE_BITS",
    "FLOODING_FIRST_MOD_BITS",
    "FLOODING_SCALE_BITS",
    "INSECURE", "MAX_LOG_QP", "NoiseFlooding", "Parameters", "SECURE", "SMALL_RING_FIRST_MOD_BITS", "bootstrap_headroom",
    "bootstrap_scale_bits", "correction_factor", "error_bound", "estimate_log_qp", "measure_noise",
]
