"""Ciphertexts of a context OpenFHE already holds load without rebuilding its CRT tables, and nothing else changes.

OpenFHE's switch for that precomputation is process-wide and a crypto context loaded while it is off crashes
the process on first use, so these scenarios run in a child process: a crash shows as a non-zero exit.
"""

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import einfhe  # openfhe first

    import sys
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from einfhe.backends.openfhe import release_openfhe_caches
    from einfhe.params.precision import error_bound

    rng = np.random.default_rng(0)
    SLOTS = 16

    def case(depth_extra):
        W, x = rng.standard_normal((3, 4)), rng.standard_normal(4)
        plan = einfhe.compile("ij,j->i", W, einfhe.cipher((4,)), slots=SLOTS)
        params = einfhe.Parameters.insecure_for_tests(plan.depth + depth_extra, SLOTS)
        ctx = einfhe.Context.for_plan(plan, params=params)
        blob = einfhe.tensor_to_bytes(ctx, einfhe.encrypt(ctx, x, plan.input_layout(1)))
        return W, x, plan, ctx, blob

    def check(ctx, plan, W, x, tensor, result=None):
        result = einfhe.run(ctx, plan, W, tensor) if result is None else result
        got = einfhe.decrypt(ctx, result)
        bound = error_bound(ctx.params, np.abs(W).max() * np.abs(x).max(), 4, plan.depth, plan.keyswitches)
        assert np.abs(got - W @ x).max() <= bound, (got, W @ x)

    a, b = case(0), case(1)  # two parameter sets (b one level deeper)
    for W, x, plan, ctx, blob in (a, b):
        tensor = einfhe.tensor_from_bytes(ctx, blob)  # a context OpenFHE holds: the fast path
        check(ctx, plan, W, x, tensor)
        result = einfhe.tensor_from_bytes(ctx, einfhe.tensor_to_bytes(ctx, einfhe.run(ctx, plan, W, tensor)))
        assert result.cts[0].GetLevel() > 0  # a rescaled result: adopted at its own level
        check(ctx, plan, W, x, tensor, result)

    # Once OpenFHE's caches are dropped, an old context's ciphertexts must not take the fast path (it would cache
    # a context without CRT tables): they load the slow way, and the context loaded next for those parameters works.
    paths = {}
    for name, (W, x, plan, ctx, blob) in (("a", a), ("b", b)):
        paths[name] = f"{sys.argv[1]}/{name}.ctx"
        einfhe.save_context(ctx, paths[name])
    release_openfhe_caches()
    try:
        einfhe.tensor_from_bytes(a[3], a[4])
    except einfhe.EinfheError:
        pass  # the ciphertext now resolves to a new context of equal parameters: refused, as before
    W, x, plan, _, blob = a
    ctx_a = einfhe.load_context(paths["a"])
    check(ctx_a, plan, W, x, einfhe.tensor_from_bytes(ctx_a, blob))

    # Threads loading ciphertexts the fast way while this thread loads another parameter set's context.
    W, x, plan, _, blob = b
    load = lambda: [einfhe.tensor_from_bytes(ctx_a, a[4]) for _ in range(20)]
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(load) for _ in range(4)]
        ctx_b = einfhe.load_context(paths["b"])
        for future in futures:
            future.result()
    check(ctx_b, plan, W, x, einfhe.tensor_from_bytes(ctx_b, blob))
    print("ok")
""")


def test_ciphertext_loading_keeps_every_context_usable(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import sys; exec(sys.stdin.read())", str(tmp_path)],
                          input=SCRIPT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
