"""1-Lipschitz networks trained for a certified L2 margin: every Linear layer orthogonalised by
Björck iterations (Anil et al. 2019, "Sorting out Lipschitz function approximation",
arXiv:1811.05381), every Conv2d divided by a Gram-iteration bound of its norm (Delattre et al.
2023, arXiv:2305.16173), ReLU kept; the loss is the Lipschitz-margin cross-entropy of Tsuzuku et
al. 2018 (arXiv:1802.04034): the true logit lowered by ``sqrt(2) eps``, the most a logit
difference of a 1-Lipschitz net with orthonormal last rows moves within L2 radius eps.

The layers are torch parametrizations of the model's own Linear / Conv2d modules: the bound
engine and the exporter see plain layers, and ``finish`` bakes the weights in, so the exported
ONNX file holds ordinary Linear / Conv weights whose Lipschitz constant ``certify --method
lipschitz`` computes (about 1, not assumed).

Orthogonal convolutions (Cayley, BCOP, SOC) are left out: exported as plain zero-padded
convolutions they become full-size circular kernels or truncated series, whose layer-by-layer
bound is no longer 1; SLL's residual blocks (Araujo et al. 2023) are 1-Lipschitz only through a
block-level argument that the layer-wise product certificate does not see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.utils import parametrize

from robustlab.bounds.lipschitz import global_lipschitz
from robustlab.bounds.norms import conv_grid, conv_spectrum, gram_bound
from robustlab.errors import RobustlabError
from robustlab.train.methods import StepContext, StepOutput, register

TOLERANCE = 1e-4  # the checked Lipschitz bound of a prepared model may exceed 1 by rounding only


class Bjorck(nn.Module):
    """``W = bjorck(V / ||V||)``: V scaled by its Gram-iteration norm bound, then ``iters`` steps
    of ``W <- W (1.5 I - 0.5 W^T W)`` (every singular value moves towards 1 and stays <= 1)."""

    def __init__(self, iters: int = 20, gram_iters: int = 6) -> None:
        super().__init__()
        self.iters, self.gram_iters = iters, gram_iters

    def forward(self, v: Tensor) -> Tensor:
        w = v / gram_bound(v, self.gram_iters)[0]
        wide = w.shape[0] < w.shape[1]
        for _ in range(self.iters):
            w = 1.5 * w - 0.5 * ((w @ w.T) @ w if wide else w @ (w.T @ w))
        return w


class ConvNormalized(nn.Module):
    """``K / ||K||``: the kernel divided by a Gram-iteration bound of the circular convolution's
    norm on the padded grid (the bound the certificate uses, ``bounds.norms``)."""

    def __init__(self, grid: tuple[int, int], gram_iters: int = 12) -> None:
        super().__init__()
        self.grid, self.gram_iters = grid, gram_iters

    def forward(self, k: Tensor) -> Tensor:
        return k / gram_bound(conv_spectrum(k, self.grid), self.gram_iters).max()


_NEUTRAL = (nn.ReLU, nn.Flatten, nn.Identity, nn.Dropout, nn.Unflatten, nn.Sequential)


def _conv_inputs(model: nn.Module, example: Tensor) -> dict[str, tuple[int, ...]]:
    """The per-sample input shape of every Conv2d, by module name."""
    gm = fx.symbolic_trace(model)
    with torch.no_grad():
        ShapeProp(gm).propagate(example[:1])
    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Conv2d):
            out[node.target] = tuple(node.all_input_nodes[0].meta["tensor_meta"].shape[1:])
    return out


def make_lipschitz(
    model: nn.Module, example: Tensor, *, generator: torch.Generator | None = None,
    keep_weights: bool = False,
) -> nn.Module:  # fmt: skip
    """Turn ``model``'s Linear and Conv2d layers into 1-Lipschitz ones in place (orthogonal
    initialisation of Linear weights unless ``keep_weights``), then check the whole model with
    the certificate's bound: at most 1 (up to rounding), or an error naming the layers above 1."""
    if isinstance(model, (nn.Linear, nn.Conv2d)):
        raise RobustlabError(
            f"lipschitz training expects a network of layers (e.g. nn.Sequential); found a bare "
            f"{type(model).__name__}"
        )
    was_training = model.training
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise RobustlabError(
                f"lipschitz training expects a model without BatchNorm (its scale is not bounded "
                f"by 1); found {type(m).__name__} at '{name}'"
            )
    shapes = _conv_inputs(model.eval(), example)
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            if not keep_weights:
                with torch.no_grad():
                    nn.init.orthogonal_(m.weight, generator=generator)
            parametrize.register_parametrization(m, "weight", Bjorck())
        elif isinstance(m, nn.Conv2d) and name in shapes:
            if m.padding_mode != "zeros":
                raise RobustlabError(
                    f"lipschitz training expects zero-padded convolutions; found "
                    f"padding_mode={m.padding_mode!r} at '{name}'"
                )
            grid = conv_grid(shapes[name][-2:], m.weight.shape[-2:],
                             m._reversed_padding_repeated_twice)  # fmt: skip
            parametrize.register_parametrization(m, "weight", ConvNormalized(grid))
    with torch.no_grad():
        bound = global_lipschitz(model, tuple(example.shape[1:]))
    model.train(was_training)
    if bound.bound > 1 + TOLERANCE:
        above = [f"{n} ({v:.3g})" for n, v in bound.layers if v > 1 + TOLERANCE]
        raise RobustlabError(
            f"lipschitz training expects 1-Lipschitz layers; found {', '.join(above)} (Linear and "
            "Conv2d are made 1-Lipschitz; activations and pooling must be so already)"
        )
    return model


def _plain_layer(m: nn.Module) -> nn.Module:
    """A plain Linear / Conv2d holding a parametrized layer's current weight (and its bias)."""
    if isinstance(m, nn.Linear):
        layer = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    else:
        layer = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                          padding=m.padding, dilation=m.dilation, groups=m.groups,
                          bias=m.bias is not None)  # fmt: skip
    with torch.no_grad():
        layer = layer.to(m.parametrizations.weight.original.dtype)
        layer.weight.copy_(m.weight)
        if m.bias is not None:
            layer.bias.copy_(m.bias)
    return layer.train(m.training)


def finish_lipschitz(model: nn.Module) -> nn.Module:
    """Replace every parametrized layer of ``model`` (in place) by a plain Linear / Conv2d
    holding its weight. Modules are swapped rather than un-parametrized: a deep copy shares the
    parametrized class, which ``remove_parametrizations`` would edit under the original."""
    for name, m in list(model.named_modules()):
        if name and parametrize.is_parametrized(m, "weight"):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, _plain_layer(m))
    return model


@register("lipschitz")
@dataclass(frozen=True)
class Lipschitz:
    """1-Lipschitz network (Björck-orthogonal Linear layers, Anil et al. 2019; normalised Conv2d,
    Delattre et al. 2023) trained with Tsuzuku et al.'s margin cross-entropy for the L2 radius
    ``eps`` (None: the L2 ball around the Linf one, ``sqrt(d)`` times the scheduled eps), logits
    divided by ``temperature``. Certified L2 radius margin / sqrt(2), no bound propagation."""

    eps: float | None = None
    temperature: float = 0.25
    lipschitz_layers: bool = True

    def __post_init__(self) -> None:
        if self.eps is not None and not (self.eps >= 0 and math.isfinite(self.eps)):
            raise RobustlabError(f"eps (the L2 training radius) must be >= 0; found {self.eps}")
        if not self.temperature > 0:
            raise RobustlabError(f"temperature must be positive; found {self.temperature}")

    def prepare(self, model: nn.Module, example: Tensor, generator, keep_weights: bool) -> None:
        make_lipschitz(model, example, generator=generator, keep_weights=keep_weights)

    def finish(self, model: nn.Module) -> None:
        finish_lipschitz(model)

    def radius(self, x: Tensor, ctx: StepContext) -> float:
        return self.eps if self.eps is not None else ctx.eps * math.sqrt(x[0].numel())

    def step(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        logits = model(x)
        offset = math.sqrt(2) * self.radius(x, ctx)
        own = nn.functional.one_hot(y, logits.shape[1]).to(logits.dtype)
        loss = nn.functional.cross_entropy((logits - offset * own) / self.temperature, y)
        z = logits.detach()
        others = z.masked_fill(own.bool(), -math.inf).amax(1)
        margin = z.gather(1, y[:, None])[:, 0] - others
        # certified at the training radius by the construction's L = 1 (the exported model's
        # certificate computes L itself)
        return StepOutput(loss, z.argmax(1) == y, certified=margin > offset)
