"""The `einfhe` command: `einfhe demo`, `einfhe explain SPEC SHAPE...`, `einfhe calibrate`, `einfhe bench`,
`einfhe serve ...`."""

from __future__ import annotations

import argparse
import sys

import numpy as np

__all__ = ["main"]


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    kind, sep, dims = text.partition(":")
    if kind not in ("c", "p") or not sep:
        raise argparse.ArgumentTypeError("operands look like c:4x6 (cipher) or p:6 (plain); p: is a scalar")
    try:
        return kind, tuple(int(n) for n in dims.split("x") if n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {dims!r}: use sizes joined by x, e.g. 4x6") from None


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen subcommand."""
    parser = argparse.ArgumentParser(prog="einfhe", description="Encrypted einsum on RNS-CKKS.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="encrypted einsums end to end at 128-bit security")
    explain = sub.add_parser("explain", help="compile an einsum and print its plan")
    explain.add_argument("spec", help="einsum spec, e.g. 'ij,j->i'")
    explain.add_argument("operands", nargs="+", type=_shape, help="c:4x6 for a cipher operand, p:6 for a plain one")
    explain.add_argument("--slots", type=int, default=8192)
    sub.add_parser("serve", help="run the encrypted computation service (needs the server extra; --help for options)")
    sub.add_parser("calibrate", help="measure op prices on this machine for the cost model (--help for options)")
    sub.add_parser("bench", help="run bench/einsum_bench.py: strategies vs TenSEAL (--help for options)")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # these three parse their own options
        return _serve(argv[1:])
    if argv[:1] == ["calibrate"]:
        from einfhe.tools.calibrate import main as calibrate_main

        return calibrate_main(argv[1:])
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = parser.parse_args(argv)

    import einfhe

    if args.command == "demo":
        from einfhe.tools.demo import main as demo_main

        return demo_main()
    operands = [einfhe.cipher(shape) if kind == "c" else np.zeros(shape) for kind, shape in args.operands]
    try:
        plan = einfhe.compile(args.spec, *operands, slots=args.slots)
    except einfhe.EinfheError as exc:
        print(f"einfhe: {exc}", file=sys.stderr)
        return 2
    print(plan.explain())
    return 0


def _serve(argv: list[str]) -> int:
    """Run the service's command line, which the server package registers as the `einfhe.commands` entry `serve`."""
    from importlib.metadata import entry_points

    found = entry_points(group="einfhe.commands", name="serve")
    if not found:
        print("einfhe: the service is not installed: pip install 'einfhe[server]'", file=sys.stderr)
        return 2
    return next(iter(found)).load()(argv)


def _bench(argv: list[str]) -> int:
    """Run the einsum benchmark script of a source checkout."""
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "bench" / "einsum_bench.py"
    if not script.exists():
        print("einfhe: bench/einsum_bench.py ships with the source checkout only", file=sys.stderr)
        return 2
    sys.argv = [str(script), *argv]
    return runpy.run_path(str(script))["main"](argv)


if __name__ == "__main__":
    raise SystemExit(main())
