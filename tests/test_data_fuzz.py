"""Fuzz the ``.npz`` and ``.csv`` loaders (hypothesis): every file either loads as a valid dataset
or raises a RobustlabError (the CLI's one line and exit 2); nothing else escapes, no pickle runs."""

import warnings
import zipfile

import numpy as np
import pytest
import torch

from robustlab.data import load_data
from robustlab.errors import RobustlabError

from .fuzz import examples

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

pytestmark = pytest.mark.fuzz

DTYPES = st.sampled_from(
    ["f2", "f4", "f8", "i1", "i4", "i8", "u1", "u8", "b1", "c8", "U3", "S3", "M8[s]", "m8[s]"]
)


@st.composite
def arrays(draw):
    dtype = np.dtype(draw(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    elements = None
    if dtype.kind == "f":
        elements = st.floats(width=8 * dtype.itemsize, allow_nan=True, allow_infinity=True)
    elif dtype.kind in "iu":
        elements = st.integers(int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@st.composite
def plausible(draw):
    """Arrays near a valid dataset: x (N, ...) float in a range, y (N,) labels; then one or two
    fields bent (dtype, shape, values, range)."""
    n = draw(st.integers(0, 6))
    shape = (n, *draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
    x_dtype = draw(st.sampled_from(["f4", "f8", "f2", "i8", "b1", "U2"]))
    x = draw(hnp.arrays(np.dtype(x_dtype), shape))
    y_dtype = draw(st.sampled_from(["i8", "i4", "u8", "f4", "f8", "b1", "U2"]))
    y_shape = draw(st.sampled_from([(n,), (n, 1), (), (n + 1,)]))
    y = draw(hnp.arrays(np.dtype(y_dtype), y_shape))
    found = {"x": x, "y": y}
    for key in ("lower", "upper"):
        if draw(st.booleans()):
            found[key] = draw(
                st.one_of(
                    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
                    arrays(),
                )
            )
    for key in draw(st.lists(st.sampled_from(["x", "y", "extra"]), max_size=2)):
        if key == "extra" or draw(st.booleans()):
            found[key] = draw(arrays())
        else:
            found.pop(key, None)
    return found


def _check(path):
    """Loads as a valid dataset, or raises a one-line RobustlabError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            d = load_data(path)
        except RobustlabError as e:
            assert "\n" not in str(e).strip() and str(e)
            return None
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64
    assert d.x.dim() >= 2 and d.x.shape[0] == d.y.shape[0] > 0 and d.x[0].numel() > 0
    assert torch.isfinite(d.x).all() and (d.y >= 0).all()
    assert np.isfinite(d.lower) and np.isfinite(d.upper) and d.lower < d.upper
    assert (d.x >= d.lower).all() and (d.x <= d.upper).all()
    assert d.num_classes <= 2**31
    return d


@settings(max_examples=examples(60))
@given(
    found=st.one_of(
        plausible(),
        st.dictionaries(st.sampled_from(["x", "y", "lower", "upper", "z"]), arrays(), max_size=4),
    )
)
def test_npz_files(found, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez(path, **found)
    _check(path)


@settings(max_examples=examples(30))
@given(
    data=st.binary(max_size=400),
    member=st.sampled_from(["x.npy", "y.npy", "junk"]),
    zipped=st.booleans(),
)
def test_npz_byte_garbage(data, member, zipped, tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "g.npz"
    if zipped:  # a zip whose members are garbage
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(member, data)
    else:
        path.write_bytes(data)
    _check(path)


def test_pickled_object_arrays_never_run(tmp_path):
    """An object array is stored as a pickle: refused, and its payload never executes."""
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    x = np.empty(3, dtype=object)
    x[:] = [Payload(), Payload(), Payload()]
    np.savez(tmp_path / "p.npz", x=x, y=np.zeros(3, np.int64))
    with pytest.raises(RobustlabError, match="not a readable .npz file"):
        load_data(tmp_path / "p.npz")
    assert not marker.exists()


CELLS = st.one_of(
    st.integers(-3, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "abc", "1e400", "-0", "0x1", "1,5", "nan", "255", "0.5", '"1"']),
)


@st.composite
def csv_text(draw):
    n_values = draw(st.integers(0, 5))
    rows = draw(
        st.lists(
            st.lists(CELLS, min_size=n_values, max_size=n_values + draw(st.integers(0, 1))),
            max_size=5,
        )
    )
    text = "\n".join(",".join(r) for r in rows)
    if draw(st.booleans()):
        text = draw(st.sampled_from(["\ufeff", "label,v1,v2\n", "# comment\n", ""])) + text
    return text + draw(st.sampled_from(["", "\n", "\r\n", "\n\n"]))


@settings(max_examples=examples(60))
@given(
    text=st.one_of(csv_text(), st.text(max_size=200)),
    shape=st.sampled_from([None, (1, 2, 2), (4,), (2, 2), (3,)]),
)
def test_csv_files(text, shape, tmp_path_factory):
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_text(text, encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            d = load_data(path, shape)
        except RobustlabError as e:
            assert "\n" not in str(e).strip()
            return
    assert shape is None or tuple(d.x.shape[1:]) == shape
    _check_dataset(d)


@settings(max_examples=examples(20))
@given(data=st.binary(max_size=300))
def test_csv_byte_garbage(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("csv") / "g.csv"
    path.write_bytes(data)
    try:
        _check_dataset(load_data(path, (1, 2, 2)))
    except RobustlabError as e:
        assert "\n" not in str(e).strip()


def _check_dataset(d):
    assert d.x.dtype == torch.float32 and d.y.dtype == torch.int64 and len(d) > 0
    assert torch.isfinite(d.x).all() and (d.x >= 0).all() and (d.x <= 1).all()
    assert (d.y >= 0).all() and d.x[0].numel() > 0
