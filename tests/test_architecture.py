"""The shape of the code: modules keep their private names to themselves, entry points stay short."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import autoprune

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "autoprune").rglob("*.py"), *(ROOT / "plugins").glob("*.py")])
OURS = ("autoprune", "autoprune_plugins")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _crossings(path: Path) -> list[str]:
    """Private names of our modules that ``path`` imports or reads from another module."""
    tree = ast.parse(path.read_text())
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            ours = node.level > 0 or (node.module or "").split(".")[0] in OURS
            if not ours:
                continue
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"from {'.' * node.level}{node.module or ''} import {alias.name}")
                else:
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in OURS:
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(base, ast.Name) and base.id in modules:
                found.append(f"{ast.unparse(node)}")
    return [f"{path.relative_to(ROOT)}: {f}" for f in found]


def test_no_module_uses_another_modules_private_names():
    crossings = [c for path in SOURCES for c in _crossings(path)]
    assert crossings == []


def _code_lines(fn) -> int:
    """Lines of a function without its signature and docstring."""
    node = ast.parse(inspect.getsource(fn).strip()).body[0]
    body = (
        node.body[1:]
        if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
        else node.body
    )
    return body[-1].end_lineno - body[0].lineno + 1


def test_search_and_prune_read_on_one_screen():
    for fn in (autoprune.search, autoprune.prune):
        assert _code_lines(fn) <= 25, f"{fn.__name__} has {_code_lines(fn)} lines of code"


def test_the_public_names_are_exported():
    for name in autoprune.__all__:
        assert hasattr(autoprune, name), name
    for name in ("SearchSettings", "TrainSettings", "train", "load_checkpoint", "search", "prune", "Study", "load"):
        assert name in autoprune.__all__
