"""Adversarial-example detection: BEYOND (He et al. 2024) with a small self-supervised encoder,
its detection rates against an attack suite, and an adaptive attack on classifier and detector."""

from robustlab.detect.adaptive import adaptive_attack
from robustlab.detect.augment import Augment
from robustlab.detect.beyond import Beyond, Relations, relations
from robustlab.detect.encoder import Encoder, train_encoder
from robustlab.detect.evaluate import ATTACKS, DetectResult, auroc, detection

__all__ = [
    "ATTACKS",
    "Augment",
    "Beyond",
    "DetectResult",
    "Encoder",
    "Relations",
    "adaptive_attack",
    "auroc",
    "detection",
    "relations",
    "train_encoder",
]
