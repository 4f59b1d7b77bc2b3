"""An adaptive attack on classifier and BEYOND detector together (Tramer et al. 2020,
arXiv:2002.08347: attack the whole defence): projected gradient ascent on the classifier's
margin towards a wrong label (capped at ``kappa``) plus ``weight`` times the neighbours'
agreement with that label and their representation similarity (BEYOND's relations, with soft
labels), with expectation over the random augmentations (EOT)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.adaptive import Ascent
from robustlab.detect.beyond import relations
from robustlab.detect.encoder import Encoder
from robustlab.threat import ThreatModel


def adaptive_attack(
    classifier: nn.Module,
    encoder: Encoder,
    x: Tensor,
    y: Tensor,
    threat: ThreatModel,
    *,
    k: int = 8,
    steps: int = 50,
    weight: float = 4.0,
    kappa: float = 2.0,
    eot: int = 2,
    seed: int = 0,
    start: Tensor | None = None,
) -> Tensor:
    """Adversarial examples meant to fool the classifier and pass the detector; ``start``: a
    warm start (e.g. another attack's adversarial examples) instead of a random one."""
    gen = torch.Generator(device=x.device).manual_seed(seed + 11)

    def objective(xa: Tensor) -> Tensor:
        logits = classifier(xa)
        others = logits.scatter(1, y[:, None], -torch.inf)
        margin = others.amax(1) - logits.gather(1, y[:, None])[:, 0]
        wanted = others.argmax(1).detach()  # the wrong label the input is pushed to
        rel = relations(classifier, encoder, xa, k, generator=gen, labels=wanted, soft=True)
        return margin.clamp(max=kappa) + weight * (rel.label_consistency + rel.similarity) / 2

    return Ascent(steps=steps, eot=eot, seed=seed)(objective, x, threat, start)
