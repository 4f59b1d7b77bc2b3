"""FullGrad: input-gradients and bias-gradients of every convolution and batch norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.explain.base import ExplainResult, Target, blocks, register, run
from robustlab.explain.layers import Recorder, bias_of, traced


def normalise(a: Tensor, eps: float = 1e-6) -> Tensor:
    """FullGrad's post-processing psi per example: |a|, shifted to minimum 0, scaled to max 1."""
    a = a.abs()
    flat = a.flatten(1)
    a = a - flat.amin(1).view(-1, *[1] * (a.dim() - 1))
    return a / (a.flatten(1).amax(1).view(-1, *[1] * (a.dim() - 1)) + eps)


@register("fullgrad")
@dataclass(frozen=True)
class FullGrad:
    """FullGrad (Srinivas and Fleuret 2019, arXiv:1905.00780): psi(x * grad_x f) plus, for every
    2-d convolution and batch norm (explicit and implicit biases), psi(grad_b f * b) upsampled
    bilinearly to the input size; psi = |.| rescaled to [0, 1] per example; channels summed and
    the map repeated over the input's channels. One forward and one backward pass per input."""

    batch_size: int = 512

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult:
        gm = traced(model, "fullgrad")
        x0 = x.detach()
        image = x0.dim() == 4

        def keep(node, args, kwargs, out):
            b = bias_of(gm, node, args, kwargs)
            return b if b is not None and out.dim() == 4 and image else None

        def body(passes, score):
            maps = []
            for rows in blocks(len(x0), self.batch_size):
                rec = Recorder(gm, keep)
                with torch.enable_grad():
                    leaf = x0[rows].requires_grad_(True)
                    s = score(rec.run(leaf.clone()), rows)
                    passes.n_forward += len(rows)
                    names = list(rec.outputs)
                    grads = torch.autograd.grad(s.sum(), [leaf, *rec.outputs.values()])
                passes.n_backward += len(rows)
                total = normalise(grads[0] * x0[rows])
                total = total.sum(1, keepdim=True) if image else total
                for name, g in zip(names, grads[1:], strict=True):
                    b = rec.extra[name].to(g.dtype).view(1, -1, 1, 1)
                    part = F.interpolate(
                        normalise(g * b), size=x0.shape[2:], mode="bilinear", align_corners=True
                    )
                    total = total + part.sum(1, keepdim=True)
                maps.append(total.detach())
            cam = torch.cat(maps)
            if image:
                cam = cam.expand(-1, x0.shape[1], -1, -1).contiguous()
            return cam.to(x0.dtype), None

        return run(self.name, model, x, target, self.batch_size, body)
