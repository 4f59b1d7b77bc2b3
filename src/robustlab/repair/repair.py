"""Counterexample-guided repair of a network against a set of specifications.

Boetius, Leue and Sutter, "A Robust Optimisation Perspective on Counterexample-Guided Repair of
Neural Networks" (ICML 2023, arXiv:2301.11342): repair is the robust program min_theta
loss(theta) s.t. every property holds; its cutting-plane solution alternates a verifier (the
inner maximisation: counterexamples, the most violating inputs) with training on the
counterexamples found so far (here: the violated margins as a hinge penalty and the original
data as an anchor), until the verifier proves every property or the budget ends.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.repair.boxes import bound_violation, sub_boxes
from robustlab.results import Metric
from robustlab.verify.engine import verify_spec
from robustlab.verify.spec import Spec, robustness_spec


@dataclass(frozen=True)
class RepairResult:
    """Verdicts before and after repair, per round, and accuracy on the given test data."""

    verdicts_before: tuple[str, ...]
    verdicts_after: tuple[str, ...]
    accuracy_before: float | None
    accuracy_after: float | None
    rounds: tuple[dict, ...] = field(default=())  # per round: counts, counterexamples, seconds
    seconds: float = 0.0

    @property
    def fixed(self) -> int:
        """Properties not proven before and proven (holds) after."""
        return sum(
            b != "holds" and a == "holds"
            for b, a in zip(self.verdicts_before, self.verdicts_after, strict=True)
        )

    @property
    def all_hold(self) -> bool:
        return all(v == "holds" for v in self.verdicts_after)

    def to_dict(self) -> dict:
        return {
            "n_properties": len(self.verdicts_before),
            "violated_before": self.verdicts_before.count("violated"),
            "holds_before": self.verdicts_before.count("holds"),
            "holds_after": self.verdicts_after.count("holds"),
            "violated_after": self.verdicts_after.count("violated"),
            "fixed": self.fixed,
            "all_hold": self.all_hold,
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "verdicts_before": list(self.verdicts_before),
            "verdicts_after": list(self.verdicts_after),
            "rounds": list(self.rounds),
            "seconds": self.seconds,
        }

    def metrics(self) -> list[Metric]:
        out = [
            Metric("fixed", float(self.fixed), True),
            Metric("holds_after", float(self.verdicts_after.count("holds")), True),
        ]
        if self.accuracy_after is not None:
            out.append(Metric("accuracy_after", self.accuracy_after, True))
        return out


def local_robustness_specs(x: Tensor, labels: Tensor, eps: float, num_classes: int) -> list[Spec]:
    """One Linf robustness specification per input (box clipped to [0, 1])."""
    if not eps > 0:
        raise RobustlabError(f"eps must be positive; found {eps!r}")
    return [
        robustness_spec(xi, int(li), eps, num_classes)
        for xi, li in zip(x.detach(), labels.tolist(), strict=True)
    ]


def _outputs(model: nn.Module, x: Tensor, shape) -> Tensor:
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None else torch.float32
    return model(x.to(dtype).view(-1, *shape)).reshape(len(x), -1)


def worst_points(
    model: nn.Module,
    spec: Spec,
    shape,
    *,
    steps: int = 50,
    restarts: int = 4,
    seed: int = 0,
    k: int = 1,
) -> Tensor:
    """Per region, the ``k`` inputs of its box found most violating (smallest violation) by
    signed gradient steps from the centre and ``restarts`` - 1 random starts (at least k):
    (regions * k, n_inputs) float64, region by region."""
    restarts = max(restarts, k)
    gen = torch.Generator().manual_seed(seed)
    regions = torch.arange(len(spec)).repeat(restarts)
    lo, hi = spec.lower[regions], spec.upper[regions]
    x = lo + (hi - lo) * torch.rand(lo.shape, generator=gen, dtype=lo.dtype)
    x[: len(spec)] = (spec.lower + spec.upper) / 2
    step = (hi - lo) / 8
    for _ in range(steps):
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            v = spec.violation(_outputs(model, leaf, shape).double(), regions)
            (g,) = torch.autograd.grad(v.sum(), leaf)
        x = torch.minimum(torch.maximum(x - step * g.sign(), lo), hi).detach()
        step = step * 0.93
    with torch.no_grad():
        v = spec.violation(_outputs(model, x, shape).double(), regions).view(restarts, -1)
    best = v.topk(k, dim=0, largest=False).indices.T  # (regions, k)
    return x.view(restarts, len(spec), -1)[best, torch.arange(len(spec))[:, None]].flatten(0, 1)


def _region_of(spec: Spec, x: Tensor) -> Tensor:
    """The first region of ``spec`` whose box holds the flat input ``x`` (0 if none does)."""
    inside = ((spec.lower <= x) & (x <= spec.upper)).all(1)
    return inside.long().argmax()


class _Oracle:
    """Reference outputs at a flat input: a plain float forward pass of the model."""

    def __init__(self, model: nn.Module, shape) -> None:
        self.model, self.shape = model, shape

    def __call__(self, x: Tensor):
        with torch.no_grad():
            return _outputs(self.model, x.reshape(1, -1), self.shape).double().reshape(-1).numpy()


def _verify_all(model, specs, shape, timeout: float) -> tuple[list[str], list[Tensor | None]]:
    verdicts, cexs = [], []
    oracle = _Oracle(model, shape)
    for spec in specs:
        verdict, cex, _, _ = verify_spec(
            model, shape, spec, oracle, deadline=time.monotonic() + timeout
        )
        verdicts.append(verdict)
        cexs.append(None if cex is None else torch.as_tensor(cex["x"]).double().reshape(-1))
    return verdicts, cexs


def _accuracy(model, data, shape) -> float | None:
    if data is None:
        return None
    x, y = data
    with torch.no_grad():
        return float((_outputs(model, x.reshape(len(x), -1), shape).argmax(1) == y).float().mean())


def _finetune(
    model,
    shape,
    anchor,
    cex_x,
    cex_spec,
    cex_region,
    *,
    epochs,
    lr,
    penalty,
    margin,
    anchor_weight,
    scale,
    batch_size,
    gen,
    boxes=(),
    box_weight=0.0,
    box_batch=32,
):
    """Adam on anchor_weight * anchor loss + penalty * mean hinge(margin - violation) over the
    counterexamples, + box_weight * mean hinge(margin - bound of the violation) over
    ``box_batch`` of each property's ``boxes`` (spec, regions, lower, upper) per step."""
    ax, ay = anchor
    ax = ax.reshape(len(ax), -1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(ax), generator=gen)
        for i in range(0, len(ax), batch_size):
            idx = order[i : i + batch_size]
            out = _outputs(model, ax[idx], shape)
            if ay.is_floating_point():  # reference outputs: stay close to them
                loss = F.mse_loss(out, ay[idx].to(out.dtype))
            else:
                loss = F.cross_entropy(out, ay[idx])
            hinge = []
            for spec, xs, regs in zip(cex_spec, cex_x, cex_region, strict=True):
                v = spec.violation(_outputs(model, xs, shape).double(), regs)
                hinge.append(F.relu(margin * scale - v) / scale)
            loss = anchor_weight * loss / scale**2 + penalty * torch.cat(hinge).mean().to(
                loss.dtype
            )
            for spec, regs, lo, hi in boxes:
                pick = torch.randperm(len(lo), generator=gen)[:box_batch]
                v = bound_violation(model, shape, spec, regs[pick], lo[pick], hi[pick])
                loss = loss + box_weight * (F.relu(margin * scale - v) / scale).mean().to(
                    loss.dtype
                )
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def repair(
    model: nn.Module,
    specs: list[Spec],
    shape: tuple[int, ...],
    anchor: tuple[Tensor, Tensor],
    *,
    test: tuple[Tensor, Tensor] | None = None,
    rounds: int = 10,
    epochs: int = 2,
    lr: float = 1e-4,
    penalty: float = 3.0,
    margin: float = 0.1,
    anchor_weight: float = 1.0,
    scale: float = 1.0,
    points: int = 1,
    region_samples: int = 0,
    boxes: int = 0,
    box_weight: float = 0.01,
    box_batch: int = 32,
    batch_size: int = 128,
    timeout: float = 10.0,
    seed: int = 0,
    progress=None,
) -> tuple[nn.Module, RepairResult]:
    """A repaired copy of ``model`` (inputs of ``shape`` per sample) for ``specs``, each verified
    by the project's verifier within ``timeout`` seconds per round. ``anchor``: the original
    data, (inputs, labels) for cross-entropy or (inputs, reference outputs) for a mean squared
    error. Each round verifies the properties not yet proven, adds for each a counterexample
    (the verifier's, and the ``points`` most violating inputs found by :func:`worst_points`), and
    fine-tunes ``epochs`` epochs over the anchor with ``penalty`` times the mean hinge
    ``max(0, margin - violation)`` over all counterexamples so far, the anchor's loss weighted by
    ``anchor_weight``. ``region_samples`` > 0 adds that many uniform samples of each region of
    every open property per round to the hinge, so the fine-tune pushes the whole region to the
    margin, not only the counterexamples (a property whose violating set is a sliver of a large
    box, e.g. ACAS Xu's, is otherwise fixed at a few points and violated next to them).
    ``boxes`` > 0 tiles each region of an open property into that many sub-boxes and adds
    ``box_weight`` times the hinge on their CROWN lower bounds of the violation
    (:func:`bound_violation`, ``box_batch`` boxes a step): the fine-tune then makes the property
    provable, not only true (on a large region the verifier's bounds are otherwise far looser
    than any margin the anchor allows: ACAS Xu's CROWN bounds over 256 pieces of property 8's
    box are ~250x the outputs' spread). Violations, margins and outputs are in units of
    ``scale`` (outputs on a small scale, e.g. ACAS Xu's, need the reference outputs' standard
    deviation: the mean squared error is divided by scale^2, the hinge by scale, the margin is
    ``margin * scale``). ``test``:
    (inputs, labels) for the accuracy before and after."""
    for name, v in {
        "rounds": rounds,
        "epochs": epochs,
        "batch_size": batch_size,
        "points": points,
        "box_batch": box_batch,
    }.items():
        if not (isinstance(v, int) and v >= 1):
            raise RobustlabError(f"{name} must be a positive integer; found {v!r}")
    for name, v in {"region_samples": region_samples, "boxes": boxes}.items():
        if not (isinstance(v, int) and v >= 0):
            raise RobustlabError(f"{name} must be an integer >= 0; found {v!r}")
    if not 0 <= box_weight < float("inf"):
        raise RobustlabError(f"box_weight must be a finite number >= 0; found {box_weight!r}")
    if not specs:
        raise RobustlabError("repair needs at least one specification; found none")
    if not (scale > 0 and margin >= 0 and penalty >= 0 and anchor_weight >= 0 and lr > 0):
        raise RobustlabError(
            "repair needs scale > 0, lr > 0 and margin, penalty, anchor_weight >= 0; found "
            f"{scale}, {lr}, {margin}, {penalty}, {anchor_weight}"
        )
    start = time.monotonic()
    gen = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    accuracy_before = _accuracy(model, test, shape)
    verdicts, cexs = _verify_all(model, specs, shape, timeout)
    before = tuple(verdicts)
    cex_x, cex_spec, cex_region, history = [], [], [], []
    box_sets: dict[int, tuple] = {}
    for r in range(rounds):
        open_ = [i for i, v in enumerate(verdicts) if v != "holds"]
        if not open_:
            break
        t = time.monotonic()
        for i in open_:
            spec = specs[i]
            pts = worst_points(model, spec, shape, seed=seed + r, k=points, restarts=4 * points)
            regs = torch.arange(len(spec)).repeat_interleave(points)
            if cexs[i] is not None:
                pts = torch.cat([pts, cexs[i].view(1, -1)])
                regs = torch.cat([regs, _region_of(spec, cexs[i]).view(1)])
            if region_samples:
                more = torch.arange(len(spec)).repeat_interleave(region_samples)
                lo, hi = spec.lower[more], spec.upper[more]
                pts = torch.cat(
                    [pts, lo + (hi - lo) * torch.rand(lo.shape, generator=gen, dtype=lo.dtype)]
                )
                regs = torch.cat([regs, more])
            cex_x.append(pts)
            cex_spec.append(spec)
            cex_region.append(regs)
            if boxes and i not in box_sets:
                parts = [sub_boxes(spec.lower[k], spec.upper[k], boxes) for k in range(len(spec))]
                box_regs = torch.cat([torch.full((len(lo),), k) for k, (lo, _) in enumerate(parts)])
                box_sets[i] = (spec, box_regs, torch.cat([p[0] for p in parts]),
                               torch.cat([p[1] for p in parts]))  # fmt: skip
        _finetune(
            model,
            shape,
            anchor,
            cex_x,
            cex_spec,
            cex_region,
            epochs=epochs,
            lr=lr,
            penalty=penalty,
            margin=margin,
            anchor_weight=anchor_weight,
            scale=scale,
            batch_size=batch_size,
            gen=gen,
            boxes=[box_sets[i] for i in open_ if i in box_sets],
            box_weight=box_weight,
            box_batch=box_batch,
        )
        new, new_cex = _verify_all(model, [specs[i] for i in open_], shape, timeout)
        for i, v, c in zip(open_, new, new_cex, strict=True):
            verdicts[i], cexs[i] = v, c
        entry = {
            "round": r + 1,
            "verified": len(open_),
            "holds": verdicts.count("holds"),
            "violated": verdicts.count("violated"),
            "counterexamples": sum(len(x) for x in cex_x),
            "seconds": round(time.monotonic() - t, 3),
        }
        history.append(entry)
        if progress:
            progress(f"round {r + 1}: {entry['holds']}/{len(specs)} hold")
    result = RepairResult(
        before,
        tuple(verdicts),
        accuracy_before,
        _accuracy(model, test, shape),
        tuple(history),
        time.monotonic() - start,
    )
    return model, result
