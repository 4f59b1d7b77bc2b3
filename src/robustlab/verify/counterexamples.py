"""Counterexamples for the engine, each confirmed by the oracle: attacks on a Spec's regions,
the sample search (input splitting's), and a candidate of branch and bound rounded into the
box's float32 points or searched for around it."""

from __future__ import annotations

import time

import torch
from torch import Tensor

from robustlab.verify.falsify import Falsifier, attack, float32_box, sample_search, search
from robustlab.verify.oracle import confirm
from robustlab.verify.spec import Property, Spec
from robustlab.verify.surrogate import logit_view, with_surrogate_gradients


def falsify_regions(
    model, shape, spec: Spec, regions, oracle, seconds, rounds: int, seed: int, stats
):
    """A confirmed counterexample from ``rounds`` rounds of attacks on ``regions`` within
    ``seconds``, or None."""
    if not len(regions):
        return None
    stop = time.monotonic() + seconds
    k = 0
    model = attack_view(model, spec, regions, shape)
    while True:
        found = attack(
            model,
            spec,
            regions,
            shape,
            seconds=max(0.0, stop - time.monotonic()),
            rounds=rounds,
            seed=seed + k,
        )
        if found is None:
            return None
        r, x = found
        cex = confirm(oracle, spec.lower[r], spec.upper[r], _region_violation(spec, r), x)
        if cex is not None:
            return cex
        stats["rejected_candidates"] = stats.get("rejected_candidates", 0) + 1
        k += 1000
        if time.monotonic() > stop:
            return None


def attack_view(model, spec: Spec, regions, shape):
    """The model as attacks see it: the logits where the property compares outputs of a final
    softmax (saturated probabilities stall the attack), else the same outputs with gradients
    through sign / softmax; candidates are confirmed on the network either way."""
    centre = ((spec.lower[regions[:1]] + spec.upper[regions[:1]]) / 2).float()
    view = logit_view(model, spec.C, spec.d, centre.reshape(-1, *shape))
    return view or with_surrogate_gradients(model)


def sample_falsifier(model, shape, spec: Spec, regions, oracle, stats, used=0.0) -> Falsifier:
    """The sample search (``falsify.sample_search``) on ``regions``, confirmed by ``oracle``;
    ``used``: the seconds of an earlier one."""
    progress: dict = {}
    steps = sample_search(
        attack_view(model, spec, regions, shape), spec, regions, shape, progress=progress
    )

    def check(r: int, x: Tensor):
        return confirm(oracle, spec.lower[r], spec.upper[r], _region_violation(spec, r), x)

    fals = Falsifier(steps, check, progress, stats)
    fals.used = used
    return fals


def _region_violation(spec: Spec, r: int):
    region = torch.tensor([r])
    return lambda y: spec.violation(y, region)


def confirm_near(model, shape, prop: Property, oracle, x: Tensor) -> dict | None:
    """A confirmed counterexample at the branch and bound's candidate ``x`` rounded into the
    box's float32 points, or from a focused search around it."""
    lo32, hi32 = float32_box(prop.lower, prop.upper)
    x32 = torch.minimum(torch.maximum(x.float(), lo32), hi32)
    cex = confirm(oracle, prop.lower, prop.upper, prop.violation, x32)
    if cex is not None:
        return cex
    width = prop.upper - prop.lower
    near = Property(
        torch.maximum(x - 1e-3 * width, prop.lower),
        torch.minimum(x + 1e-3 * width, prop.upper),
        prop.disjuncts,
    )
    x2 = search(model, near, shape, samples=512, seconds=1.0)
    if x2 is None:
        return None
    return confirm(oracle, prop.lower, prop.upper, prop.violation, x2)
