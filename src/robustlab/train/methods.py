"""Training methods, a registry by name: each turns a batch into a loss (and per-example
statistics for the training log) at the current eps of the schedule."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.registry import build, registrar
from robustlab.threat import LpBall
from robustlab.train.adversary import fgsm_random_start, pgd
from robustlab.train.certified import certified_mask, margin_lower_bounds, robust_loss

METHODS: dict[str, type] = {}


register = registrar(METHODS)


def get_method(name: str, **kwargs):
    """A training method by registry name."""
    return build(METHODS, name, "training method", **kwargs)


@dataclass(frozen=True)
class StepContext:
    """What a method needs to know about the current step."""

    eps: float  # the scheduled eps of this step
    progress: float  # fraction of the eps ramp done, 0 .. 1
    lower: float  # data range
    upper: float
    num_classes: int
    generator: torch.Generator
    bound_model: nn.Module | None = None  # the plain model, for the bound engine

    def threat(self) -> LpBall:
        return LpBall("inf", self.eps, self.lower, self.upper)


@dataclass
class StepOutput:
    """The loss of one batch and what the training log counts."""

    loss: Tensor
    clean_correct: Tensor  # per example, on the clean input
    robust_correct: Tensor | None = None  # per example, on the training adversary's input
    certified: Tensor | None = None  # per example, by the training bounds at the current eps


def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).argmax(1) == y


@register("standard")
@dataclass(frozen=True)
class Standard:
    """Empirical risk minimisation with cross-entropy (no robustness objective)."""

    def step(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> StepOutput:
        logits = model(x)
        return StepOutput(nn.functional.cross_entropy(logits, y), logits.detach().argmax(1) == y)


@register("pgd-at")
@dataclass(frozen=True)
class PGDAT:
    """Adversarial training on PGD examples (Madry et al. 2018, arXiv:1706.06083): random start,
    ``steps`` signed steps of ``2.5 eps / steps``; the loss is the cross-entropy on them only."""

    steps: int = 10
    step_size: float | None = None

    def step(self, model, x, y, ctx):
        xa = pgd(model, x, y, ctx.threat(), steps=self.steps, step_size=self.step_size,
                 generator=ctx.generator)  # fmt: skip
        logits = model(xa)
        return StepOutput(
            nn.functional.cross_entropy(logits, y),
            _correct(model, x, y),
            robust_correct=logits.detach().argmax(1) == y,
        )


@register("trades")
@dataclass(frozen=True)
class TRADES:
    """TRADES (Zhang et al. 2019, arXiv:1901.08573): cross-entropy on clean inputs plus ``beta``
    times the KL divergence between clean and adversarial predictions, the adversary maximising
    that KL by PGD from a small Gaussian start (step ``eps / 4``)."""

    beta: float = 6.0
    steps: int = 10
    step_size: float | None = None

    def step(self, model, x, y, ctx):
        with torch.no_grad():
            p_clean = nn.functional.softmax(model(x), 1)

        def kl(logits: Tensor, _y: Tensor) -> Tensor:
            return nn.functional.kl_div(
                nn.functional.log_softmax(logits, 1), p_clean, reduction="sum"
            )

        noise = 0.001 * torch.randn(x.shape, generator=ctx.generator, dtype=x.dtype)
        step = self.step_size if self.step_size is not None else ctx.eps / 4
        xa = pgd(model, x, y, ctx.threat(), steps=self.steps, step_size=step, loss=kl,
                 start=x + noise)  # fmt: skip
        logits, logits_adv = model(x), model(xa)
        robust = nn.functional.kl_div(
            nn.functional.log_softmax(logits_adv, 1),
            nn.functional.softmax(logits, 1),
            reduction="batchmean",
        )
        loss = nn.functional.cross_entropy(logits, y) + self.beta * robust
        return StepOutput(
            loss,
            logits.detach().argmax(1) == y,
            robust_correct=logits_adv.detach().argmax(1) == y,
        )


@register("fast-at")
@dataclass(frozen=True)
class FastAT:
    """Fast adversarial training (Wong et al. 2020, arXiv:2001.03994): one FGSM step of
    ``alpha * eps`` from a uniform random start. The training loop watches for catastrophic
    overfitting (PGD accuracy collapsing while FGSM accuracy rises) and stops at the best epoch."""

    alpha: float = 1.25
    watch_overfitting: bool = True

    def step(self, model, x, y, ctx):
        xa = fgsm_random_start(
            model, x, y, ctx.threat(), alpha=self.alpha * ctx.eps, generator=ctx.generator
        )
        logits = model(xa)
        return StepOutput(
            nn.functional.cross_entropy(logits, y),
            _correct(model, x, y),
            robust_correct=logits.detach().argmax(1) == y,
        )


@register("gaussian")
@dataclass(frozen=True)
class Gaussian:
    """Gaussian data augmentation for randomized smoothing (Cohen et al. 2019, arXiv:1902.02918):
    cross-entropy on ``x + N(0, sigma^2)``; ``sigma`` defaults to the eps of the schedule."""

    sigma: float | None = None

    def step(self, model, x, y, ctx):
        sigma = ctx.eps if self.sigma is None else self.sigma
        noise = torch.randn(x.shape, generator=ctx.generator, dtype=x.dtype) * sigma
        logits = model(x + noise)
        return StepOutput(
            nn.functional.cross_entropy(logits, y),
            _correct(model, x, y),
            robust_correct=logits.detach().argmax(1) == y,
        )


def _certified_step(model, x, y, ctx, kappa: float, beta: float) -> StepOutput:
    logits = model(x)
    clean = nn.functional.cross_entropy(logits, y)
    correct = logits.detach().argmax(1) == y
    if ctx.eps <= 0:  # warm-up: standard training
        return StepOutput(clean, correct)
    threat = ctx.threat()
    lower, upper = threat.box(x)
    margins = margin_lower_bounds(
        model if ctx.bound_model is None else ctx.bound_model,
        lower,
        upper,
        y,
        ctx.num_classes,
        beta=beta,
    )
    loss = kappa * clean + (1 - kappa) * robust_loss(margins, y)
    return StepOutput(loss, correct, certified=certified_mask(margins.detach(), y))


def _ramp(start: float, end: float, progress: float) -> float:
    return start + (end - start) * progress


@register("ibp")
@dataclass(frozen=True)
class IBP:
    """Certified training with interval bounds (Gowal et al. 2018, arXiv:1810.12715), with Shi et
    al.'s short warm-up and IBP initialisation (2021, arXiv:2103.17268): the loss is
    ``kappa * CE(clean) + (1 - kappa) * CE(-lower margins)``, kappa ramped from ``kappa_start``
    to ``kappa_end`` with eps."""

    kappa_start: float = 1.0
    kappa_end: float = 0.0
    certified: bool = True

    def step(self, model, x, y, ctx):
        kappa = _ramp(self.kappa_start, self.kappa_end, ctx.progress)
        return _certified_step(model, x, y, ctx, kappa, 0.0)


@register("crown-ibp")
@dataclass(frozen=True)
class CROWNIBP:
    """CROWN-IBP certified training (Zhang et al. 2020, arXiv:1906.06316): lower margins mixed as
    ``beta * CROWN-IBP + (1 - beta) * IBP``, beta ramped from ``beta_start`` to ``beta_end``
    and kappa as in IBP training."""

    kappa_start: float = 1.0
    kappa_end: float = 0.0
    beta_start: float = 1.0
    beta_end: float = 0.0
    certified: bool = True

    def step(self, model, x, y, ctx):
        kappa = _ramp(self.kappa_start, self.kappa_end, ctx.progress)
        beta = _ramp(self.beta_start, self.beta_end, ctx.progress)
        return _certified_step(model, x, y, ctx, kappa, beta)


def is_certified(method) -> bool:
    """Whether a method trains on bounds (and so wants IBP initialisation and a warm-up)."""
    return bool(getattr(method, "certified", False))
