"""Datasets: scikit-learn's bundled digits (offline), ``.npz`` and ``.csv`` files.

A dataset is a plain frozen dataclass of tensors plus the declared value range. Every loader checks
what it reads and names what it expected and what it found.
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from robustlab.errors import RobustlabError
from robustlab.lazy import lazy_module
from robustlab.paths import home

# scikit-learn takes about 0.8 s to import: executed only when the digits are not cached yet
sk_datasets = lazy_module("sklearn.datasets")
sk_model_selection = lazy_module("sklearn.model_selection")

BUILTIN = ("digits", "digits-train")


@dataclass(frozen=True)
class Dataset:
    """Inputs ``x`` (float32, N x ...), integer labels ``y`` (N,), and the value range of ``x``."""

    name: str
    x: Tensor
    y: Tensor
    lower: float = 0.0
    upper: float = 1.0

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def num_classes(self) -> int:
        return int(self.y.max().item()) + 1 if len(self) else 0

    def subset(self, n: int | None) -> Dataset:
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise RobustlabError(f"n must be a positive number of examples; found {n}", param="n")
        return Dataset(self.name, self.x[:n], self.y[:n], self.lower, self.upper)

    def to(self, device: torch.device | str) -> Dataset:
        """The same data on ``device`` (itself when it is there already)."""
        if self.x.device == torch.device(device) and self.y.device == torch.device(device):
            return self
        return Dataset(self.name, self.x.to(device), self.y.to(device), self.lower, self.upper)

    def matched_to(self, input_shape: tuple[int, ...] | None) -> Dataset:
        """The same data reshaped to a model's input shape, or an error naming both shapes.

        Shapes match when they are equal, differ only in dimensions of size 1, or one of them is
        flat with as many values (rows of a CSV: colour images read channel-major or pixel-major,
        as ``load_csv`` does). ``None`` (a shape not known) keeps the data as it is.
        """
        if input_shape is None:
            return self
        shape, found = tuple(int(d) for d in input_shape), tuple(self.x.shape[1:])
        if found == shape:
            return self
        big_found, big_shape = [d for d in found if d != 1], [d for d in shape if d != 1]
        flat = len(big_found) <= 1 or len(big_shape) <= 1
        if big_found == big_shape or (flat and math.prod(found) == math.prod(shape)):
            if len(big_found) <= 1 and len(shape) == 3:
                x = torch.from_numpy(_image_layout(self.x.reshape(len(self), -1).numpy(), shape))
            else:
                x = self.x.reshape(len(self), *shape)
            return Dataset(self.name, x, self.y, self.lower, self.upper)
        raise RobustlabError(
            f"data '{self.name}' has inputs of shape {found} but the model expects {shape}"
        )


DIGITS_KEYS = ("x_train", "y_train", "x_test", "y_test")


def split_digits() -> dict[str, np.ndarray]:
    """scikit-learn's digits scaled to [0, 1], (N, 1, 8, 8), split 75/25 (stratified, seed 0)."""
    bunch = sk_datasets.load_digits()
    x = (bunch.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = sk_model_selection.train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    return dict(zip(DIGITS_KEYS, (x_tr, y_tr, x_te, y_te), strict=True))


def digits_cache() -> Path:
    """The split's cache file, keyed by scikit-learn's version (which fixes the split)."""
    return home() / "data" / f"digits-sklearn-{version('scikit-learn')}.npz"


def _digits_arrays() -> dict[str, np.ndarray]:
    """The split, read from the cache (importing scikit-learn costs about a second of every
    command's start-up); computed and cached on first use. A damaged cache is recomputed; an
    unwritable one is skipped."""
    path = digits_cache()
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in DIGITS_KEYS}
        if arrays["x_train"].dtype == np.float32 and arrays["y_test"].dtype == np.int64:
            return arrays
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass
    arrays = split_digits()
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)
        os.replace(tmp, path)  # atomic: concurrent readers see the old file or the whole new one
    except OSError:
        tmp.unlink(missing_ok=True)
    return arrays


def _digits(train: bool) -> Dataset:
    arrays = _digits_arrays()
    x, y = (arrays["x_train"], arrays["y_train"]) if train else (arrays["x_test"], arrays["y_test"])
    name = "digits-train" if train else "digits"
    return Dataset(name, torch.from_numpy(x), torch.from_numpy(y), 0.0, 1.0)


def load_digits_split(train: bool = False) -> Dataset:
    """scikit-learn's 8x8 digits scaled to [0, 1], shape (N, 1, 8, 8); fixed stratified 75/25 split."""
    return _digits(train)


MAX_LABEL = 2**31 - 1  # labels become int64 tensors; a larger one is a mistake, not a class


def _validate(name: str, x: np.ndarray, y: np.ndarray, lower: float, upper: float) -> Dataset:
    if x.dtype.kind != "f":
        raise RobustlabError(f"{name}: array 'x' must be floating point; found dtype {x.dtype}")
    if x.ndim < 2:
        raise RobustlabError(f"{name}: array 'x' must have shape (N, ...); found shape {x.shape}")
    if x[0:1].size == 0 and x.shape[0] > 0:
        raise RobustlabError(f"{name}: 'x' has no values per example; found shape {x.shape}")
    with np.errstate(all="ignore"):
        integral = y.dtype.kind in "iu" or (
            y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (np.mod(y, 1) == 0)))
        )
    if not integral:
        raise RobustlabError(f"{name}: array 'y' must hold integer labels; found dtype {y.dtype}")
    if y.shape != (x.shape[0],):
        raise RobustlabError(
            f"{name}: 'y' must have shape ({x.shape[0]},) to match 'x'; found {y.shape}"
        )
    if x.shape[0] == 0:
        raise RobustlabError(f"{name}: the dataset is empty")
    if (y < 0).any():
        raise RobustlabError(f"{name}: labels must be >= 0; found {int(y.min())}")
    if (y > MAX_LABEL).any():
        raise RobustlabError(f"{name}: labels must be at most {MAX_LABEL}; found {y.max():g}")
    if not (np.isfinite(lower) and np.isfinite(upper) and lower < upper):
        raise RobustlabError(
            f"{name}: the value range [lower, upper] must be finite with lower < upper; "
            f"found [{lower:g}, {upper:g}]"
        )
    with np.errstate(all="ignore"):
        x32 = x.astype(np.float32)
    if not (np.isfinite(x).all() and np.isfinite(x32).all()):
        raise RobustlabError(f"{name}: 'x' contains NaN or infinite values (in float32)")
    lo, hi = float(x.min()), float(x.max())
    if lo < lower or hi > upper:
        raise RobustlabError(
            f"{name}: values of 'x' must lie in the declared range [{lower:g}, {upper:g}]; "
            f"found [{lo:g}, {hi:g}]"
        )
    return Dataset(
        name,
        torch.from_numpy(np.ascontiguousarray(x32)),
        torch.from_numpy(y.astype(np.int64)),
        float(lower),
        float(upper),
    )


def _scalar(path: Path, arrays: dict, key: str, default: float) -> float:
    """An optional scalar of an .npz file (``lower`` / ``upper``): one real number."""
    if key not in arrays:
        return default
    a = arrays[key]
    if a.size != 1 or a.dtype.kind not in "iuf":
        raise RobustlabError(
            f"{path}: '{key}' must be one real number; found an array of shape {a.shape} "
            f"and dtype {a.dtype}"
        )
    return float(a.reshape(()))


def load_npz(path: Path, lower: float | None = None, upper: float | None = None) -> Dataset:
    """An ``.npz`` file with arrays ``x`` and ``y``; optional scalars ``lower`` / ``upper`` declare
    the value range (default [0, 1]). Pickled (object) arrays are refused, never unpickled."""
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("one .npy array, not an archive of named arrays")
        with f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # any failure to parse an untrusted file: zip, header, data, pickle
        why = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        raise RobustlabError(f"{path}: not a readable .npz file ({why})") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise RobustlabError(
                f"{path}: missing array '{key}' (expected arrays 'x' and 'y'; found "
                f"{', '.join(sorted(arrays)) or 'none'})"
            )
    lo = lower if lower is not None else _scalar(path, arrays, "lower", 0.0)
    hi = upper if upper is not None else _scalar(path, arrays, "upper", 1.0)
    return _validate(path.name, arrays["x"], arrays["y"], lo, hi)


def load_csv(path: Path, input_shape: tuple[int, ...] | None = None) -> Dataset:
    """A CSV of rows ``label, v1, v2, ...`` (MNIST/CIFAR style). Values above 1 are read as 0..255
    pixels and scaled to [0, 1]; rows are reshaped to ``input_shape``. For colour images (C, H, W)
    the row's layout, channel-major (C, H, W) or pixel-major (H, W, C), is the one that gives the
    smoother images: files in the wild use both (the ERAN CIFAR-10 rows are pixel-major)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about an empty file: an error below
            table = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2, encoding="utf-8-sig")
    except ValueError as e:  # also undecodable bytes (UnicodeDecodeError)
        why = " ".join(str(e).split())[:300]
        raise RobustlabError(f"{path}: expected numeric rows 'label,v1,v2,...' ({why})") from None
    if table.shape[0] == 0:
        raise RobustlabError(f"{path}: no rows (expected rows 'label,v1,v2,...')")
    if table.shape[1] < 2:
        raise RobustlabError(
            f"{path}: rows have a label but no values (expected 'label,v1,v2,...')"
        )
    y, x = table[:, 0], table[:, 1:]
    if x.max(initial=0) > 1.0:
        x = x / 255.0
    if input_shape is not None:
        if int(np.prod(input_shape)) != x.shape[1]:
            raise RobustlabError(
                f"{path}: rows have {x.shape[1]} values but the model expects shape {input_shape}"
            )
        x = _image_layout(x, tuple(input_shape))
    return _validate(path.name, x, y, 0.0, 1.0)


def _image_layout(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Rows reshaped to ``shape``; for (C, H, W) with 2 to 4 channels, read channel-major or
    pixel-major, whichever has the smaller total variation between neighbouring pixels."""
    chw = x.reshape(-1, *shape)
    if len(shape) != 3 or not 2 <= shape[0] <= 4:
        return chw
    c, h, w = shape
    hwc = x.reshape(-1, h, w, c).transpose(0, 3, 1, 2)

    def variation(im: np.ndarray) -> float:
        return float(np.abs(np.diff(im, axis=2)).mean() + np.abs(np.diff(im, axis=3)).mean())

    return np.ascontiguousarray(hwc) if variation(hwc) < variation(chw) else chw


def load_data(source: str | Path, input_shape: tuple[int, ...] | None = None) -> Dataset:
    """Load a dataset by built-in name (``digits``, ``digits-train``) or from an ``.npz`` / ``.csv``."""
    if str(source) in BUILTIN:
        return _digits(train=str(source) == "digits-train")
    path = Path(source)
    if not path.exists():
        raise RobustlabError(
            f"data file not found: {path} (expected a path or one of {', '.join(BUILTIN)})"
        )
    if path.suffix == ".npz":
        return load_npz(path)
    if path.suffix == ".csv":
        return load_csv(path, input_shape)
    raise RobustlabError(f"{path}: unknown data format '{path.suffix}' (expected .npz or .csv)")
