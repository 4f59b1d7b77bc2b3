"""Mixed classifiers (Bai et al.): an accurate and a robust model mixed in probability space after
MixedNUTS's nonlinear transform of the robust model's logits, fitted on a held-back split, and
their clean / robust frontier measured by attacking each mixture end to end."""

from robustlab.mix.fit import GRID, FitData, MixFit, fit_data, fit_mixture, target_strength
from robustlab.mix.frontier import STRENGTHS, MixResult, mix, split
from robustlab.mix.transform import MixedClassifier, NutsMap, mixed_log_probs

__all__ = [
    "GRID",
    "STRENGTHS",
    "FitData",
    "MixFit",
    "MixResult",
    "MixedClassifier",
    "NutsMap",
    "fit_data",
    "fit_mixture",
    "mix",
    "mixed_log_probs",
    "split",
    "target_strength",
]
