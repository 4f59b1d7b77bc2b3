"""A network's layers as parameter groups: every module holding parameters of its own (a weight
and a bias), in the order of ``named_modules``; the weight layers (Linear, Conv) among them."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from robustlab.errors import RobustlabError

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass(frozen=True)
class Layer:
    """One parameter group: the module's path, its type, and its parameters' full names."""

    name: str  # the module's path in the model ("" for the model itself)
    kind: str  # the module's class name
    params: tuple[str, ...]  # full parameter names, e.g. ("0.weight", "0.bias")
    size: int  # number of parameters

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "parameters": self.size}


def layers(model: nn.Module) -> list[Layer]:
    """Every module with parameters of its own (that require gradients), as a parameter group."""
    out = []
    for name, m in model.named_modules():
        own = [
            (f"{name}.{p}" if name else p, t)
            for p, t in m.named_parameters(recurse=False)
            if t.requires_grad
        ]
        if own:
            out.append(
                Layer(
                    name, type(m).__name__, tuple(n for n, _ in own), sum(t.numel() for _, t in own)
                )
            )
    if not out:
        raise RobustlabError("expected a model with trainable parameters; found none")
    return out


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear and Conv modules (path, module), in order: what is rounded and pruned."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]
    if not found:
        raise RobustlabError("expected a model with Linear or Conv layers; found none")
    return found


def parameters_of(model: nn.Module, groups: list[Layer]) -> list[list[Tensor]]:
    """The parameter tensors of each group, in the group's order."""
    named = dict(model.named_parameters())
    return [[named[p] for p in g.params] for g in groups]


def select(groups: list[Layer], names: list[str] | None) -> list[Layer]:
    """The groups named in ``names`` (all when None), or an error listing the known names."""
    if names is None:
        return groups
    known = {g.name: g for g in groups}
    missing = [n for n in names if n not in known]
    if missing:
        raise RobustlabError(
            f"unknown layer {missing[0]!r}; layers with parameters: {', '.join(known)}"
        )
    return [known[n] for n in names]


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Replace the submodule at ``path`` (a GraphModule calls it by the same path)."""
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
