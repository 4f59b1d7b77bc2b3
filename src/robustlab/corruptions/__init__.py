"""Natural robustness: ImageNet-C corruptions batched in torch, corruption metrics (mCE), small
transformations, frequency-band noise and tabular noise."""

# the families register themselves in base's table on import
from robustlab.corruptions import blur, digital, jpeg, noise, spatter, weather  # noqa: F401
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
from robustlab.corruptions.evaluate import CorruptionResult, evaluate_corruptions
from robustlab.corruptions.frequency import FrequencyResult, evaluate_frequency
from robustlab.corruptions.tabular import TABULAR, corrupt_tabular
from robustlab.corruptions.transforms import (
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
