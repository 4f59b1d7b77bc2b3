"""Registries by name, shared by the CLI, the report and the Python API: attacks, explainers,
training methods."""

from __future__ import annotations

from collections.abc import Callable

from robustlab.errors import canonical, unknown


def registrar(table: dict[str, type]) -> Callable[[str], Callable[[type], type]]:
    """A class decorator factory: ``@register("name")`` adds the class to ``table`` and sets its
    ``name``."""

    def register(name: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            cls.name = name
            table[name] = cls
            return cls

        return deco

    return register


def build(table: dict[str, type], name: str, kind: str, **kwargs):
    """An instance of ``table[name]``, or an error naming the ``kind`` and the known names."""
    name = canonical(name, table)  # case, hyphens and underscores as the table spells them
    if name not in table:
        raise unknown(kind, name, sorted(table))
    return table[name](**kwargs)
