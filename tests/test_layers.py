"""The package's layering (issue 18): core <- capabilities <- application, read from the source
with ``ast`` (every import statement, at module level or inside a function, and the lazy
``_EXPORTS`` tables). Imports only point down or sideways; there is no cycle between packages nor
between modules; imports inside functions are only the listed exceptions."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "robustlab"

# layer of each top-level module or package of robustlab (0 core, 1 capability, 2 application)
CORE = {"errors", "paths", "registry", "deadline", "results", "threat", "_onnx", "zoo",
        "model", "data", "inputs", "plotting", "lazy", "shards"}  # fmt: skip
CAPABILITIES = {"attacks", "bounds", "verify", "corruptions", "smoothing", "explain", "train",
                "audit", "abstain", "adaptive", "blindspots", "compress", "conformal", "detect",
                "mix", "repair", "sensitivity"}  # fmt: skip
APPLICATION = {"jobs", "report", "store", "cli", "console"}
LAYERS = {**dict.fromkeys(CORE, 0), **dict.fromkeys(CAPABILITIES, 1),
          **dict.fromkeys(APPLICATION, 2)}  # fmt: skip
NAMES = ("core", "capability", "application")

# imports pointing up a layer, each with its reason (importer, imported)
UPWARD_ALLOWED: dict[tuple[str, str], str] = {}

# modules whose functions may import robustlab modules (module -> reason); every other
# function-level import of a robustlab module fails the test
LAZY_ALLOWED = {
    "robustlab.cli": "the CLI imports a command's code when the command runs "
    "(`robustlab --help` stays under 0.5 s)",
}


def _name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module a dotted name imports (a name inside a module resolves to that module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported robustlab module, inside a function?) for every import of ``module``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    in_function = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function |= {id(n) for n in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            # ``from pkg import sub`` imports the submodule; ``from pkg import name``, pkg
            names = [f"{base}.{a.name}" for a in node.names]
        elif (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):  # a lazy table: public name -> module
            names = [v.value for v in node.value.values if isinstance(v, ast.Constant)]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "lazy_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):  # robustlab.lazy.lazy_module("...") at the top of a module: an import run on first use
            names = [node.args[0].value]
        else:
            continue
        for n in names:
            target = _resolve(n) if n.startswith(ROOT) else None
            if target and target != module:
                found.append((target, id(node) in in_function))
    return found


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root facade


def _is_ancestor(package: str, module: str) -> bool:
    return module.startswith(package + ".")


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    tops = {_top(m) for m in MODULES} - {None}
    assert tops <= set(LAYERS), f"modules without a layer: {sorted(tops - set(LAYERS))}"


def test_imports_never_point_up_a_layer():
    bad = []
    for module, imports in GRAPH.items():
        src = _top(module)
        for target, _ in imports:
            dst = _top(target)
            if src is None or dst is None:  # the root: lazy facade / __version__
                continue
            if LAYERS[dst] > LAYERS[src] and (module, target) not in UPWARD_ALLOWED:
                bad.append(f"{module} ({NAMES[LAYERS[src]]}) -> {target} ({NAMES[LAYERS[dst]]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_cycle_between_packages():
    graph: dict[str, set[str]] = {}
    for module, imports in GRAPH.items():
        for target, _ in imports:
            a, b = _top(module), _top(target)
            if a and b and a != b:
                graph.setdefault(a, set()).add(b)
    assert _cycles(graph) == []


def test_no_cycle_between_modules():
    """Over the imports run at import time (module level). A module's own ancestor packages are
    left out: Python runs them first anyway."""
    graph = {
        m: {t for t, inside in imports if not inside and not _is_ancestor(t, m) and t != ROOT}
        for m, imports in GRAPH.items()
    }
    assert _cycles(graph) == []


def test_imports_inside_functions_are_the_listed_exceptions():
    bad = [
        f"{module} -> {target}"
        for module, imports in GRAPH.items()
        for target, inside in imports
        if inside and module not in LAZY_ALLOWED
    ]
    assert not bad, "imports of robustlab modules inside functions:\n" + "\n".join(bad)


def test_the_graph_sees_the_imports():
    """The walker itself: a known edge of each kind is found."""
    assert ("robustlab.attacks", False) in GRAPH["robustlab.jobs.attack"]  # module level
    assert any(t == "robustlab.jobs.audit" for t, _ in GRAPH["robustlab.jobs"])  # _EXPORTS
    assert any(inside for _, inside in GRAPH["robustlab.cli"])  # lazy loading
    assert ("robustlab._onnx", False) in GRAPH["robustlab.model"]  # lazy_module(...)
