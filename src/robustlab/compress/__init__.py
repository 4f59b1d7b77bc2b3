"""Robust compression: pruning (magnitude, HYDRA, PwoA; unstructured or by channel) fine-tuned
under a robust objective, and robust weight signatures that patch a standard model."""

from robustlab.compress.hydra import hydra_masks
from robustlab.compress.masks import (
    STRUCTURES,
    apply_masks,
    frozen_masks,
    magnitude_masks,
    sparsity_report,
)
from robustlab.compress.prune import METHODS, prune
from robustlab.compress.pwoa import PwoAObjective, pwoa_prune
from robustlab.compress.result import PatchResult, PruneResult
from robustlab.compress.signature import (
    apply_signature,
    evaluate_signature,
    layer_differences,
    signature,
)

__all__ = [
    "METHODS",
    "STRUCTURES",
    "PatchResult",
    "PruneResult",
    "PwoAObjective",
    "apply_masks",
    "apply_signature",
    "evaluate_signature",
    "frozen_masks",
    "hydra_masks",
    "layer_differences",
    "magnitude_masks",
    "prune",
    "pwoa_prune",
    "signature",
    "sparsity_report",
]
