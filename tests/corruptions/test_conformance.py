"""Every registered corruption: shape, dtype and range kept, deterministic with a seed, grayscale
and RGB of any size, and severity monotone (the mean distance to the clean image grows)."""

import pytest
import torch
import torch.nn.functional as F

from robustlab.corruptions import (
    COMMON,
    CORRUPTIONS,
    DETERMINISTIC,
    EXTRA,
    ORDER,
    corrupt,
    get_corruption,
)
from robustlab.errors import RobustlabError

from .images import digits_images

RGB = digits_images(24)
GRAY = digits_images(12, size=(8, 8), rgb=False)
ODD = digits_images(6, size=(20, 27))
# the corruptions whose published parameters lower the distance at some step and that depart from
# them to be monotone (documented in their modules)
CHANGED = ("glass_blur", "snow", "frost", "fog", "spatter", "saturate")


def smooth_images(n: int, size=(32, 32), channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Random smooth images: a 6 x 6 grid of uniform values, bicubic upsampling."""
    g = torch.Generator().manual_seed(seed)
    z = torch.rand(n, channels, 6, 6, generator=g)
    return F.interpolate(z, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def distances(x: torch.Tensor, name: str, seed: int = 0) -> list[float]:
    return [float((corrupt(x, name, s, seed=seed) - x).abs().mean()) for s in range(1, 6)]


def test_registry_has_the_15_common_and_4_extra():
    assert len(COMMON) == 15 and len(EXTRA) == 4 and set(CORRUPTIONS) == set(ORDER)
    assert all(CORRUPTIONS[n].common for n in COMMON)
    assert not any(CORRUPTIONS[n].common for n in EXTRA)
    assert all(len(CORRUPTIONS[n].params) == 5 for n in ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_shape_dtype_range_and_seed(name):
    for x in (RGB[:6], GRAY, ODD, RGB[:3].double()):
        out = corrupt(x, name, 3, seed=1)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert torch.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, corrupt(x, name, 3, seed=1))
    single = corrupt(RGB[0], name, 2, seed=0)
    assert single.shape == RGB[0].shape
    if name not in DETERMINISTIC:
        assert not torch.equal(corrupt(RGB[:6], name, 3, seed=1), corrupt(RGB[:6], name, 3, seed=2))


@pytest.mark.parametrize("name", ORDER)
def test_severity_is_monotone(name):
    dist = distances(RGB, name)
    assert all(dist[i + 1] > dist[i] for i in range(4)), (name, dist)


@pytest.mark.parametrize("name", CHANGED)
def test_changed_corruptions_are_monotone_on_other_images(name):
    """Random smooth colour images (more saturated than natural ones, few edges), smooth gray ones
    and dark ones, with another seed: where the published parameters dipped."""
    images = {
        "smooth": smooth_images(12, (40, 48), seed=1),
        "smooth gray": smooth_images(12, channels=1, seed=2),
        "dark": 0.3 * RGB[:12],
    }
    for kind, x in images.items():
        dist = distances(x, name, seed=3)
        assert all(dist[i + 1] > dist[i] for i in range(4)), (name, kind, dist)


def test_channels_last_input_gives_the_same_images():
    nhwc = RGB[:4].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # as from a numpy array
    for name in ("zoom_blur", "jpeg_compression", "snow"):
        assert torch.equal(corrupt(nhwc, name, 3, seed=2), corrupt(RGB[:4], name, 3, seed=2))


def test_corruption_object_and_errors():
    spec = get_corruption("fog")
    assert spec.family == "weather" and spec(RGB[:2], 2).shape == RGB[:2].shape
    with pytest.raises(RobustlabError, match="unknown corruption 'fogg'"):
        corrupt(RGB, "fogg")
    with pytest.raises(RobustlabError, match="severity must be an integer in 1..5; found 6"):
        corrupt(RGB, "fog", 6)
    with pytest.raises(RobustlabError, match=r"C 1 or 3; found \(2, 4, 8, 8\)"):
        corrupt(torch.rand(2, 4, 8, 8), "fog")
    with pytest.raises(RobustlabError, match="expected a float tensor"):
        corrupt(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "fog")
