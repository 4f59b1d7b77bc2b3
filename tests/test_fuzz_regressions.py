"""What the fuzz suite found (tests/test_data_fuzz.py, tests/test_fuzz_cli.py), each with the one
line it now gives. Before: an internal error (exit 1) or a silently wrong dataset."""

import warnings

import numpy as np
import pytest

from robustlab.data import load_data
from robustlab.errors import RobustlabError

from .conftest import SHARED
from .conftest import run_cli as run

TEST = SHARED / "benchmarks" / "test"
X, Y = np.zeros((2, 3), np.float32), np.zeros(2, np.int64)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


NPZ = [  # (arrays, the message after the file name); before: what happened
    (dict(x=X, y=Y, lower=np.zeros(2)),  # TypeError
     "'lower' must be one real number; found an array of shape (2,) and dtype float64"),
    (dict(x=X, y=Y, lower=np.float64("nan")),  # accepted, range [nan, 1]
     "the value range [lower, upper] must be finite with lower < upper; found [nan, 1]"),
    (dict(x=X, y=Y, lower=np.float64(1), upper=np.float64(1)),  # accepted, zero-width range
     "the value range [lower, upper] must be finite with lower < upper; found [1, 1]"),
    (dict(x=np.zeros((2, 0), np.float32), y=Y),  # ValueError: zero-size array
     "'x' has no values per example; found shape (2, 0)"),
    (dict(x=X, y=np.array([0, 1e300])),  # accepted, label -9223372036854775808
     "labels must be at most 2147483647; found 1e+300"),
    (dict(x=np.full((2, 3), 1e300), y=Y, lower=np.float64(-1e301), upper=np.float64(1e301)),
     "'x' contains NaN or infinite values (in float32)"),  # accepted, x = inf in float32
]  # fmt: skip


@pytest.mark.parametrize("arrays,message", NPZ)
def test_npz(tmp_path, arrays, message):
    path = _npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(RobustlabError) as e:
        load_data(path)
    assert str(e.value) in (f"{path.name}: {message}", f"{path}: {message}")


def test_npz_empty_file_and_single_array(tmp_path):
    (tmp_path / "e.npz").write_bytes(b"")  # EOFError
    with pytest.raises(RobustlabError) as e:
        load_data(tmp_path / "e.npz")
    assert str(e.value) == (
        f"{tmp_path / 'e.npz'}: not a readable .npz file (EOFError: No data left in file)"
    )
    np.save(tmp_path / "a.npy", X)  # a .npy renamed: TypeError
    (tmp_path / "a.npz").write_bytes((tmp_path / "a.npy").read_bytes())
    with pytest.raises(RobustlabError) as e:
        load_data(tmp_path / "a.npz")
    assert str(e.value) == (
        f"{tmp_path / 'a.npz'}: not a readable .npz file "
        "(ValueError: one .npy array, not an archive of named arrays)"
    )


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "no rows (expected rows 'label,v1,v2,...')"),  # before: "the dataset is empty"
        ("0\n1\n", "rows have a label but no values (expected 'label,v1,v2,...')"),  # ValueError
    ],
)
def test_csv(tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_text(text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning from numpy about the empty file
        with pytest.raises(RobustlabError) as e:
            load_data(path)
    assert str(e.value) == f"{path}: {message}"


def test_csv_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\ufeff1,0.5,0.25\n0,1,0\n", encoding="utf-8")  # before: not numeric
    d = load_data(path)
    assert d.y.tolist() == [1, 0] and d.x.tolist() == [[0.5, 0.25], [1.0, 0.0]]


def _cli(monkeypatch, capsys, *args):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, (code, err)
    return err.strip()


def test_eps_past_float32(monkeypatch, capsys, tmp_path):
    """Before: certify ran, then the report's plot failed (internal error)."""
    err = _cli(monkeypatch, capsys, "certify", "--model", "zoo:mlp", "--data", "digits",
               "--eps", "1e308", "--n", "2", "--out", tmp_path / "c.json")  # fmt: skip
    assert err == "error: eps must be at most float32's largest number 3.403e+38; found 1e+308"


def test_run_ids_past_sqlite_integers(monkeypatch, capsys, tmp_path):
    """Before: OverflowError (internal error) for runs show and runs list --limit."""
    db = tmp_path / "h.sqlite"
    err = _cli(monkeypatch, capsys, "runs", "show", "99999999999999999999", "--db", db)
    assert err == f"error: no run with id 99999999999999999999 in {db}"
    code, _, err = run(
        monkeypatch, capsys, "runs", "list", "--limit", "99999999999999999999", "--db", db
    )
    assert code == 0, err


@pytest.mark.skipif(not TEST.exists(), reason="shared benchmarks not present")
def test_verify_benchmark_out_and_expected(monkeypatch, capsys, tmp_path):
    """Before: --out '' failed on Path('.').with_suffix (internal error); a missing --expected
    file failed after the whole benchmark had run (FileNotFoundError)."""
    instances = tmp_path / "i.csv"
    instances.write_text(f"{TEST / 'test_nano.onnx'},{TEST / 'test_nano.vnnlib'},20\n")
    err = _cli(monkeypatch, capsys, "verify-benchmark", instances, "--out", "")
    assert err == "error: --out expects a file path; found the folder ."
    missing = tmp_path / "missing.csv"
    err = _cli(
        monkeypatch,
        capsys,
        "verify-benchmark",
        instances,
        "--out",
        tmp_path / "r.csv",
        "--expected",
        missing,
    )
    assert err == f"error: --expected file not found: {missing}"
    assert not (tmp_path / "r.csv").exists()  # refused before any work
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    err = _cli(
        monkeypatch,
        capsys,
        "verify-benchmark",
        instances,
        "--out",
        tmp_path / "r.csv",
        "--expected",
        bad,
    )
    assert err == (
        f"error: --expected {bad}: expected a CSV with columns onnx,vnnlib,timeout_s,expected "
        "(KeyError('onnx'))"
    )


@pytest.mark.skipif(not TEST.exists(), reason="shared benchmarks not present")
def test_verify_benchmark_db_that_is_not_a_database(monkeypatch, capsys, tmp_path):
    """Before: sqlite3.DatabaseError (internal error)."""
    instances = tmp_path / "i.csv"
    instances.write_text(f"{TEST / 'test_nano.onnx'},{TEST / 'test_nano.vnnlib'},20\n")
    db = tmp_path / "r.json"
    db.write_text('{"not": "a database"}')
    err = _cli(
        monkeypatch,
        capsys,
        "verify-benchmark",
        instances,
        "--out",
        tmp_path / "r.csv",
        "--results-db",
        db,
    )
    assert (
        err == f"error: --results-db {db}: not a usable results database (file is not a database)"
    )


@pytest.mark.parametrize(
    "content,why",
    [
        (
            b"\x08\x07garbage\xff,b,1\n",
            "'utf-8' codec can't decode byte 0xff in position 9: invalid start byte",
        ),
        (b"a,b,1\n\x00\x00,x,2\n", "embedded null byte"),
    ],
)
def test_verify_benchmark_instances_that_are_not_text(monkeypatch, capsys, tmp_path, content, why):
    """Before: UnicodeDecodeError / ValueError (internal error)."""
    instances = tmp_path / "i.csv"
    instances.write_bytes(content)
    err = _cli(monkeypatch, capsys, "verify-benchmark", instances, "--out", tmp_path / "r.csv")
    assert err == f"error: {instances}: expected a text CSV of rows onnx,vnnlib,timeout ({why})"
