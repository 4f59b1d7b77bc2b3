"""Blind spots: where a model is under-sensitive. Level-set traversal (Sahoo et al. 2023) and a
shape-bias probe on cue-conflict images."""

from robustlab.blindspots.levelset import TraversalResult, level_set_traversal, pairs
from robustlab.blindspots.shapebias import (
    ShapeBiasResult,
    cue_conflict,
    patch_shuffle,
    shape_bias,
)

__all__ = [
    "ShapeBiasResult",
    "TraversalResult",
    "cue_conflict",
    "level_set_traversal",
    "pairs",
    "patch_shuffle",
    "shape_bias",
]
