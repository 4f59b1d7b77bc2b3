"""BEYOND (He et al. 2024, "Be Your Own Neighborhood: Detecting Adversarial Examples by the
Neighborhood Relations Built on Self-Supervised Learning", arXiv:2209.00005): an input's k
augmented neighbours, seen by a self-supervised encoder, agree with it in label (its linear
head's label of each neighbour against the classifier's label of the input) and in
representation (cosine similarity) for clean inputs, and not for adversarial ones."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.detect.encoder import Encoder
from robustlab.errors import RobustlabError


@dataclass(frozen=True)
class Relations:
    """Per input: the share of neighbours labelled as the classifier labels the input, and the
    mean cosine similarity of their representations to the input's."""

    label_consistency: Tensor  # (N,) in [0, 1]
    similarity: Tensor  # (N,) in [-1, 1]

    @property
    def score(self) -> Tensor:
        """Suspicion: 1 - (label consistency + similarity) / 2 (higher: more likely adversarial)."""
        return 1 - (self.label_consistency + self.similarity) / 2


def relations(
    classifier: nn.Module,
    encoder: Encoder,
    x: Tensor,
    k: int,
    *,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    soft: bool = False,
) -> Relations:
    """Neighbourhood relations of each input with ``k`` augmented neighbours. ``labels``: the
    label to compare with (default: the classifier's prediction). ``soft``: label consistency as
    the head's mean probability of that label (differentiable, for adaptive attacks)."""
    if k < 1:
        raise RobustlabError(f"k must be >= 1 neighbours; found {k}")
    n = len(x)
    if labels is None:
        with torch.no_grad():
            labels = classifier(x).argmax(1)
    views = encoder.augment(x.repeat(k, *([1] * (x.dim() - 1))), generator)  # (k*N, ...)
    rep_x = encoder.represent(x)
    rep_v = encoder.represent(views)
    sim = F.cosine_similarity(rep_v, rep_x.repeat(k, 1), dim=1).view(k, n).mean(0)
    logits = encoder.head(rep_v)
    lab = labels.repeat(k)
    if soft:
        agree = torch.softmax(logits, 1).gather(1, lab[:, None])[:, 0]
    else:
        agree = (logits.argmax(1) == lab).to(x.dtype)
    return Relations(agree.view(k, n).mean(0), sim)


@dataclass(frozen=True)
class Beyond:
    """The detector: flag an input when its suspicion score exceeds ``threshold``."""

    classifier: nn.Module
    encoder: Encoder
    k: int = 16
    threshold: float = float("inf")
    batch_size: int = 128

    def scores(self, x: Tensor, seed: int = 0) -> Relations:
        """Relations of every input (batched, seeded neighbours, no gradients)."""
        gen = torch.Generator().manual_seed(seed)
        parts = []
        with torch.no_grad():
            for i in range(0, len(x), self.batch_size):
                parts.append(relations(self.classifier, self.encoder, x[i : i + self.batch_size],
                                       self.k, generator=gen))  # fmt: skip
        return Relations(
            torch.cat([p.label_consistency for p in parts]),
            torch.cat([p.similarity for p in parts]),
        )

    def calibrated(self, clean: Tensor, fpr: float = 0.05, seed: int = 0) -> Beyond:
        """The same detector with its threshold at the (1 - fpr) quantile of clean scores."""
        if not 0 < fpr < 1:
            raise RobustlabError(f"fpr must lie in (0, 1); found {fpr}")
        s = self.scores(clean, seed).score.double()
        t = float(torch.quantile(s, 1 - fpr, interpolation="higher"))
        return Beyond(self.classifier, self.encoder, self.k, t, self.batch_size)

    def detect(self, x: Tensor, seed: int = 0) -> Tensor:
        """Boolean per input: flagged as adversarial."""
        return self.scores(x, seed).score.double() > self.threshold
