"""A graph view of a model: ``torch.fx`` nodes classified into bound-rule keys."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

from robustlab.errors import UnsupportedOperation


@dataclass(frozen=True)
class Bounds:
    """Elementwise ``lower <= f <= upper``; tensors of the same shape."""

    lower: torch.Tensor
    upper: torch.Tensor


def trace(model: nn.Module) -> fx.GraphModule:
    """The fx graph of ``model`` (an fx GraphModule is used as it is)."""
    if isinstance(model, fx.GraphModule):
        return model
    if type(model) in MODULES:  # a single layer: trace it as a one-layer network
        model = nn.Sequential(model)
    try:
        return fx.symbolic_trace(model)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedOperation(
            f"cannot build a graph of {type(model).__name__} with torch.fx ({first}); "
            "bound engines need a traceable model without data-dependent control flow"
        ) from None


# Names for functions and methods, so rules are keyed by readable strings.
FUNCTIONS = {
    torch.relu: "relu",
    nn.functional.relu: "relu",
    torch.flatten: "flatten",
    torch.reshape: "reshape",
    operator.add: "add",
    torch.add: "add",
    operator.sub: "sub",
    torch.sub: "sub",
    operator.mul: "mul",
    torch.mul: "mul",
    operator.truediv: "div",
    torch.div: "div",
    operator.getitem: "getitem",
    nn.functional.pad: "pad",
    operator.neg: "neg",
    torch.neg: "neg",
    nn.functional.linear: "linear",
}
METHODS = {
    "relu": "relu",
    "flatten": "flatten",
    "view": "reshape",
    "reshape": "reshape",
    "size": "size",
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "div": "div",
    "neg": "neg",
}
MODULES = {
    nn.Linear: "linear",
    nn.Conv1d: "conv",
    nn.Conv2d: "conv",
    nn.ReLU: "relu",
    nn.Flatten: "flatten",
    nn.Identity: "identity",
    nn.Dropout: "identity",
    nn.BatchNorm1d: "batchnorm",
    nn.BatchNorm2d: "batchnorm",
    nn.AvgPool2d: "avgpool",
}


def node_key(gm: fx.GraphModule, node: fx.Node) -> str:
    """The rule key of a node: 'input', 'output', 'constant', or an operation name."""
    if node.op == "placeholder":
        return "input"
    if node.op == "output":
        return "output"
    if node.op == "get_attr":
        return "constant"
    if node.op == "call_module":
        key = MODULES.get(type(gm.get_submodule(node.target)))
    elif node.op == "call_function":
        key = FUNCTIONS.get(node.target)
    else:
        key = METHODS.get(node.target)
    return key or "unknown"


def describe(gm: fx.GraphModule, node: fx.Node) -> str:
    """A readable type for error messages."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {node.target}"
