"""What a plan says about itself: `listing` (the IR, one step a line, as `str(plan)` prints it) and `explain` (the
cost report of `plan.explain()`: depth, rotation keys, op counts, estimated and measured seconds, bytes)."""

from __future__ import annotations

from ..params import Parameters
from .cost import estimate_plan
from .keybasis import basis_tradeoff
from .operands import CipherInput, Diagonals
from .steps import AddPlain, Chebyshev, Load, Mask, MulPlain, PlainSlice

__all__ = ["explain", "listing"]


def _plaintext(ref) -> str:
    """A plaintext reference as the listing prints it."""
    if isinstance(ref, Mask):
        return f"mask[{', '.join(f'{a}:{b}' for a, b in ref.ranges)}]"
    if isinstance(ref, PlainSlice):
        return f"{ref.name}[row {ref.index}]"
    return f"{ref.name}[ct {ref.ct}]"


def _step_line(step) -> str:
    """One step as `%out = op %arg, ...` with its offset, plaintext or series."""
    if isinstance(step, Load):
        return f"%{step.out} = load op{step.operand}[ct {step.ct}]"
    words = [", ".join(f"%{a}" for a in step.args)]
    if isinstance(step, (MulPlain, AddPlain)):
        words[0] += f", {_plaintext(step.plain)}"
    if hasattr(step, "offset"):
        words.append(f"by {step.offset}")
    if isinstance(step, Chebyshev):
        words.append(f"degree {len(step.coeffs) - 1} on [{step.lo:g}, {step.hi:g}]")
    return f"%{step.out} = {step.op} " + " ".join(words)


def listing(plan) -> str:
    """The plan as an IR listing: operands, the plain program, one line per step, and what it returns."""
    lines = [f"plan {plan.spec!r}  slots={plan.slots}  strategy={plan.strategy}"]
    for op in plan.operands:
        if isinstance(op, CipherInput):
            lines.append(f"  op{op.operand}: cipher {op.layout}")
        else:
            lines.append(f"  op{op.operand}: plain shape {op.shape}")
    for expr in plan.plain_program:
        if isinstance(expr, Diagonals):
            lines.append(f"  {expr.out} = diagonals {expr.src} d={expr.d} baby={expr.baby} giant={expr.giant}"
                         f" replicas={expr.replicas}")
        else:
            lines.append(f"  {expr.out} = einsum {expr.subscripts!r} {', '.join(expr.args)}")
    lines += [f"  {_step_line(step)}" for step in plan.steps]
    lines.append(f"  return {', '.join(f'%{v}' for v in plan.outputs)} in {plan.output_layout}")
    return "\n".join(lines)


def explain(plan, stats=None, params: Parameters | None = None) -> str:
    """A report of the plan: spec, layouts, depth, rotation set, op counts, estimated (and, given a run's
    `RunStats`, measured) seconds per op kind, and bytes uploaded."""
    counts = plan.op_counts()
    lines = [
        f"einsum {plan.spec}  strategy={plan.strategy}  slots={plan.slots}",
        f"  depth {plan.depth}   ciphertexts in {plan.cts_in}, out {plan.cts_out}",
        f"  rotations ({len(plan.rotations)} keys): {list(plan.rotations)}",
        "  ops: " + ", ".join(f"{op} {n}" for op, n in counts.items() if op != "load" and n),
    ]
    lines += _cost_lines(plan, stats=stats, params=params)
    if plan.choice is not None:
        lines += plan.choice.lines()
    lines += _ring_lines(plan)
    for op in plan.operands:
        if isinstance(op, CipherInput):
            lines.append(f"  operand {op.operand} cipher  {op.layout}")
        else:
            lines.append(f"  operand {op.operand} plain   shape {op.shape}")
    lines.append(f"  output {plan.output_layout}")
    return "\n".join(lines)


def _cost_lines(plan, stats=None, params: Parameters | None = None) -> list[str]:
    """Estimated (and measured) seconds per op kind, bytes uploaded, key bytes."""
    est = estimate_plan(plan, params)
    lines = [f"  cost at N={est.ring_dim}, depth {est.depth}: estimated {1e3 * est.seconds:.2f} ms on the server"
             f" + {1e3 * est.encrypt_seconds:.2f} ms client encryption"]
    measured = dict(stats.seconds) if stats is not None else {}
    for op in sorted(set(est.seconds_by_op) | set(measured), key=lambda o: -est.seconds_by_op.get(o, 0.0)):
        if op == "load":
            continue
        line = f"    {op:<15} est {1e3 * est.seconds_by_op.get(op, 0.0):9.2f} ms"
        if stats is not None:
            line += f"   measured {1e3 * measured.get(op, 0.0):9.2f} ms"
        lines.append(line)
    if est.unpriced:
        lines.append(f"    not in the cost model (not counted): {', '.join(est.unpriced)}")
    if stats is not None:
        lines.append(f"    {'total':<15} est {1e3 * est.seconds:9.2f} ms   measured {1e3 * stats.total_seconds:9.2f} ms")
    lines.append(f"  upload {est.upload_cts} ciphertext(s) x {est.upload_bytes // max(1, est.upload_cts):,} B"
                 f" = {est.upload_bytes:,} B; evaluation keys {est.keys} rotation + 1 relinearization"
                 + (f" + {est.bootstrap_keys} bootstrapping" if est.bootstrap_keys else "") + f" = {est.key_bytes:,} B")
    if plan.rotations:
        rows = "; ".join(f"{r['basis']}: {r['keys']} keys {r['key_bytes']:,} B, {r['rotations']} rotations"
                         f" {1e3 * r['estimated_seconds']:.2f} ms" for r in basis_tradeoff(plan, params))
        lines.append(f"  rotation-key bases (compile(rotation_basis=...)): {rows}")
    return lines


def _ring_lines(plan) -> list[str]:
    """The rings the compilation priced (compile(..., slots="auto")) and why the plan's won."""
    if not plan.ring_choices:
        return []
    lines = ["  rings considered (server + client encryption, at 128-bit):"]
    for choice in plan.ring_choices:
        cost = f"est {1e3 * choice.seconds:8.2f} ms" if choice.seconds is not None else "not priced"
        lines.append(f"    N={choice.ring_dim:<6} {choice.slots:>5} slots  depth {choice.depth}  {cost}  {choice.note}")
    return lines
