"""Natural robustness: ImageNet-C corruptions batched in torch, corruption metrics (mCE), small
transformations, frequency-band noise and tabular noise."""

from robustlab.corruptions.base import (
    COMMON,
    CORRUPTIONS,
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

__all__ = [
    "COMMON",
    "CORRUPTIONS",
    "EXTRA",
    "ORDER",
    "SEVERITIES",
    "Corruption",
    "corrupt",
    "corruption_names",
    "get_corruption",
    "parse_severities",
]
