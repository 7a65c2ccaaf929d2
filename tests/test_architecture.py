"""The layering of docs/ARCHITECTURE.md: a package imports nothing from a layer above it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import adaptopt

LAYERS = {  # lower number = lower layer (docs/ARCHITECTURE.md)
    "optim": 0,
    "smoothness": 1,
    "theory": 1,
    "data": 2,
    "models": 3,
    "tasks": 4,
    "experiments": 5,
    "cli": 6,
}
ROOT = Path(adaptopt.__file__).parent


def _imports(path: Path) -> set[str]:
    """The adaptopt packages a module imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "adaptopt" and len(parts) > 1 and parts[1] in LAYERS:
                found.add(parts[1])
    return found


MODULES = sorted(p for p in ROOT.rglob("*.py") if p.relative_to(ROOT).parts[0] in LAYERS)


def test_every_package_is_a_known_layer():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_from_a_higher_layer(path):
    own = path.relative_to(ROOT).parts[0]
    higher = {dep for dep in _imports(path) if dep != own and LAYERS[dep] >= LAYERS[own]}
    assert not higher, f"{path.relative_to(ROOT)} imports {sorted(higher)} (layer of {own})"


def test_the_checker_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from adaptopt.experiments.trainer import train\n")
    assert _imports(bad) == {"experiments"}
