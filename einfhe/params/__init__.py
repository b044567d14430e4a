"""CKKS parameters at 128-bit security (`parameters`), the error bounds they give (`precision`), and noise-flooded
decryption (`flooding`)."""

from __future__ import annotations

from .flooding import FLOODING_FIRST_MOD_BITS, FLOODING_SCALE_BITS, NoiseFlooding, measure_noise
from .parameters import (
    BOOTSTRAP_DEPTH, BOOTSTRAP_LEVEL_BUDGET, INSECURE, MAX_LOG_QP, SECURE, Parameters, estimate_log_qp,
)
from .precision import error_bound

__all__ = [
    "BOOTSTRAP_DEPTH", "BOOTSTRAP_LEVEL_BUDGET", "FLOODING_FIRST_MOD_BITS", "FLOODING_SCALE_BITS", "INSECURE",
    "MAX_LOG_QP", "NoiseFlooding", "Parameters", "SECURE", "error_bound", "estimate_log_qp", "measure_noise",
]
