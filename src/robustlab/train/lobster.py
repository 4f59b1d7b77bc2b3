"""LOBSTER (Tartaglione et al. 2022, "LOss-Based SensiTivity rEgulaRization: towards deep sparse
neural networks", arXiv:2011.09905) as a training method: after each batch's gradient, every
weight of a Linear / Conv layer shrinks by ``lambda * w * max(0, 1 - S)``, ``S`` its loss
sensitivity ``|dL/dw|`` (rescaled by the layer's largest, as the authors' ``rescaled`` option),
so that weights the loss does not need decay to zero; the optimiser's step on the loss follows.
``finish`` is the pruning stage: weights below ``threshold`` (relative to the layer's largest
magnitude) become exactly zero. With ``adversarial`` and eps > 0 the loss is PGD-AT's."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robustlab.train.adversary import pgd
from robustlab.train.methods import StepContext, StepOutput, _correct, register

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, LAYERS)]


@register("lobster")
@dataclass(frozen=True)
class LOBSTER:
    """Loss-based sensitivity regularisation; ``finish`` prunes below ``threshold``."""

    lmbda: float = 5e-3  # shrink factor per step of an insensitive weight
    threshold: float = 0.01  # pruning stage: |w| < threshold * max |w| of the layer -> 0
    adversarial: bool = True  # PGD-AT's loss at eps > 0 (cross-entropy otherwise)
    steps: int = 10  # PGD steps

    def step(self, model: nn.Module, x, y, ctx: StepContext) -> StepOutput:
        robust = None
        if self.adversarial and ctx.eps > 0:
            xa = pgd(model, x, y, ctx.threat(), steps=self.steps, generator=ctx.generator)
            logits = model(xa)
            robust = logits.detach().argmax(1) == y
            clean = _correct(model, x, y)
        else:
            logits = model(x)
            clean = logits.detach().argmax(1) == y
        loss = nn.functional.cross_entropy(logits, y)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]
        shrink = {id(w) for w in _weights(model)}
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                if id(p) in shrink:
                    s = g.abs() / g.abs().max().clamp_min(1e-10)
                    p.sub_(self.lmbda * p * (1 - s))
        # the loss's value, and its gradient at the weights before the shrink, for the optimiser
        surrogate = loss.detach() + sum(
            (p * g).sum() - (p.detach() * g).sum() for p, g in zip(params, grads, strict=True)
        )
        return StepOutput(surrogate, clean, robust_correct=robust)

    def finish(self, model: nn.Module) -> nn.Module:
        """The pruning stage: weights below the threshold set to zero, in place."""
        with torch.no_grad():
            for w in _weights(model):
                top = w.abs().max()
                w.mul_((w.abs() >= self.threshold * top).to(w.dtype))
        return model
