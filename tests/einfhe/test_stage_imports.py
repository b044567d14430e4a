"""einfhe's stage folders import only downwards: every import (module level or inside a function, relative or
absolute) goes to the same stage or a lower one, and einfhe never imports the service, the client, quant,
fastapi or torch. Imports are read with `ast` (nothing is imported); `if TYPE_CHECKING:` blocks do not count."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

EINFHE = Path(__file__).resolve().parents[2] / "einfhe"

# The stages, lowest first: (stage name, the modules or packages it is made of). A package stands for every
# module under it; "einfhe" stands for einfhe/__init__.py alone (the package face).
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("errors/spec", ("einfhe.errors", "einfhe.spec")),
    ("layout", ("einfhe.layout",)),
    ("params", ("einfhe.params",)),
    ("plan", ("einfhe.plan",)),
    ("compiler", ("einfhe.compiler",)),
    ("backends", ("einfhe.backends",)),
    ("crypto", ("einfhe.crypto",)),
    ("runtime", ("einfhe.runtime",)),
    ("api", ("einfhe.api",)),
    ("face", ("einfhe",)),
    ("tools", ("einfhe.tools",)),
    ("cli", ("einfhe.cli",)),
)

FORBIDDEN = ("server", "client", "quant", "fastapi", "torch")


def module_names(root: Path) -> dict[str, Path]:
    """Every module under the package directory `root`, by dotted name (a package's `__init__` is the package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def stage_of(module: str) -> int | None:
    """Index in STAGES of the stage `module` belongs to (None for a module no stage holds)."""
    for rank, (_, members) in enumerate(STAGES):
        for member in members:
            if module == member or (member != "einfhe" and module.startswith(member + ".")):
                return rank
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported name) for every import in a module, outside `if TYPE_CHECKING:` blocks. Names inside the
    package are resolved to the deepest module of `known` they name (`from .plan import Plan` -> `einfhe.plan`,
    `from . import errors` -> `einfhe.errors`); other names are kept as written."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []

    def resolve(target: str) -> str:
        probe = target
        while probe and probe not in known:
            probe = probe.rpartition(".")[0]
        return probe or target

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                found.extend((child.lineno, resolve(alias.name)) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - (child.level - 1)] + ([child.module] if child.module else []))
                else:
                    base = child.module or ""
                for alias in child.names:
                    sub = f"{base}.{alias.name}"
                    found.append((child.lineno, sub if sub in known else resolve(base)))
            visit(child)

    visit(tree)
    return found


def stage_violations(root: Path) -> list[str]:
    """Every import under the package directory `root` that goes up the stage table, or names a forbidden
    package, or comes from a module that no stage holds; one line each."""
    modules = module_names(root)
    known = set(modules)
    bad = []
    for module, path in modules.items():
        rank = stage_of(module)
        where = path.relative_to(root.parent)
        if rank is None:
            bad.append(f"{where}: module {module} is in no stage of STAGES")
            continue
        for line, target in imports_of(path, module, known):
            top = target.split(".")[0]
            if top in FORBIDDEN:
                bad.append(f"{where}:{line}: {module} imports {target} (einfhe never imports {top})")
            elif top == root.name:
                to = stage_of(target)
                if to is None or to > rank:
                    to_name = STAGES[to][0] if to is not None else "no stage"
                    bad.append(f"{where}:{line}: {module} ({STAGES[rank][0]}) imports {target} ({to_name})")
    return bad


def test_the_stage_table_covers_every_einfhe_module():
    """Every module under einfhe/ belongs to exactly one stage, so a new folder must be placed in the table."""
    modules = module_names(EINFHE)
    assert len(modules) > 30
    assert [m for m in modules if stage_of(m) is None] == []
    assert {STAGES[stage_of(m)][0] for m in modules} == {name for name, _ in STAGES}


def test_einfhe_imports_only_its_own_or_lower_stages():
    """No einfhe module imports a higher stage (or server, client, quant, fastapi, torch)."""
    bad = stage_violations(EINFHE)
    assert not bad, "imports against the stage order (lowest first: " + " < ".join(n for n, _ in STAGES) + "):\n" + \
        "\n".join(bad)


def test_imports_are_resolved_to_the_module_they_name():
    """Relative, absolute and `from package import module` imports resolve to the module they load."""
    modules = module_names(EINFHE)
    known = set(modules)
    plan = {t for _, t in imports_of(modules["einfhe.plan.plan"], "einfhe.plan.plan", known)}
    assert {"einfhe.errors", "einfhe.layout", "einfhe.plan.report", "einfhe.plan.codec"} <= plan
    keybasis = {t for _, t in imports_of(modules["einfhe.plan.keybasis"], "einfhe.plan.keybasis", known)}
    assert "einfhe.plan.plan" not in keybasis  # only under `if TYPE_CHECKING:`
    face = {t for _, t in imports_of(modules["einfhe"], "einfhe", known)}
    assert {"einfhe.api", "einfhe.compiler", "einfhe.crypto", "einfhe.runtime", "openfhe"} <= face


def _scratch_copy(tmp_path: Path) -> Path:
    root = tmp_path / "einfhe"
    shutil.copytree(EINFHE, root, ignore=shutil.ignore_patterns("__pycache__", "data"))
    return root


def _append(path: Path, text: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n" + text + "\n", encoding="utf-8")


def test_a_scratch_copy_with_upward_and_forbidden_imports_is_caught(tmp_path):
    """Upward edges (relative, absolute, lazy) and forbidden packages added to a copy are each reported."""
    root = _scratch_copy(tmp_path)
    assert stage_violations(root) == stage_violations(EINFHE)
    before = set(stage_violations(root))
    _append(root / "plan" / "steps.py",
            "def _lazy():\n    from ..runtime.interpreter import execute\n    return execute")
    _append(root / "layout" / "layout.py", "from einfhe.compiler import PlanBuilder")
    _append(root / "params" / "precision.py", "from .. import api")
    _append(root / "spec.py", "import einfhe")
    _append(root / "backends" / "base.py", "def _t():\n    import torch\n    from server.cli import main")
    new = sorted(set(stage_violations(root)) - before)
    assert len(new) == 6, "\n".join(new)
    text = "\n".join(new)
    for edge in ("einfhe.plan.steps (plan) imports einfhe.runtime.interpreter (runtime)",
                 "einfhe.layout.layout (layout) imports einfhe.compiler (compiler)",
                 "einfhe.params.precision (params) imports einfhe.api (api)",
                 "einfhe.spec (errors/spec) imports einfhe (face)",
                 "einfhe.backends.base imports torch", "einfhe.backends.base imports server.cli"):
        assert edge in text


def test_type_checking_imports_and_downward_edges_are_not_reported(tmp_path):
    """An upward import under `if TYPE_CHECKING:` and an import of a lower stage add no violation."""
    root = _scratch_copy(tmp_path)
    before = set(stage_violations(root))
    _append(root / "plan" / "steps.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..runtime import execute\n"
            "    import torch\nfrom ..params import Parameters\nfrom . import operands")
    _append(root / "tools" / "demo.py", "from einfhe import api")
    assert set(stage_violations(root)) == before


def test_a_module_outside_the_stage_table_is_reported(tmp_path):
    """A new top-level module nobody placed in STAGES is a violation, not silently allowed."""
    root = _scratch_copy(tmp_path)
    (root / "extra.py").write_text("from .errors import EinfheError\n", encoding="utf-8")
    assert "einfhe/extra.py: module einfhe.extra is in no stage of STAGES" in stage_violations(root)


@pytest.mark.parametrize("rank", range(len(STAGES)))
def test_every_stage_is_a_real_part_of_einfhe(rank):
    """Each stage in the table names modules that exist, so the table cannot drift from the tree."""
    modules = module_names(EINFHE)
    for member in STAGES[rank][1]:
        assert member in modules, f"{member} listed in STAGES but not found under einfhe/"
