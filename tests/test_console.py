"""robustlab.console: what each command prints, built from the report alone (no torch)."""

from __future__ import annotations

import ast
from pathlib import Path

from rich.table import Table

from robustlab import console


def test_presenters_build_tables_lines_and_notes():
    report = {
        "model": {"name": "m"}, "data": {"name": "d"}, "clean_accuracy": 0.9,
        "curve": [{"eps": 0.1, "robust_accuracy": 0.5}], "flags": [{"message": "too easy"}],
    }  # fmt: skip
    items = console.attack(report)
    assert isinstance(items[0], Table) and items[0].row_count == 1
    assert items[1] == console.Note("warning: too easy")
    detect = {"fpr": 0.05, "norm": "inf", "eps": 0.1, "n_clean": 3, "note": "fine", "rows": [
        {"attack": "pgd", "success_rate": 1.0, "auroc": None, "tpr": 0.5,
         "undetected_success_rate": 0.0}]}  # fmt: skip
    table, note = console.detect(detect)
    assert table.row_count == 1 and note == console.Note("verdict: fine")
    assert console.fmt(None) == "-" and console.fmt(0.12345) == "0.123"


def test_console_imports_only_rich():
    """``runs list`` and ``--help`` print through it: no torch, no other robustlab module."""
    tree = ast.parse(Path(console.__file__).read_text(encoding="utf-8"))
    found = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    found |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert found == {"__future__", "dataclasses", "rich"}
