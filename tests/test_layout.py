"""The layout ml/__init__.py describes: stages import only earlier stages and the core, and never Prefect."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ml import STAGES

ML = Path(__file__).resolve().parent.parent / "ml"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function bodies and TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ml" and parts[1] in STAGES else None


MODULES = sorted(p for p in ML.rglob("*.py") if p.parent != ML)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ML)))
def test_a_stage_imports_only_earlier_stages_and_the_core(path: Path) -> None:
    own = path.relative_to(ML).parts[0]
    assert own in STAGES, f"ml/{own}/ is not a stage of ml.STAGES"
    later = {
        m
        for m in _imports(path)
        if (s := _stage(m)) is not None and s != "core" and STAGES.index(s) > STAGES.index(own)
    }
    if own == "core":
        later |= {m for m in _imports(path) if _stage(m) not in (None, "core")}
    assert not later, f"ml/{path.relative_to(ML)} imports a later stage: {sorted(later)}"
    assert not {m for m in _imports(path) if m.split(".")[0] == "prefect"}, "ml/ never imports Prefect"


def test_every_module_is_under_400_lines() -> None:
    long = {str(p.relative_to(ML)): n for p in ML.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long
