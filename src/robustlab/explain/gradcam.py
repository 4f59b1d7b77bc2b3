"""Grad-CAM on a convolutional layer, by explicit traversal of the model's fx graph (no hooks)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from robustlab.errors import RobustlabError
from robustlab.explain.base import ExplainResult, Target, blocks, register, run
from robustlab.explain.layers import is_conv, traced


def find_layer(gm: fx.GraphModule, layer: str | None) -> fx.Node:
    """The graph node whose output Grad-CAM explains: by node name, by module name (one call
    only), or the last 2-d convolution when ``layer`` is None."""
    nodes = list(gm.graph.nodes)
    if layer is None:
        convs = [n for n in nodes if is_conv(gm, n)]
        if not convs:
            raise RobustlabError("grad-cam needs a Conv2d layer; found none in the model")
        return convs[-1]
    by_name = [n for n in nodes if n.name == layer]
    calls = [n for n in nodes if n.op == "call_module" and n.target == layer]
    if by_name:
        return by_name[0]
    if len(calls) == 1:
        return calls[0]
    if len(calls) > 1:
        names = ", ".join(n.name for n in calls)
        raise RobustlabError(
            f"module '{layer}' is called {len(calls)} times; name one call: {names}"
        )
    known = ", ".join(n.name for n in nodes if n.op in ("call_module", "call_function"))
    raise RobustlabError(f"no layer '{layer}' in the model; nodes: {known}")


class _Split(fx.Interpreter):
    """Runs the graph and makes the chosen node's output a fresh leaf, so the gradient with
    respect to it is one ``autograd.grad`` call; downstream in-place operations act on a copy."""

    def __init__(self, gm: fx.GraphModule, node: fx.Node) -> None:
        super().__init__(gm)
        self.node, self.activation = node, None

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n is self.node:
            if not isinstance(out, Tensor) or out.dim() != 4:
                found = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise RobustlabError(
                    f"grad-cam needs a layer output (N, C, H, W); '{n.name}' gives {found}"
                )
            self.activation = out.detach().requires_grad_(True)
            return self.activation.clone()
        return out


@register("grad-cam")
@dataclass(frozen=True)
class GradCAM:
    """Grad-CAM (Selvaraju et al. 2017, arXiv:1610.02391): ReLU(sum_k alpha_k A_k) with alpha_k
    the spatial mean gradient of the score w.r.t. feature map A_k of ``layer`` (default the last
    Conv2d), upsampled bilinearly to the input size and repeated over its channels."""

    layer: str | None = None
    relu: bool = True
    upsample: bool = True
    batch_size: int = 512

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        gm = traced(model, "grad-cam")
        node = find_layer(gm, self.layer)
        x0 = x.detach()

        def body(passes, score):
            maps = []
            for rows in blocks(len(x0), self.batch_size):
                split = _Split(gm, node)
                with torch.enable_grad():
                    logits = split.run(x0[rows])
                    passes.n_forward += len(rows)
                    s = score(logits, rows)
                    (g,) = torch.autograd.grad(s.sum(), split.activation)
                passes.n_backward += len(rows)
                cam = (g.mean((2, 3), keepdim=True) * split.activation.detach()).sum(
                    1, keepdim=True
                )
                maps.append(cam.clamp_min(0) if self.relu else cam)
            cam = torch.cat(maps)
            if self.upsample and x0.dim() == 4:
                cam = F.interpolate(cam, size=x0.shape[2:], mode="bilinear", align_corners=False)
                cam = cam.expand(-1, x0.shape[1], -1, -1).contiguous()
            return cam.to(x0.dtype), None

        return run(self.name, model, x, target, self.batch_size, body)
