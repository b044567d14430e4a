"""OpenFHE crypto contexts for einfhe's parameter sets: scaling, digits, security level, noise flooding and
bootstrapping set as `Parameters` and `NoiseFlooding` say."""

from __future__ import annotations

import openfhe  # import first: some FHE wheels ship their own libgomp

from ..errors import ParameterError
from ..params import BOOTSTRAP_LEVEL_BUDGET, Parameters, correction_factor
from ..params.flooding import FLOODING_FIRST_MOD_BITS, FLOODING_SCALE_BITS, NoiseFlooding
from .openfhe_errors import translate_errors

__all__ = ["crypto_context", "bootstrap_setup"]


def _set_flooding(cp, params: Parameters, flooding: NoiseFlooding) -> None:
    """Ask OpenFHE for noise-flooded decryption (or, with no estimate yet, for the noise-measuring run)."""
    if (params.scale_bits, params.first_mod_bits) != (FLOODING_SCALE_BITS, FLOODING_FIRST_MOD_BITS) or params.bootstrap:
        raise ParameterError(
            f"noise flooding runs on {FLOODING_SCALE_BITS}-bit scaling and {FLOODING_FIRST_MOD_BITS}-bit first moduli "
            "(OpenFHE sets them), without bootstrapping: use Parameters.for_noise_flooding(depth, slots)",
            scale_bits=params.scale_bits, first_mod_bits=params.first_mod_bits,
        )
    cp.SetDecryptionNoiseMode(openfhe.NOISE_FLOODING_DECRYPT)
    cp.SetStatisticalSecurity(flooding.statistical_security)
    cp.SetNumAdversarialQueries(flooding.queries)
    if flooding.measuring:
        cp.SetExecutionMode(openfhe.EXEC_NOISE_ESTIMATION)
    else:
        cp.SetExecutionMode(openfhe.EXEC_EVALUATION)
        cp.SetNoiseEstimate(flooding.estimate)


def crypto_context(params: Parameters, flooding: NoiseFlooding | None = None):
    cp = openfhe.CCParamsCKKSRNS()
    cp.SetMultiplicativeDepth(params.total_depth)
    cp.SetScalingModSize(params.scale_bits)
    cp.SetFirstModSize(params.first_mod_bits)
    cp.SetBatchSize(params.slots)
    cp.SetRingDim(params.ring_dim)
    cp.SetScalingTechnique(openfhe.ScalingTechnique.FIXEDMANUAL)
    if params.digits:
        cp.SetNumLargeDigits(params.digits)
    cp.SetSecurityLevel(
        openfhe.SecurityLevel.HEStd_128_classic if params.secure else openfhe.SecurityLevel.HEStd_NotSet
    )
    if flooding is not None:
        _set_flooding(cp, params, flooding)
    with translate_errors("create a crypto context for these parameters"):
        cc = openfhe.GenCryptoContext(cp)
        for feature in (openfhe.PKESchemeFeature.PKE, openfhe.PKESchemeFeature.KEYSWITCH,
                        openfhe.PKESchemeFeature.LEVELEDSHE, openfhe.PKESchemeFeature.ADVANCEDSHE):
            cc.Enable(feature)
        if params.bootstrap:
            cc.Enable(openfhe.PKESchemeFeature.FHE)
    return cc


def bootstrap_setup(cc, params: Parameters) -> None:
    """OpenFHE's bootstrapping precomputations for the parameters' slot count (sparse when it is below N/2), with
    the correction factor the parameters were derived for (client and server both need them)."""
    if params.bootstrap:
        with translate_errors("set up bootstrapping"):
            cc.EvalBootstrapSetup(list(BOOTSTRAP_LEVEL_BUDGET), [0, 0], params.slots,
                                  correction_factor(params.ring_dim, params.slots))
