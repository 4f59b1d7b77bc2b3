import numpy as np
import pytest
import torch

from robustlab.data import load_data
from robustlab.errors import RobustlabError


def test_digits_split_is_fixed_and_scaled():
    a, b = load_data("digits"), load_data("digits")
    assert a.x.shape == (450, 1, 8, 8) and a.x.dtype == torch.float32
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.x.min() >= 0 and a.x.max() <= 1
    train = load_data("digits-train")
    assert len(train) == 1347 and train.num_classes == 10


def test_digits_cache_holds_the_scikit_learn_split(tmp_path, monkeypatch):
    """The split is read from $ROBUSTLAB_HOME after the first use (no scikit-learn import at
    start-up); it is the same arrays, and a damaged cache file is recomputed."""
    from robustlab.data import digits_cache, split_digits

    monkeypatch.setenv("ROBUSTLAB_HOME", str(tmp_path))
    fresh = split_digits()
    first = load_data("digits-train")
    path = digits_cache()
    assert path.parent.parent == tmp_path and path.exists()
    for _ in range(2):
        cached, train = load_data("digits"), load_data("digits-train")
        assert torch.equal(cached.x, torch.from_numpy(fresh["x_test"]))
        assert torch.equal(cached.y, torch.from_numpy(fresh["y_test"]))
        assert torch.equal(train.x, first.x) and torch.equal(train.y, first.y)
        assert cached.x.dtype == torch.float32 and cached.y.dtype == torch.int64
        path.write_bytes(b"damaged")  # the second round recomputes it


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_npz_roundtrip(tmp_path):
    x = np.random.default_rng(0).random((5, 3)).astype(np.float32)
    d = load_data(_npz(tmp_path, x=x, y=np.arange(5)))
    assert d.x.shape == (5, 3) and d.y.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "arrays,match",
    [
        (dict(x=np.zeros((3, 2), np.float32)), "missing array 'y'"),
        (dict(y=np.zeros(3, np.int64)), "missing array 'x'"),
        (dict(x=np.zeros((3, 2), np.int64), y=np.zeros(3, np.int64)), "floating point"),
        (dict(x=np.zeros((3, 2), np.float32), y=np.array([0.5, 1, 2])), "integer labels"),
        (dict(x=np.full((3, 2), 2.0), y=np.zeros(3, np.int64)), "declared range"),
        (dict(x=np.zeros((3, 2)), y=np.zeros(4, np.int64)), "shape"),
    ],
)
def test_npz_errors(tmp_path, arrays, match):
    with pytest.raises(RobustlabError, match=match):
        load_data(_npz(tmp_path, **arrays))


def test_npz_declared_range(tmp_path):
    d = load_data(
        _npz(
            tmp_path,
            x=np.full((2, 2), 200.0),
            y=np.zeros(2, np.int64),
            lower=np.array(0.0),
            upper=np.array(255.0),
        )
    )
    assert d.upper == 255.0


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(RobustlabError, match="not found"):
        load_data(tmp_path / "nope.npz")
    (tmp_path / "a.txt").write_text("1")
    with pytest.raises(RobustlabError, match="unknown data format"):
        load_data(tmp_path / "a.txt")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(RobustlabError, match="not a readable"):
        load_data(tmp_path / "bad.npz")


def test_shape_matching():
    d = load_data("digits")
    assert d.matched_to((1, 1, 8, 8)).x.shape == (450, 1, 1, 8, 8)
    with pytest.raises(RobustlabError, match="expects"):
        d.matched_to((1, 28, 28))


def test_csv_pixels(tmp_path):
    rows = np.hstack([np.array([[3], [7]]), np.full((2, 4), 255)])
    path = tmp_path / "d.csv"
    np.savetxt(path, rows, delimiter=",", fmt="%d")
    d = load_data(path, (1, 2, 2))
    assert d.x.shape == (2, 1, 2, 2) and float(d.x.max()) == 1.0 and d.y.tolist() == [3, 7]


@pytest.mark.parametrize("pixel_major", [False, True])
def test_csv_colour_layout_is_detected(tmp_path, pixel_major):
    """Smooth colour images written channel-major or pixel-major load to the same tensor."""
    h = w = 8
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    img = np.stack([xx * 30, yy * 30, (xx + yy) * 15]).astype(np.float64)  # (3, H, W), 0..210
    img[:, ::2, ::2] += 5  # not a pure ramp
    flat = img.transpose(1, 2, 0).reshape(-1) if pixel_major else img.reshape(-1)
    path = tmp_path / "c.csv"
    np.savetxt(path, np.concatenate([[3], flat])[None], delimiter=",")
    data = load_data(path, (3, h, w))
    assert np.allclose(data.x[0].numpy(), img / 255.0, atol=1e-6)
