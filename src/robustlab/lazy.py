"""Modules declared at the top of a file and imported on first use (the pattern of the Scientific
Python ecosystem's SPEC 1, "Lazy Loading of Submodules and Functions").

Two of robustlab's dependencies cost more to import than everything else a command needs: onnx
(about 0.7 s, only for an ONNX model) and scikit-learn (about 0.8 s, only when the bundled digits are
not cached yet). Declaring them here keeps the dependency visible at the top of the module that uses
it (and to the import-graph test) without making every command pay for it at start-up. The import
itself is Python's own (``importlib.import_module``: parents first, thread-safe), run on the first
attribute access.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from types import ModuleType


class _Deferred(ModuleType):
    """Stands for module ``__name__`` until an attribute is read, then hands every read to it."""

    def __getattr__(self, attr: str):  # called only for names not set on the stand-in
        return getattr(importlib.import_module(self.__name__), attr)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__name__))


def lazy_module(name: str) -> ModuleType:
    """The module ``name``: the imported one if it is already in ``sys.modules``, else a stand-in
    that imports it on its first attribute access. A module that cannot be found is refused here
    (a submodule is looked up on its parent's search path, without importing the parent)."""
    if name in sys.modules:
        return sys.modules[name]
    if _find_spec(name) is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return _Deferred(name)


def _find_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    parent = name.rpartition(".")[0]
    if not parent or parent in sys.modules:
        return importlib.util.find_spec(name)
    outer = _find_spec(parent)
    if outer is None or outer.submodule_search_locations is None:
        return None
    return importlib.machinery.PathFinder.find_spec(name, outer.submodule_search_locations)
