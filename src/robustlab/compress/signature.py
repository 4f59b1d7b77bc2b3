"""Robust weight signatures (Cai et al. 2023, arXiv:2302.12480): the difference between a robust
model's and a standard model's weights, taken on the shallow layers where the two differ most,
is a patch. Added with a scale ``A`` to a standard model of the same architecture (the same
standard model, or another one from the same initialisation, as in the paper: the models share
a pre-trained starting point), it moves that model's robustness towards the robust one's."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from robustlab.compress.result import PatchResult
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.sensitivity.layers import layers
from robustlab.train.compare import evaluate_trained

Progress = Callable[[str], None]


def _params(model: nn.Module) -> list[Tensor]:
    return [p.detach() for p in model.parameters()]


def check_same_architecture(a: nn.Module, b: nn.Module, roles: tuple[str, str]) -> None:
    """The two models have the same parameter shapes in the same order."""
    sa, sb = [tuple(p.shape) for p in a.parameters()], [tuple(p.shape) for p in b.parameters()]
    if sa != sb:
        raise RobustlabError(
            f"the {roles[0]} and {roles[1]} models differ in architecture: parameter shapes "
            f"{sa[:4]}{'...' if len(sa) > 4 else ''} and {sb[:4]}{'...' if len(sb) > 4 else ''}"
        )


def _groups(model: nn.Module) -> list[tuple[str, list[int]]]:
    """Each layer's name and the positions of its parameters in ``model.parameters()``."""
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}
    return [(g.name, [order[p] for p in g.params]) for g in layers(model)]


def layer_differences(standard: nn.Module, robust: nn.Module) -> list[dict]:
    """Per layer, ``||w_robust - w_standard|| / ||w_standard||`` (where the signature lives)."""
    check_same_architecture(standard, robust, ("standard", "robust"))
    ps, pr = _params(standard), _params(robust)
    out = []
    for name, idx in _groups(standard):
        d = sum(float((pr[i].double() - ps[i].double()).pow(2).sum()) for i in idx) ** 0.5
        s = sum(float(ps[i].double().pow(2).sum()) for i in idx) ** 0.5
        out.append({"layer": name, "relative_difference": d / s if s > 0 else None})
    return out


def signature(standard: nn.Module, robust: nn.Module, shallow: int | None = None):
    """The robust weight signature on the first ``shallow`` layers (default: the first half,
    rounded up): ``(layer names, {parameter position: robust - standard})``."""
    check_same_architecture(standard, robust, ("standard", "robust"))
    groups = _groups(standard)
    k = (len(groups) + 1) // 2 if shallow is None else shallow
    if not 1 <= k <= len(groups):
        raise RobustlabError(f"layers must be in 1..{len(groups)}; found {shallow}")
    ps, pr = _params(standard), _params(robust)
    delta = {i: pr[i] - ps[i] for _, idx in groups[:k] for i in idx}
    return [name for name, _ in groups[:k]], delta


def apply_signature(target: nn.Module, delta: dict[int, Tensor], scale: float) -> nn.Module:
    """A copy of ``target`` with ``scale`` times the signature added to its weights."""
    patched = copy.deepcopy(target).eval()
    with torch.no_grad():
        for i, p in enumerate(patched.parameters()):
            if i in delta:
                p.add_(scale * delta[i].to(p.dtype))
    return patched


def evaluate_signature(
    standard: nn.Module,
    robust: nn.Module,
    data: Dataset,
    eps: float,
    scales: Sequence[float],
    *,
    target: nn.Module | None = None,
    shallow: int | None = None,
    suite: str = "fast",
    bound_methods: Sequence[str] = ("ibp", "crown"),
    batch_size: int = 256,
    seed: int = 0,
    progress: Progress | None = None,
) -> PatchResult:
    """Clean, robust (attack suite) and certified accuracy at Linf ``eps`` of ``target`` (default
    the standard model) patched with each scale, beside the three models themselves."""

    start = time.perf_counter()
    target = standard if target is None else target
    check_same_architecture(standard, target, ("standard", "target"))
    names, delta = signature(standard, robust, shallow)
    say = progress or (lambda _m: None)

    def ev(model) -> dict:
        r = evaluate_trained(model, data, eps, suite=suite, bound_methods=bound_methods,
                             batch_size=batch_size, seed=seed)  # fmt: skip
        return {k: r[k] for k in ("clean_accuracy", "robust_accuracy", "certified_accuracy")}

    say("evaluating the standard, robust and target models")
    base = {"standard": ev(standard), "robust": ev(robust)}
    base["target"] = base["standard"] if target is standard else ev(target)
    rows = []
    for a in scales:
        say(f"patch with scale {a:g} on {', '.join(names)}")
        rows.append({"scale": float(a), **ev(apply_signature(target, delta, float(a)))})
    return PatchResult(
        eps=eps,
        layers=names,
        difference=layer_differences(standard, robust),
        standard=base["standard"],
        robust=base["robust"],
        target=base["target"],
        rows=rows,
        seconds=time.perf_counter() - start,
    )
