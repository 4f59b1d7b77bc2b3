"""Surrogate gradients for attacks on piecewise-constant networks (binarized networks: sign
activations) and saturating outputs (softmax). The forward pass is unchanged, so every margin an
attack sees is the network's own (and every counterexample is re-checked anyway); only the
backward pass of each step function is replaced by a straight-through estimator ("Binarized
Neural Networks", Hubara et al. 2016, arXiv:1602.02830: the gradient of hardtanh, 1 where
|x| <= 1), which gives gradient attacks a direction where the true gradient is zero almost
everywhere; a softmax passes its gradient to its logits unchanged.

For properties that only compare outputs (rows ``a (y_i - y_j) <= 0``) a final softmax can be
dropped altogether (:func:`logit_view`): softmax is strictly increasing in the differences of its
logits, so the same rows hold or fail on the logits, and the attack sees margins that keep
moving where float32 probabilities saturate at 0 and 1 (a margin stuck at 1 made every step
look stalled)."""

from __future__ import annotations

import copy
import operator
import weakref

import torch
from torch import Tensor, fx, nn

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, g: Tensor):
        (x,) = ctx.saved_tensors
        w = _window(x.detach())
        # hardtanh's gradient on the window of the values the batch reaches, never exactly zero
        inside = (x.abs() <= w).to(g.dtype)
        return g * (inside + 0.01) / max(float(w.mean()), 1e-6)


def _window(x: Tensor) -> Tensor:
    """Per entry, the half-width of the straight-through window: how far the batch's values
    of that entry spread (max - min over the batch: an attack's batch samples one box, so an
    entry whose spread does not reach zero cannot change sign there, and pointing the input at
    it is wasted), or the mean |x| for a batch of one."""
    if x.dim() == 0 or len(x) < 2:
        return x.abs().mean().expand_as(x)
    return (x.amax(0) - x.amin(0)).expand_as(x)


def sign_ste(x: Tensor) -> Tensor:
    """``torch.sign(x)`` with a straight-through gradient on the window of :func:`_window`."""
    if not torch.is_grad_enabled() or not x.requires_grad or not x.numel():
        return torch.sign(x)
    return _SignSTE.apply(x)


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


def _identity(x: Tensor, *args, **kwargs) -> Tensor:
    return x


def with_surrogate_gradients(model: nn.Module, logits: bool = False) -> nn.Module:
    """``model`` with each step function's gradient replaced (a copy of a torch.fx graph), or
    ``model`` itself when it has none (cached per model). ``logits``: a final softmax is
    dropped instead (the outputs are its logits; see :func:`logit_view`)."""
    cache = _CACHE.setdefault(model, {})
    if logits in cache:
        return cache[logits]
    out = model
    graph = getattr(model, "graph", None)
    if isinstance(model, fx.GraphModule) and isinstance(graph, fx.Graph):
        if any(_replacement(model, n) is not None for n in graph.nodes):
            g = copy.deepcopy(graph)
            for n in g.nodes:
                fn = _replacement(model, n)
                if logits and fn is softmax_ste:
                    fn = _identity
                if fn is not None:
                    n.op, n.target = "call_function", fn
            out = fx.GraphModule(model, g, class_name=type(model).__name__).eval()
    cache[logits] = out
    return out


def compares_outputs(C: Tensor, d: Tensor) -> bool:
    """Whether every row ``C_r y <= d_r`` reads ``a (y_i - y_j) <= 0`` with ``a > 0``."""
    if not len(d) or bool((d != 0).any()):
        return False
    nz = C != 0
    if not bool((nz.sum(1) == 2).all()):
        return False
    return bool((C.sum(1) == 0).all())


def logit_view(model: nn.Module, C: Tensor, d: Tensor, x: Tensor) -> nn.Module | None:
    """The surrogate of ``model`` with its final softmax dropped, for attacks on a property
    whose rows ``C y <= d`` only compare outputs (:func:`compares_outputs`), or None (no final
    softmax, other rows, or a softmax that is not over all outputs: checked at the inputs ``x``,
    (batch, *input shape)). A point the logits reach is a candidate like any other: the caller
    re-checks it on the network itself."""
    if not compares_outputs(C, d):
        return None
    graph = getattr(model, "graph", None)
    if not isinstance(model, fx.GraphModule) or not isinstance(graph, fx.Graph):
        return None
    if not any(_replacement(model, n) is softmax_ste for n in graph.nodes):
        return None  # no final softmax to drop
    view = with_surrogate_gradients(model, logits=True)
    with torch.no_grad():
        y = model(x).reshape(len(x), -1).double()
        z = view(x).reshape(len(x), -1).double()
    tol = 1e-5 * max(1.0, float(y.abs().max()))
    return view if torch.allclose(torch.softmax(z, 1), y, rtol=0.0, atol=tol) else None
