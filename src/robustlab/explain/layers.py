"""The fx graph of a model for layer-level explainers (Grad-CAM, Smooth Grad-CAM++, FullGrad,
occlusion in feature space): tracing, the convolutions and their biases, and an interpreter that
records chosen nodes' outputs while gradients flow through them (no hooks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from robustlab.errors import UnsupportedOperation

CONV_FUNCTIONS = (F.conv2d, torch.conv2d)
BATCHNORM_FUNCTIONS = (F.batch_norm, torch.batch_norm)


def traced(model: nn.Module, method: str) -> fx.GraphModule:
    """``model`` as an fx GraphModule (an ONNX model already is one)."""
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.symbolic_trace(model)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedOperation(
            f"{method} needs a model that torch.fx can trace; {type(model).__name__} fails ({first})"
        ) from None


def is_conv(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A 2-d convolution, as a module or a function call."""
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), nn.Conv2d)
    return node.op == "call_function" and node.target in CONV_FUNCTIONS


def bias_of(gm: fx.GraphModule, node: fx.Node, args: tuple, kwargs: dict) -> Tensor | None:
    """The bias a node adds per output channel, explicit (convolution) or implicit (batch norm in
    eval mode: beta - mean gamma / sqrt(var + eps)); None for other nodes or without a bias."""
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Conv2d):
            return None if m.bias is None else m.bias.detach()
        if isinstance(m, nn.BatchNorm2d) and not m.training and m.running_mean is not None:
            return _bn_bias(m.running_mean, m.running_var, m.weight, m.bias, m.eps)
        return None
    if node.op != "call_function":
        return None
    if node.target in CONV_FUNCTIONS:
        b = args[2] if len(args) > 2 else kwargs.get("bias")
        return b.detach() if isinstance(b, Tensor) else None
    if node.target in BATCHNORM_FUNCTIONS:
        names = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum")
        a = {**dict(zip(names, args, strict=False)), **kwargs}
        if a.get("training") or not isinstance(a.get("running_mean"), Tensor):
            return None
        eps = args[7] if len(args) > 7 else kwargs.get("eps", 1e-5)
        return _bn_bias(a["running_mean"], a["running_var"], a.get("weight"), a.get("bias"), eps)
    return None


def _bn_bias(mean, var, weight, bias, eps) -> Tensor:
    scale = 1 / torch.sqrt(var.detach() + eps)
    if weight is not None:
        scale = weight.detach() * scale
    return (0.0 if bias is None else bias.detach()) - mean.detach() * scale


class Recorder(fx.Interpreter):
    """Runs the graph, keeping the output of each node that ``keep(node, args, kwargs, out)``
    accepts in ``outputs`` (node name -> tensor, still in the autograd graph) and ``extra`` (node
    name -> what ``keep`` returned). Downstream nodes get a copy, so an in-place operation after
    a recorded node cannot change what was recorded."""

    def __init__(self, gm: fx.GraphModule, keep) -> None:
        super().__init__(gm)
        self.keep = keep
        self.outputs: dict[str, Tensor] = {}
        self.extra: dict[str, object] = {}

    def run_node(self, n: fx.Node):
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        out = getattr(self, n.op)(n.target, args, kwargs)
        if isinstance(out, Tensor):
            kept = self.keep(n, args, kwargs, out)
            if kept is not None and kept is not False:
                self.outputs[n.name], self.extra[n.name] = out, kept
                return out.clone()
        return out
