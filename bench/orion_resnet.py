"""Orion (PyPI orion-fhe 1.0.2, Lattigo) running a CIFAR-shaped ResNet on one sample at 128-bit: the peer of
bench/resnet_bench.py, run in Orion's own interpreter (see bench/orion_peer.py for the venv).

    OMP_NUM_THREADS=1 GOMAXPROCS=1 /path/to/orion-venv/bin/python bench/orion_resnet.py problem.npz [--runs 1]

`problem.npz` holds the input `x` (1, 3, 32, 32), `blocks` and `channels` (blocks per stage, channels per stage:
[3, 3, 3] and [16, 32, 64] for ResNet-20), `degrees` (the composite ReLU's stage degrees) and the model's
weights under Orion's own parameter names (`conv1.weight`, `layers.0.0.bn1.running_var`, ...). The network is
Orion's `orion.models.ResNet` with every ReLU built at those degrees, on Orion's ResNet parameter set (its
`configs/resnet.yml`: ring 2^16, a 55-bit first modulus and ten 40-bit ones, three 61-bit special primes, a secret
of Hamming weight 2^14, eight 61-bit primes for bootstrapping), with Orion's own bootstrap placement.

Prints one JSON line: setup seconds (fit + compile, with its key generation and diagonal encoding), the seconds of
each encrypted forward pass (the server's work), Orion's bootstrap count and the bootstraps run, the levels
between bootstraps, the input level, the decrypted logits, the plaintext model's logits and the peak RSS.
Everything Orion prints goes to stderr.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import resource
import sys
import time

ORION_RESNET_CONFIG = {
    "ckks_params": {"LogN": 16, "LogQ": [55] + [40] * 10, "LogP": [61, 61, 61], "LogScale": 40, "H": 16384,
                    "RingType": "standard"},
    "boot_params": {"LogP": [61] * 8},
    "orion": {"margin": 2, "embedding_method": "hybrid", "backend": "lattigo", "fuse_modules": True,
              "debug": False, "io_mode": "none"},
}


def _build(problem):
    """Orion's ResNet with the problem's stages, ReLU degrees and weights."""
    import numpy as np
    import orion.models.resnet as resnet
    import orion.nn as on
    import torch

    degrees = [int(d) for d in problem["degrees"]]

    class FixedDegreeReLU(on.ReLU):
        def __init__(self):
            super().__init__(degrees=degrees)

    on.ReLU = FixedDegreeReLU  # resnet.py builds its activations as on.ReLU()
    conv1_params, classes = resnet.get_resnet_config("cifar10")
    net = resnet.ResNet("cifar10", resnet.BasicBlock, [int(b) for b in problem["blocks"]],
                        [int(c) for c in problem["channels"]], conv1_params, classes)
    state = {key: torch.tensor(np.asarray(problem[key])) for key in problem.files
             if key not in ("x", "blocks", "channels", "degrees")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [key for key in missing  # the pool's kernel is Orion's own, set at compile
               if not key.endswith("num_batches_tracked") and not key.startswith("avgpool.")]
    if missing or unexpected:
        raise SystemExit(f"weights do not match Orion's ResNet: missing {missing}, unexpected {unexpected}")
    return net


def main(argv: list[str]) -> None:
    """Fit, compile and run the problem's ResNet under Orion; print the JSON summary on stdout."""
    import numpy as np
    import orion
    import torch

    problem = np.load(argv[0])
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 1
    out = sys.stdout
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        orion.init_scheme(ORION_RESNET_CONFIG)
        net = _build(problem)
        net.eval()
        x = torch.tensor(np.asarray(problem["x"], np.float32))
        with torch.no_grad():
            clear = net(x).double().numpy().reshape(-1)
        start = time.perf_counter()
        orion.fit(net, x)
        input_level = orion.compile(net)
        setup_s = time.perf_counter() - start
        ciphertext = orion.encrypt(orion.encode(x, input_level))
        net.he()
        boot_seconds: list[float] = []
        bootstrapper = orion.scheme.bootstrapper
        plain_bootstrap = bootstrapper.bootstrap

        def timed_bootstrap(ctxt, slots):
            begin = time.perf_counter()
            result = plain_bootstrap(ctxt, slots)
            boot_seconds.append(time.perf_counter() - begin)
            return result

        bootstrapper.bootstrap = timed_bootstrap
        run_s = []
        for _ in range(runs):
            boot_seconds.clear()
            begin = time.perf_counter()
            result = net(ciphertext)
            run_s.append(time.perf_counter() - begin)
        logits = result.decrypt().decode().double().numpy().reshape(-1)
    log = captured.getvalue()
    sys.stderr.write(log)
    planned = re.search(r"requires (\d+) bootstrap", log)
    print(json.dumps({
        "setup_s": setup_s, "run_s": run_s, "bootstraps_planned": int(planned.group(1)) if planned else None,
        "bootstraps_run": len(boot_seconds), "bootstrap_s": sum(boot_seconds),
        "levels_between_bootstraps": len(ORION_RESNET_CONFIG["ckks_params"]["LogQ"]) - 1,
        "input_level": int(input_level), "logits": logits.tolist(), "clear": clear.tolist(),
        "max_error": float(np.max(np.abs(logits - clear))),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }), file=out, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
