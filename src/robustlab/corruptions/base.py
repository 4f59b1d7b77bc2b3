"""The corruption registry by name, input checks, seeding, and ``corrupt``.

A corruption is a function ``fn(x, severity, gen) -> Tensor`` on float images ``(N, C, H, W)`` in
[0, 1] with ``C`` 1 or 3 (``corrupt`` maps the data's value range to [0, 1] and back), registered with its family and its published severity parameters
(Hendrycks & Dietterich 2019, arXiv:1903.12261, as implemented by the ``imagecorruptions`` package).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from robustlab.corruptions._ops import gray
from robustlab.errors import RobustlabError, canonical, unknown

SEVERITIES = (1, 2, 3, 4, 5)
FAMILIES = ("noise", "blur", "weather", "digital")

CorruptionFn = Callable[[Tensor, int, torch.Generator], Tensor]


@dataclass(frozen=True)
class Corruption:
    """One registered corruption: its name, family, whether it is one of the 15 common ones (the
    other 4 are ImageNet-C's held-out "extra" corruptions), and the parameters per severity."""

    name: str
    family: str
    common: bool
    params: tuple
    fn: CorruptionFn
    rgb: bool = False  # needs colour: grayscale inputs go through RGB and back (luma)

    def __call__(
        self, x: Tensor, severity: int = 1, seed: int = 0, *, lower: float = 0.0, upper: float = 1.0
    ) -> Tensor:
        return corrupt(x, self.name, severity, seed, lower=lower, upper=upper)


CORRUPTIONS: dict[str, Corruption] = {}


def register(name: str, family: str, params: Sequence, *, common: bool = True, rgb: bool = False):
    """Function decorator adding a corruption to the registry under ``name``."""

    def deco(fn: CorruptionFn) -> CorruptionFn:
        CORRUPTIONS[name] = Corruption(name, family, common, tuple(params), fn, rgb)
        return fn

    return deco


# ImageNet-C's order (the imagecorruptions package's corruption_tuple)
ORDER = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)
COMMON = ORDER[:15]
EXTRA = ORDER[15:]
# corruptions that draw nothing at random (the same output whatever the seed)
DETERMINISTIC = frozenset(
    {
        "defocus_blur",
        "zoom_blur",
        "brightness",
        "contrast",
        "pixelate",
        "jpeg_compression",
        "gaussian_blur",
        "saturate",
    }
)


def corruption_names(spec: str | Sequence[str] = "all") -> list[str]:
    """Names from ``all``, ``common``, ``extra``, a family (``noise``, ``blur``, ``weather``,
    ``digital``), or a comma-separated list / sequence of names and groups."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (i for i in items if i):
        if item == "all":
            group = list(ORDER)
        elif item == "common":
            group = list(COMMON)
        elif item == "extra":
            group = list(EXTRA)
        elif item in FAMILIES:
            group = [n for n in ORDER if CORRUPTIONS[n].family == item]
        elif canonical(item, CORRUPTIONS) in CORRUPTIONS:  # gaussian-noise: gaussian_noise
            group = [canonical(item, CORRUPTIONS)]
        else:
            raise unknown("corruption", item, ["all", "common", "extra", *FAMILIES, *ORDER])
        names += [n for n in group if n not in names]
    if not names:
        raise RobustlabError(f"expected at least one corruption; found {spec!r}")
    return names


def parse_severities(spec: str | int | Sequence[int] = "1-5") -> list[int]:
    """Severities from ``"1-5"``, ``"2,4"``, ``3`` or a list; each in 1..5."""
    if isinstance(spec, int):
        values = [spec]
    elif isinstance(spec, str):
        values = []
        try:
            for part in (p.strip() for p in spec.split(",") if p.strip()):
                if "-" in part:
                    lo, hi = (int(v) for v in part.split("-", 1))
                    values += list(range(lo, hi + 1))
                else:
                    values.append(int(part))
        except ValueError:
            raise RobustlabError(
                f"severities must look like 1-5 or 1,3,5; found {spec!r}"
            ) from None
    else:
        values = [int(v) for v in spec]
    if not values or any(v not in SEVERITIES for v in values):
        raise RobustlabError(f"severities must be integers in 1..5; found {spec!r}")
    return sorted(set(values))


def check_images(x: Tensor) -> None:
    """Raise a one-line error unless ``x`` is a float batch (N, C, H, W) with C 1 or 3."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise RobustlabError(
            f"expected a float tensor of images; found {getattr(x, 'dtype', type(x).__name__)}"
        )
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise RobustlabError(
            f"expected images of shape (N, C, H, W) with C 1 or 3; found {tuple(x.shape)}"
        )


def stable_seed(seed: int, *parts) -> int:
    """A seed derived from ``seed`` and names / numbers, the same in every process."""
    text = "-".join(str(p) for p in (seed, *parts))
    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def get_corruption(name: str) -> Corruption:
    """A registered corruption by name (the families register themselves when the package
    ``robustlab.corruptions`` is imported, which importing this module always does first)."""
    name = canonical(name, CORRUPTIONS)  # gaussian-noise: gaussian_noise
    if name not in CORRUPTIONS:
        raise unknown("corruption", name, ORDER)
    return CORRUPTIONS[name]


def corrupt(
    x: Tensor,
    name: str,
    severity: int = 1,
    seed: int = 0,
    *,
    lower: float = 0.0,
    upper: float = 1.0,
) -> Tensor:
    """Corrupt float images with values in [``lower``, ``upper``] (the data's value range;
    default [0, 1]), shape (N, C, H, W) or (C, H, W) with C 1 or 3, by the named corruption at
    ``severity`` (1..5): mapped to [0, 1] (the scale of the published parameters), corrupted,
    mapped back. Deterministic for a given ``seed``; the result has the shape, dtype and device
    of ``x`` and lies in [``lower``, ``upper``]. Values outside the range are an error (not
    clipped silently)."""
    single = isinstance(x, Tensor) and x.dim() == 3
    xb = x[None] if single else x
    check_images(xb)
    spec = get_corruption(name)
    if severity not in SEVERITIES:
        raise RobustlabError(f"severity must be an integer in 1..5; found {severity!r}")
    lo, hi = check_range(xb, lower, upper)
    # one contiguous copy: channels-last batches (torch views of NHWC arrays) made the matrix
    # products of the small-image paths several times slower
    work = xb.to(torch.float64 if xb.dtype == torch.float64 else torch.float32)
    if (lo, hi) != (0.0, 1.0):
        work = (work - lo) / (hi - lo)
    work = work.clamp(0, 1).contiguous()
    gen = torch.Generator(device=work.device).manual_seed(int(seed))
    if spec.rgb and work.shape[1] == 1:
        out = gray(spec.fn(work.expand(-1, 3, -1, -1), severity, gen))
    else:
        out = spec.fn(work, severity, gen)
    out = out.clamp(0, 1)
    if (lo, hi) != (0.0, 1.0):
        out = (lo + out * (hi - lo)).clamp(lo, hi)
    out = out.to(x.dtype)
    return out[0] if single else out


RANGE_TOLERANCE = 1e-6  # relative to the range's width: rounding of data scaled into it


def check_range(x: Tensor, lower: float, upper: float) -> tuple[float, float]:
    """``(lower, upper)`` as floats, after checking that the range is finite and non-empty and
    that ``x`` lies in it (up to ``RANGE_TOLERANCE`` of its width); a one-line error otherwise."""
    lo, hi = float(lower), float(upper)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise RobustlabError(
            f"the value range must be finite with lower < upper; found [{lower}, {upper}]"
        )
    if x.numel():
        found_lo, found_hi = float(x.min()), float(x.max())
        slack = RANGE_TOLERANCE * (hi - lo)
        if not (found_lo >= lo - slack and found_hi <= hi + slack):
            raise RobustlabError(
                f"images must lie in the value range [{lo:g}, {hi:g}]; found values in "
                f"[{found_lo:.4g}, {found_hi:.4g}] (give lower= and upper=, the data's range)"
            )
    return lo, hi
