"""Training on convex combinations of examples: mixup (Zhang et al. 2018, arXiv:1710.09412),
Manifold Mixup (Verma et al. 2019, arXiv:1806.05236: the same convex combination taken at a
hidden layer drawn per batch) and interpolated adversarial training (Lamb et al. 2019,
arXiv:1906.06784: mixup or Manifold Mixup of clean and of adversarial examples, the mean of both
losses).

Co-Mixup (Kim et al. 2021, arXiv:2102.03065) is not here: its saliency-guided masks come from a
joint discrete optimisation over spatial blocks of every image pair (graph cuts in the authors'
code), built for 32x32 and larger images; on 8x8 digits or tabular rows it has nothing to
partition and reduces to mixup.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.train.adversary import pgd
from robustlab.train.methods import StepContext, StepOutput, _correct, register


def mixing_coefficient(alpha: float, generator: torch.Generator) -> float:
    """lambda ~ Beta(alpha, alpha), drawn from the training generator (reproducible)."""
    if not alpha > 0:
        raise RobustlabError(f"alpha must be positive; found {alpha}")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


MIXES = ("input", "manifold")
# the hidden layers Manifold Mixup may mix at: the outputs of these activation modules
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid)


def check_mix(mix: str, alpha: float) -> None:
    """Refuse an unknown combination or a non-positive Beta parameter (before training)."""
    if mix not in MIXES:
        raise RobustlabError(f"mix must be one of {', '.join(MIXES)}; found {mix!r}")
    if not alpha > 0:
        raise RobustlabError(f"alpha must be positive; found {alpha}")


def mix_points(model: nn.Module) -> list[nn.Module]:
    """Where Manifold Mixup may mix besides the input: the model's activation modules (ReLU,
    leaky ReLU, GELU, tanh, sigmoid), in registration order; each must run once per forward."""
    return [m for m in model.modules() if isinstance(m, ACTIVATIONS)]


@contextmanager
def _mixed_output(module: nn.Module, lam: float, perm: Tensor) -> Iterator[None]:
    """While active, ``module``'s output h becomes ``lam h + (1 - lam) h[perm]``."""
    calls = []

    def hook(_m, _inputs, h):
        if calls:
            raise RobustlabError(
                "manifold mixup mixes at a layer run once per forward; "
                f"{type(_m).__name__} ran twice"
            )
        calls.append(1)
        return lam * h + (1 - lam) * h[perm]

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def mixup_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    alpha: float,
    generator: torch.Generator,
    mix: str = "input",
) -> Tensor:
    """``lam CE(f(x~), y) + (1 - lam) CE(f(x~), y[perm])`` with ``x~ = lam x + (1 - lam)
    x[perm]`` for a random permutation of the batch (Zhang et al. 2018, eq. 1).

    ``mix="manifold"``: Manifold Mixup (Verma et al. 2019, section 2): the layer k is drawn
    uniformly from the input and the outputs of :func:`mix_points`, and the combination is
    taken of the batch's representations there instead of its inputs (same loss)."""
    check_mix(mix, alpha)
    lam = mixing_coefficient(alpha, generator)
    perm = torch.randperm(len(x), generator=generator)
    points = mix_points(model) if mix == "manifold" else []
    k = int(torch.randint(0, len(points) + 1, (1,), generator=generator)) if points else 0
    if k == 0:
        logits = model(lam * x + (1 - lam) * x[perm])
    else:
        with _mixed_output(points[k - 1], lam, perm):
            logits = model(x)
    ce = nn.functional.cross_entropy
    return lam * ce(logits, y) + (1 - lam) * ce(logits, y[perm])


@register("mixup")
@dataclass(frozen=True)
class Mixup:
    """mixup (Zhang et al. 2018, arXiv:1710.09412): cross-entropy on convex combinations of
    pairs of examples and of their one-hot labels, lambda ~ Beta(alpha, alpha) per batch
    (alpha = 1: the paper's CIFAR-10 setting); ``mix="manifold"``: Manifold Mixup (Verma et al.
    2019), the combination taken at a hidden layer drawn per batch."""

    alpha: float = 1.0
    mix: str = "input"

    def __post_init__(self) -> None:
        check_mix(self.mix, self.alpha)

    def step(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        loss = mixup_loss(model, x, y, self.alpha, ctx.generator, self.mix)
        return StepOutput(loss, _correct(model, x, y))


ADVERSARIES = ("clean", "interpolated")


@register("interpolated-at")
@dataclass(frozen=True)
class InterpolatedAT:
    """Interpolated adversarial training (Lamb et al. 2019, arXiv:1906.06784, Algorithm 1): PGD
    examples of the batch (as PGD-AT), then the mean of the mixup loss on the clean batch and the
    mixup loss on the adversarial batch, each with its own lambda and permutation.
    ``mix="manifold"``: both losses by Manifold Mixup (the paper's other variant; each draws its
    own layer), the attack still on the inputs.

    ``adversary="interpolated"``: PGD on the interpolated inputs instead (ascending their mixup
    loss), the adversarial loss taken there with the same lambda and pairs (input mixup only)."""

    alpha: float = 1.0
    steps: int = 10
    step_size: float | None = None
    adversary: str = "clean"
    mix: str = "input"

    def __post_init__(self) -> None:
        if self.adversary not in ADVERSARIES:
            raise RobustlabError(
                f"adversary must be one of {', '.join(ADVERSARIES)}; found {self.adversary!r}"
            )
        check_mix(self.mix, self.alpha)
        if self.adversary == "interpolated" and self.mix != "input":
            raise RobustlabError(
                "adversary 'interpolated' attacks the mixed inputs: it expects mix 'input'; "
                f"found {self.mix!r}"
            )

    def step(self, model, x, y, ctx):
        if self.adversary == "interpolated":
            return self._interpolated_step(model, x, y, ctx)
        xa = pgd(model, x, y, ctx.threat(), steps=self.steps, step_size=self.step_size,
                 generator=ctx.generator)  # fmt: skip
        clean = mixup_loss(model, x, y, self.alpha, ctx.generator, self.mix)
        adversarial = mixup_loss(model, xa, y, self.alpha, ctx.generator, self.mix)
        return StepOutput(
            (clean + adversarial) / 2,
            _correct(model, x, y),
            robust_correct=_correct(model, xa, y),
        )

    def _interpolated_step(self, model, x, y, ctx):
        clean = mixup_loss(model, x, y, self.alpha, ctx.generator)
        lam = mixing_coefficient(self.alpha, ctx.generator)
        perm = torch.randperm(len(x), generator=ctx.generator)
        ce = nn.functional.cross_entropy

        def mixed_ce(logits: Tensor, _y: Tensor, reduction: str = "sum") -> Tensor:
            return lam * ce(logits, y, reduction=reduction) + (1 - lam) * ce(
                logits, y[perm], reduction=reduction
            )

        xa = pgd(model, lam * x + (1 - lam) * x[perm], y, ctx.threat(), steps=self.steps,
                 step_size=self.step_size, loss=mixed_ce, generator=ctx.generator)  # fmt: skip
        return StepOutput((clean + mixed_ce(model(xa), y, "mean")) / 2, _correct(model, x, y))
