"""The corruptions against the libraries the reference implementation builds on (scipy, PIL,
matplotlib's HSV) and against literal ports of its helpers."""

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from robustlab.corruptions import _ops, corrupt
from robustlab.corruptions.blur import disk
from robustlab.corruptions.digital import BRIGHTNESS, SATURATE

from .images import digits_images

RGB = digits_images(8)


def test_gaussian_blur_matches_scipy_nearest():
    for sigma in (1, 6):
        ours = corrupt(RGB, "gaussian_blur", [1, 2, 3, 4, 6].index(sigma) + 1)
        ref = ndimage.gaussian_filter(RGB.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest")
        assert np.abs(ours.numpy() - ref.clip(0, 1)).max() < 1e-5
    big = torch.rand(1, 1, 140, 150, dtype=torch.float64)  # the convolution path
    ref = ndimage.gaussian_filter(big.numpy(), sigma=(0, 0, 2, 3), mode="reflect")
    ours = _ops.gaussian_blur(big, (2, 3), "symmetric")
    assert np.abs(ours.numpy() - ref).max() < 1e-10


@pytest.mark.parametrize(
    "n,factor", [(32, 1.06), (32, 3.0), (32, 2.5), (9, 1.3), (20, 4.5), (100, 1.06), (90, 4.5)]
)
def test_zoom_matrix_matches_scipy_clipped_zoom(n, factor):
    img = np.random.default_rng(0).random((n, n))
    crop = int(math.ceil(n / factor))
    top = (n - crop) // 2
    ref = ndimage.zoom(img[top : top + crop, top : top + crop], factor, order=1)[:n, :n]
    ours = _ops.clipped_zoom(torch.from_numpy(img), factor).numpy()
    h, w = ref.shape
    assert np.abs(ours[:h, :w] - ref).max() < 1e-10
    assert np.all(ours[h:] == 0) and np.all(ours[:, w:] == 0)


def test_filter2d_fft_matches_direct_correlation():
    x = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    k = torch.rand(9, 9, dtype=torch.float64)
    ref = ndimage.correlate(x.numpy(), k.numpy()[None, None], mode="mirror")
    assert np.abs(_ops.filter2d(x, k, "reflect101").numpy() - ref).max() < 1e-10
    d = disk(3, 0.1)
    assert d.shape == (17, 17) and abs(float(d.sum()) - 1) < 1e-9


def test_pixelate_matches_pil_box_then_nearest():
    for s, c in enumerate((0.6, 0.5, 0.4, 0.3, 0.25), 1):
        ours = corrupt(RGB[:2], "pixelate", s)
        for i in range(2):
            for ch in range(3):
                im = Image.fromarray(RGB[i, ch].numpy().astype(np.float32), mode="F")
                small = im.resize((int(32 * c), int(32 * c)), Image.BOX)
                ref = np.asarray(small.resize((32, 32), Image.NEAREST))
                assert np.abs(ours[i, ch].numpy() - ref).max() < 1e-5


def test_jpeg_matches_pil_within_a_level():
    u8 = (RGB * 255).round().to(torch.uint8)
    x = u8.float() / 255
    for s, q in enumerate((25, 18, 15, 10, 7), 1):
        ours = corrupt(x, "jpeg_compression", s)
        ref = []
        for img in u8.permute(0, 2, 3, 1).numpy():
            import io

            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=q)
            ref.append(np.asarray(Image.open(buf)))
        ref = torch.from_numpy(np.stack(ref)).permute(0, 3, 1, 2).float() / 255
        assert (ours - ref).abs().mean() < 1.5 / 255, s
    gray = x[:, :1]
    assert corrupt(gray, "jpeg_compression", 1).shape == gray.shape


def _hsv_roundtrip(x, fn):
    from matplotlib.colors import hsv_to_rgb, rgb_to_hsv

    hsv = rgb_to_hsv(x.permute(0, 2, 3, 1).numpy())
    hsv = fn(hsv)
    return torch.from_numpy(hsv_to_rgb(hsv)).permute(0, 3, 1, 2).float()


def test_brightness_and_saturate_match_an_hsv_round_trip():
    x = torch.rand(4, 3, 9, 9)
    x[0, :, 0, 0] = 0.5  # a gray pixel (hue 0)
    x[0, :, 0, 1] = 0.0  # black
    for s in range(1, 6):
        c = BRIGHTNESS[s - 1]

        def bright(h, c=c):
            h[..., 2] = np.clip(h[..., 2] + c, 0, 1)
            return h

        assert (corrupt(x, "brightness", s) - _hsv_roundtrip(x, bright)).abs().max() < 1e-5
        a, b = SATURATE[s - 1]

        def sat(h, a=a, b=b):
            h[..., 1] = np.clip(h[..., 1] * a + b, 0, 1)
            return h

        assert (corrupt(x, "saturate", s) - _hsv_roundtrip(x, sat)).abs().max() < 1e-5


def _reference_motion_blur(x, radius, sigma, angle):
    """A literal port of the reference ``_motion_blur`` (HWC numpy)."""
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    k /= k.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hyp = math.hypot(*point)
    out = np.zeros_like(x)
    for i in range(width):
        dy = -math.ceil(i * point[0] / hyp - 0.5)
        dx = -math.ceil(i * point[1] / hyp - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
            break
        rows = np.clip(np.arange(x.shape[0]) - dy, 0, x.shape[0] - 1)
        cols = np.clip(np.arange(x.shape[1]) - dx, 0, x.shape[1] - 1)
        out += k[i] * x[rows][:, cols]
    return out


def test_motion_blur_matches_the_reference_helper():
    x = torch.rand(3, 2, 12, 10, dtype=torch.float64)
    angles = torch.tensor([-45.0, 10.0, 120.0], dtype=torch.float64)
    ours = _ops.motion_blur(x, 10, 3, angles)
    for i in range(3):
        ref = _reference_motion_blur(x[i].permute(1, 2, 0).numpy(), 10, 3, float(angles[i]))
        assert np.abs(ours[i].permute(1, 2, 0).numpy() - ref).max() < 1e-12


def test_plasma_fractal_and_symmetric_sampling():
    p = _ops.plasma_fractal(3, 16, 2.0, torch.Generator().manual_seed(0))
    assert p.shape == (3, 16, 16) and p.min() == 0 and float(p.amax((1, 2)).min()) == 1.0
    x = torch.rand(2, 3, 7, 9, dtype=torch.float64)
    ys = torch.rand(2, 7, 9, dtype=torch.float64) * 12 - 3
    xs = torch.rand(2, 7, 9, dtype=torch.float64) * 14 - 3
    ours = _ops.bilinear_sample(x, ys, xs, "symmetric")
    for i in range(2):
        for c in range(3):
            ref = ndimage.map_coordinates(
                x[i, c].numpy(), [ys[i].numpy(), xs[i].numpy()], order=1, mode="reflect"
            )
            assert np.abs(ours[i, c].numpy() - ref).max() < 1e-10


def test_elastic_sampling_is_scipy_reflect():
    """elastic_transform samples with grid_sample's reflection padding, which must be
    map_coordinates' ``reflect`` mode (mirrored about the outer pixel edges)."""
    import torch.nn.functional as F

    x = torch.rand(2, 3, 7, 9, dtype=torch.float64)
    ys = torch.rand(2, 7, 9, dtype=torch.float64) * 12 - 3
    xs = torch.rand(2, 7, 9, dtype=torch.float64) * 14 - 3
    grid = torch.stack([(2 * xs + 1) / 9 - 1, (2 * ys + 1) / 7 - 1], -1)
    ours = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    assert (ours - _ops.bilinear_sample(x, ys, xs, "symmetric")).abs().max() < 1e-10


def test_spatter_hysteresis_and_distance_match_per_image_versions():
    from robustlab.corruptions.spatter import edge_distance, hysteresis

    g = torch.Generator().manual_seed(0)
    weak = torch.rand(5, 1, 20, 23, generator=g) < 0.45
    strong = weak & (torch.rand(5, 1, 20, 23, generator=g) < 0.05)
    strong[3] = False  # an image without strong edges
    edges = strong.clone()
    while True:  # growth from the strong edges within the weak ones
        grown = weak & (torch.nn.functional.max_pool2d(edges.float(), 3, 1, 1) > 0)
        if torch.equal(grown, edges):
            break
        edges = grown
    assert torch.equal(hysteresis(weak, strong), edges)
    d = edge_distance(edges, 20.0)
    for i in range(5):
        e = edges[i, 0].numpy()
        ref = ndimage.distance_transform_edt(~e) if e.any() else np.full(e.shape, 20.0)
        assert np.abs(d[i, 0].numpy() - np.minimum(ref, 20.0)).max() < 1e-12
