"""Adaptive attacks on decision rules (mixtures, detectors, prediction sets, abstention): projected
gradient ascent of any differentiable objective of the input, with expectation over
transformation (EOT) where the rule is random."""

from robustlab.adaptive.ascent import Ascent, ascend

__all__ = ["Ascent", "ascend"]
