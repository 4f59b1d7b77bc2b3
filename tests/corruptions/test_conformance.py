"""Every registered corruption: shape, dtype and range kept, deterministic with a seed, grayscale
and RGB of any size, and severity monotone (the mean distance to the clean image grows)."""

import pytest
import torch

from robustlab.corruptions import COMMON, CORRUPTIONS, EXTRA, ORDER, corrupt, get_corruption
from robustlab.errors import RobustlabError

from .images import digits_images

RGB = digits_images(24)
GRAY = digits_images(12, size=(8, 8), rgb=False)
ODD = digits_images(6, size=(20, 27))
DETERMINISTIC = {
    "defocus_blur",
    "zoom_blur",
    "brightness",
    "contrast",
    "pixelate",
    "jpeg_compression",
    "gaussian_blur",
    "saturate",
}
# steps where the published parameters themselves lower the distance to the clean image (the
# reference implementation shows the same dips): frost s3 (0.7 x + 0.7 frost) -> s4
# (0.65 x + 0.7 frost); saturate s2 (S x 0.1) -> s3 (S x 2); spatter s3 (water) -> s4 (mud)
PUBLISHED_DIPS = {("frost", 4), ("saturate", 3), ("spatter", 4)}


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
    dist = [float((corrupt(RGB, name, s, seed=0) - RGB).abs().mean()) for s in range(1, 6)]
    for s in range(2, 6):
        if (name, s) in PUBLISHED_DIPS:
            continue
        assert dist[s - 1] > dist[s - 2], (name, s, dist)
    assert dist[4] > dist[0]


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
