"""Counts the imports placed inside functions in src/robustlab (issue 18's before / after figure).

Usage: python benchmarks/import_layers.py [--list]
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "robustlab"


def function_imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every import statement inside a function of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.Import):
                out += [(node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                out.append((node.lineno, "." * node.level + (node.module or "")))
    return sorted(set(out))


def main() -> None:
    total, robustlab_total = 0, 0
    for path in sorted(SRC.rglob("*.py")):
        found = function_imports(path)
        total += len(found)
        ours = [f for f in found if f[1].startswith(("robustlab", "."))]
        robustlab_total += len(ours)
        if "--list" in sys.argv:
            for line, mod in found:
                print(f"{path.relative_to(SRC.parent)}:{line} {mod}")
    print(f"imports inside functions: {total} (of robustlab modules: {robustlab_total})")


if __name__ == "__main__":
    main()
