"""Natural robustness: ImageNet-C corruptions batched in torch, corruption metrics (mCE), small
transformations, frequency-band noise and tabular noise."""

from robustlab.corruptions.base import (
    COMMON,
    CORRUPTIONS,
    DETERMINISTIC,
    EXTRA,
    ORDER,
    SEVERITIES,
    Corruption,
    corrupt,
    corruption_names,
    get_corruption,
    parse_severities,
)
from robustlab.corruptions.base import _load as _load_families

_load_families()

from robustlab.corruptions.evaluate import CorruptionResult, evaluate_corruptions  # noqa: E402
from robustlab.corruptions.frequency import FrequencyResult, evaluate_frequency  # noqa: E402
from robustlab.corruptions.tabular import TABULAR, corrupt_tabular  # noqa: E402
from robustlab.corruptions.transforms import (  # noqa: E402
    TransformResult,
    evaluate_transformations,
    warp,
)

__all__ = [
    "COMMON",
    "CORRUPTIONS",
    "DETERMINISTIC",
    "EXTRA",
    "ORDER",
    "SEVERITIES",
    "TABULAR",
    "Corruption",
    "CorruptionResult",
    "FrequencyResult",
    "TransformResult",
    "corrupt",
    "corrupt_tabular",
    "corruption_names",
    "evaluate_corruptions",
    "evaluate_frequency",
    "evaluate_transformations",
    "get_corruption",
    "parse_severities",
    "warp",
]
