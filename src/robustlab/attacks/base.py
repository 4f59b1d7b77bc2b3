"""The attack protocol, the registry by name, losses, pass counting and shared geometry helpers."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.inputs import batched_logits
from robustlab.inputs import eval_mode as eval_mode
from robustlab.inputs import no_parameter_gradients as input_gradients_only  # noqa: F401
from robustlab.registry import build, registrar
from robustlab.threat import Box, LpBall, ThreatModel

Objective = Callable[[Tensor, Tensor], Tensor]  # (logits, labels) -> per-example value to maximise
Targeted = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logits, labels, targets) -> to maximise


class Attack(Protocol):
    """An attack maps clean inputs to inputs inside the threat model that try to flip the label."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, threat: ThreatModel) -> Tensor: ...


REGISTRY: dict[str, type] = {}


register = registrar(REGISTRY)


def get_attack(name: str, **kwargs) -> Attack:
    """An attack instance by registry name."""
    return build(REGISTRY, name, "attack", **kwargs)


def _other_max(logits: Tensor, y: Tensor) -> Tensor:
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return other.amax(1)


def _true(logits: Tensor, y: Tensor) -> Tensor:
    return logits.gather(1, y[:, None]).squeeze(1)


def ce_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy per example."""
    return nn.functional.cross_entropy(logits, y, reduction="none")


def margin_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Carlini-Wagner margin: best other logit minus the true logit (> 0 means misclassified)."""
    return _other_max(logits, y) - _true(logits, y)


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of logits ratio (Croce & Hein 2020, arXiv:2003.01690), to maximise."""
    top = logits.topk(min(3, logits.shape[1]), dim=1).values
    return margin_loss(logits, y) / (top[:, 0] - top[:, -1] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR (Croce & Hein 2020, arXiv:2003.01690): (z_t - z_y) / (z_1 - (z_3 + z_4) / 2)."""
    top = logits.topk(4, dim=1).values
    scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12
    return (_true(logits, target) - _true(logits, y)) / scale


def ce_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Minus the cross-entropy towards the target class."""
    return -nn.functional.cross_entropy(logits, target, reduction="none")


LOSSES: dict[str, Objective] = {"ce": ce_loss, "margin": margin_loss, "dlr": dlr_loss}
TARGETED_LOSSES: dict[str, Targeted] = {
    "dlr-targeted": dlr_targeted_loss,
    "ce-targeted": ce_targeted_loss,
}
MIN_CLASSES = {"dlr": 3, "dlr-targeted": 4}


def get_loss(loss: str | Objective) -> Objective:
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise RobustlabError(f"unknown loss '{loss}'; known: {', '.join(LOSSES)}")
    return LOSSES[loss]


def get_targeted_loss(loss: str | Targeted) -> Targeted:
    if callable(loss):
        return loss
    if loss not in TARGETED_LOSSES:
        raise RobustlabError(f"unknown targeted loss '{loss}'; known: {', '.join(TARGETED_LOSSES)}")
    return TARGETED_LOSSES[loss]


def check_classes(loss: object, n_classes: int) -> None:
    """DLR needs at least 3 classes, targeted DLR at least 4."""
    need = MIN_CLASSES.get(loss, 2) if isinstance(loss, str) else 2
    if n_classes < need:
        raise RobustlabError(f"loss '{loss}' needs at least {need} classes; found {n_classes}")


class Counted(nn.Module):
    """Wraps a model and counts per-example forward and backward passes through it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.n_forward = 0
        self.n_backward = 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        n = int(x.shape[0])
        self.n_forward += n
        if out.requires_grad:
            out.register_hook(lambda g: self._count_backward(n))
        return out

    def _count_backward(self, n: int) -> None:
        self.n_backward += n


def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Predicted labels, computed in batches without gradients."""
    return batched_logits(model, x, batch_size).argmax(1)


def margins(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> Tensor:
    """The logit margin z_y - max_{j != y} z_j of each example (negative: misclassified, 0 at
    a tie), computed in batches without gradients."""
    if len(x) == 0:
        return x.new_zeros(0)
    logits = batched_logits(model, x, batch_size)
    return _true(logits, y) - _other_max(logits, y)


def _mode_dependent(m: nn.Module) -> bool:
    """Dropout (p > 0) and normalisation with running statistics behave differently in training
    and evaluation; TorchScript copies are recognised by their original class name."""
    name = type(m).__name__
    if isinstance(m, torch.jit.ScriptModule):
        name = getattr(m, "original_name", name)
    elif not isinstance(m, (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)):
        return False
    if "Dropout" in name:
        return float(getattr(m, "p", 1.0)) > 0
    return "Norm" in name and bool(getattr(m, "track_running_stats", False))


def training_mode_layers(model: nn.Module) -> list[str]:
    """The names of the dropout and batch-norm layers in training mode (layers that behave
    differently in training and evaluation; an attack on them measures the wrong model)."""
    return [
        name or type(m).__name__
        for name, m in model.named_modules()
        if m.training and _mode_dependent(m)
    ]


@dataclass(frozen=True)
class Geometry:
    """How an attack sees a threat model: the norm of its steps, the radius (per coordinate for a
    box), and the input domain [lo, hi] (the data range of a ball, or the box itself)."""

    norm: str
    eps: float | Tensor
    lo: float | Tensor
    hi: float | Tensor
    is_box: bool

    def clip(self, x: Tensor) -> Tensor:
        """Clip ``x`` to the input domain (not to the eps-ball: that is ``threat.project``)."""
        return torch.clamp(x, self.lo, self.hi)


def geometry(threat: ThreatModel, x0: Tensor) -> Geometry:
    """The step norm, radius and input domain of ``threat`` around ``x0``."""
    if isinstance(threat, LpBall):
        return Geometry(threat.norm, threat.eps, threat.lower, threat.upper, False)
    if isinstance(threat, Box):
        lo, hi = threat.box(x0)
        return Geometry("inf", (hi - lo) / 2, lo, hi, True)
    raise RobustlabError(f"threat model must be an LpBall or a Box; found {type(threat).__name__}")


def view_per_sample(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector (N,) to broadcast against a batch like ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def lp_norm(x: Tensor, norm: str) -> Tensor:
    """Per-sample Linf or L2 norm, shape (N,)."""
    flat = x.flatten(1)
    return flat.abs().amax(1) if norm == "inf" else flat.norm(dim=1)


def ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """The steepest-ascent unit step: sign(g) for Linf, g / ||g||_2 for L2."""
    if norm == "inf":
        return grad.sign()
    return grad / view_per_sample(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)


def objective_value(objective, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    """An objective (logits, y) or a targeted one (logits, y, target), per example."""
    return objective(logits, y) if target is None else objective(logits, y, target)


def eot_gradient(model, xa, y, target, objective, eot: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """The objective, its input gradient and the logits at ``xa``, each averaged over ``eot``
    forward passes (expectation over transformation, Athalye et al. 2018, arXiv:1802.00420, for
    models with randomness in their forward pass; one pass when ``eot`` is 1)."""
    xa = xa.detach().requires_grad_(True)
    loss_sum = grad_sum = logits_sum = None
    for _ in range(max(1, eot)):
        with torch.enable_grad():
            logits = model(xa)
            loss = objective_value(objective, logits, y, target)
            (grad,) = torch.autograd.grad(loss.sum(), xa)
        if loss_sum is None:
            loss_sum, grad_sum, logits_sum = loss.detach(), grad, logits.detach()
        else:
            loss_sum, grad_sum = loss_sum + loss.detach(), grad_sum + grad
            logits_sum = logits_sum + logits.detach()
    k = max(1, eot)
    return loss_sum / k, grad_sum / k, logits_sum / k


def mean_logits(model: nn.Module, x: Tensor, eot: int = 1) -> Tensor:
    """The logits at ``x`` without gradients, averaged over ``eot`` forward passes."""
    with torch.no_grad():
        out = model(x)
        for _ in range(max(1, eot) - 1):
            out = out + model(x)
    return out / max(1, eot)


def logits_and_jacobian(model: nn.Module, x: Tensor, classes: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (N, K) and the gradients of the logits ``classes`` (N, m) w.r.t. ``x``: (N, m, *x).

    One forward and one backward pass over a batch replicated m times (cheaper than m backward
    passes for small models, and no hooks)."""
    n, m = x.shape[0], classes.shape[1]
    xr = x.detach().repeat(m, *([1] * (x.dim() - 1))).requires_grad_(True)
    out = model(xr)
    picked = out.gather(1, classes.t().reshape(-1, 1)).sum()
    (grad,) = torch.autograd.grad(picked, xr)
    jac = grad.view(m, n, *x.shape[1:]).transpose(0, 1)
    return out.detach()[:n], jac


def target_ranking(logits: Tensor, y: Tensor) -> Tensor:
    """The classes other than the label, by decreasing logit: (N, K - 1)."""
    ranked = logits.argsort(dim=1, descending=True)
    k = ranked.shape[1]
    pos = torch.arange(k, device=logits.device).expand_as(ranked)
    key = torch.where(ranked == y[:, None], k, pos)
    return ranked.gather(1, key.argsort(dim=1))[:, : k - 1]


def steps_alias(attack: object) -> None:
    """``steps``, PGD's name for the iterations, accepted by attacks whose field is AutoAttack's
    ``n_iter`` (``APGD(steps=50)`` is ``APGD(n_iter=50)``); cleared once copied."""
    steps = getattr(attack, "steps", None)
    if steps is not None:
        object.__setattr__(attack, "n_iter", steps)
        object.__setattr__(attack, "steps", None)


def passes_per_point(attack: object) -> float:
    """Roughly the gradient passes an attack spends on a point it cannot break: iterations (or
    steps) x target classes x restarts x eot; a score-based attack's queries count a third (no
    backward pass)."""
    queries = getattr(attack, "n_queries", None)
    if queries is not None:
        return queries / 3
    n = getattr(attack, "n_iter", None) or getattr(attack, "steps", None) or 1
    for name in ("n_target_classes", "restarts", "eot"):
        n *= max(1, getattr(attack, name, 1))
    return float(n)


def n_classes_of(model: nn.Module, x: Tensor) -> int:
    """The number of logits the model outputs (one forward pass on one example)."""
    with torch.no_grad():
        out = model(x[:1])
    if out.dim() != 2:
        raise RobustlabError(
            f"model must output logits of shape (N, classes); found {tuple(out.shape)}"
        )
    return int(out.shape[1])


RUNS_PER_BLOCK = 1 << 15  # input elements per batch of side-by-side runs (keeps activations small)


def target_blocks(ranks: list, n_points: int, numel: int, parallel: bool) -> list[list]:
    """Targets to run side by side: as many as fit ``RUNS_PER_BLOCK`` input elements (at least
    one per block); one per block when not ``parallel``."""
    per = max(1, RUNS_PER_BLOCK // max(1, n_points * numel)) if parallel else 1
    return [ranks[i : i + per] for i in range(0, len(ranks), per)]


_OPTIMISED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _optimised(model: nn.Module, example: Tensor) -> Callable[[Tensor], Tensor]:
    if model.training or example.device.type != "cpu" or example.dim() < 2:
        return model
    params = list(model.parameters()) + list(model.buffers())
    key = (tuple(example.shape[1:]), tuple((p.data_ptr(), p._version) for p in params))
    cached = _OPTIMISED.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    fast: Callable[[Tensor], Tensor] = model
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.optimize_for_inference(torch.jit.trace(model, example))
            ref, got = model(example), traced(example)
        scale = 1 + float(ref.abs().amax())
        if (
            torch.equal(ref.argmax(1), got.argmax(1))
            and float((ref - got).abs().amax()) <= 1e-4 * scale
        ):
            fast = traced
    except Exception:  # a model TorchScript cannot trace: use it as it is
        fast = model
    _OPTIMISED[model] = (key, fast)
    return fast


def query_function(model: nn.Module, example: Tensor) -> Callable[[Tensor], Tensor]:
    """The forward pass for gradient-free queries (score-based attacks): an inference-optimised
    TorchScript copy of an eval-mode CPU model (traced, frozen, fused; checked to agree with the
    model on ``example``, and rebuilt when the weights change), else the model itself. Queries
    through a ``Counted`` wrapper are still counted."""
    counted = model if isinstance(model, Counted) else None
    fast = _optimised(counted.model if counted else model, example)
    if counted is None:
        return fast

    def forward(x: Tensor) -> Tensor:
        counted.n_forward += int(x.shape[0])
        return fast(x)

    return forward
