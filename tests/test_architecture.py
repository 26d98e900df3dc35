"""The shape of the code: modules keep their private names to themselves, entry points stay short."""

from __future__ import annotations

import ast
import inspect
import re
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


def _library_private_imports(path: Path) -> list[str]:
    """Private modules or names of other libraries that ``path`` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module.split(".")[0] not in OURS:
            if any(map(_private, node.module.split("."))) or any(_private(a.name) for a in node.names):
                found.append(ast.unparse(node))
        elif isinstance(node, ast.Import):
            found.extend(ast.unparse(node) for a in node.names if any(map(_private, a.name.split("."))))
    return [f"{path.relative_to(ROOT)}: {f}" for f in found]


def test_only_the_storage_adapters_import_other_libraries_private_names():
    allowed = ROOT / "autoprune" / "storage_adapters.py"
    assert [f for path in SOURCES if path != allowed for f in _library_private_imports(path)] == []


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


# -- the import graph ------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = "autoprune_plugins" if parts[0] == "plugins" else parts[0]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in SOURCES}


def _imports(path: Path, *, module_level: bool) -> set[str]:
    """Our modules that ``path`` imports: at module level only (what runs on import, outside
    ``if TYPE_CHECKING``), or anywhere (functions' deferred imports too)."""
    name, package = _module_name(path), path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            base = name.split(".") if package else name.split(".")[:-1]
            target = node.module or ""
            if node.level:
                target = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_between_modules():
    graph = {name: _imports(path, module_level=True) for name, path in MODULES.items()}
    assert _cycles(graph) == []


#: Which packages a layer may not import, even in a function: the engine knows no plan, search or
#: result; the plan no search or result; the search of the results only the study record.
LAYERS = {
    "autoprune.engine": (
        "autoprune.plan",
        "autoprune.searcher",
        "autoprune.results",
        "autoprune.cli",
        "autoprune.workflow",
    ),
    "autoprune.plan": ("autoprune.searcher", "autoprune.results", "autoprune.cli", "autoprune.workflow"),
    "autoprune.searcher": ("autoprune.results.", "autoprune.cli", "autoprune.workflow"),
    "autoprune.results": ("autoprune.searcher", "autoprune.cli", "autoprune.workflow"),
}
ALLOWED = {"autoprune.searcher": ("autoprune.results.record", "autoprune.results.units")}


def test_each_layer_imports_only_the_layers_below_it():
    broken = []
    for name, path in MODULES.items():
        for layer, forbidden in LAYERS.items():
            if name != layer and not name.startswith(layer + "."):
                continue
            for target in _imports(path, module_level=False):
                if any(target == a or target.startswith(a + ".") for a in ALLOWED.get(layer, ())):
                    continue
                if any(target == f.rstrip(".") or target.startswith(f.rstrip(".") + ".") for f in forbidden):
                    broken.append(f"{name} imports {target}")
    assert broken == []


def test_only_the_study_record_reads_or_writes_study_and_trial_attributes():
    """Every key an autoprune study stores is the record's (the package autoprune/results/record/)."""
    record = ROOT / "autoprune" / "results" / "record"
    pattern = re.compile(r"user_attrs|set_user_attr\(")
    readers = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in SOURCES
        if record not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert readers == []
