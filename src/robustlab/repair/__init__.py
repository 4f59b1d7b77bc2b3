"""Counterexample-guided repair (Boetius et al. 2023): verify, collect counterexamples, fine-tune
under the violated constraints with the original data as an anchor, verify again."""

from robustlab.repair.boxes import bound_violation, sub_boxes
from robustlab.repair.repair import (
    RepairResult,
    local_robustness_specs,
    repair,
    worst_points,
)

__all__ = [
    "RepairResult",
    "bound_violation",
    "local_robustness_specs",
    "repair",
    "sub_boxes",
    "worst_points",
]
