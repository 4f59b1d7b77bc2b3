"""Surrogate gradients for attacks on piecewise-constant networks (binarized networks: sign
activations) and saturating outputs (softmax). The forward pass is unchanged, so every margin an attack sees is the network's own
(and every counterexample is re-checked anyway); only the backward pass of each step function is
replaced by a straight-through estimator ("Binarized Neural Networks", Hubara et al. 2016,
arXiv:1602.02830: the gradient of hardtanh, 1 where |x| <= 1), which gives gradient attacks a
direction where the true gradient is zero almost everywhere; a softmax passes its gradient to
its logits unchanged."""

from __future__ import annotations

import copy
import operator
import weakref

import torch
from torch import Tensor, fx, nn

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, width: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.width = width
        return torch.sign(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        w = ctx.width
        # hardtanh's gradient widened to the pre-activation's scale, never exactly zero
        inside = (x.abs() <= w).to(g.dtype)
        return g * (inside + 0.01) / w, None


def sign_ste(x: Tensor) -> Tensor:
    """``torch.sign(x)`` with a straight-through gradient on the scale of ``x``."""
    if not torch.is_grad_enabled() or not x.requires_grad:
        return torch.sign(x)
    width = float(x.detach().abs().mean()) if x.numel() else 1.0
    return _SignSTE.apply(x, max(width, 1e-6))


class _SoftmaxSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dim: int) -> Tensor:
        return torch.softmax(x, dim)

    @staticmethod
    def backward(ctx, g: Tensor):
        return g, None


def softmax_ste(x: Tensor, dim: int, *args, **kwargs) -> Tensor:
    """``torch.softmax(x, dim)`` whose gradient passes to the logits unchanged (a difference
    of probabilities orders like the difference of logits; the true gradient vanishes where
    the softmax saturates)."""
    if args or kwargs or not torch.is_grad_enabled() or not x.requires_grad:
        return torch.softmax(x, dim, *args, **kwargs)
    return _SoftmaxSTE.apply(x, dim)


_STEPS = {torch.sign: sign_ste}
_SOFTMAX = {torch.softmax: softmax_ste, nn.functional.softmax: softmax_ste}
_PASS_FUNCTIONS = {operator.getitem, torch.reshape, torch.flatten, torch.cat, torch.squeeze}
_PASS_METHODS = {"reshape", "view", "flatten", "squeeze", "float", "double"}


def _feeds_output(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node``'s value reaches the output only through reshapes and selections (a
    final softmax; one inside the network, as in attention, keeps its true gradient)."""
    for user in node.users:
        if user.op == "output":
            continue
        passes = (
            (user.op == "call_function" and user.target in _PASS_FUNCTIONS)
            or (user.op == "call_method" and user.target in _PASS_METHODS)
            or (user.op == "call_module" and isinstance(gm.get_submodule(user.target), nn.Flatten))
        )
        if not passes or not _feeds_output(gm, user):
            return False
    return True


def _replacement(gm: fx.GraphModule, node: fx.Node):
    if node.op == "call_function" and node.target in _STEPS:
        return _STEPS[node.target]
    if node.op == "call_method" and node.target == "sign":
        return sign_ste
    if node.op == "call_function" and node.target in _SOFTMAX and _feeds_output(gm, node):
        return _SOFTMAX[node.target]
    return None


def with_surrogate_gradients(model: nn.Module) -> nn.Module:
    """``model`` with each step function's gradient replaced (a copy of a torch.fx graph), or
    ``model`` itself when it has none (cached per model)."""
    if model in _CACHE:
        return _CACHE[model]
    out = model
    graph = getattr(model, "graph", None)
    if isinstance(model, fx.GraphModule) and isinstance(graph, fx.Graph):
        if any(_replacement(model, n) is not None for n in graph.nodes):
            g = copy.deepcopy(graph)
            for n in g.nodes:
                fn = _replacement(model, n)
                if fn is not None:
                    n.op, n.target = "call_function", fn
            out = fx.GraphModule(model, g, class_name=type(model).__name__).eval()
    _CACHE[model] = out
    return out
