import pytest

from robustlab import store
from robustlab.errors import RobustlabError


def test_record_list_show_compare(tmp_path):
    db = tmp_path / "h.sqlite"
    a = store.record(
        "robustlab demo",
        model="m",
        model_hash="abc",
        data="digits",
        settings={"eps": [0.1]},
        metrics={"clean_accuracy": 0.9},
        report="r.json",
        db=db,
    )
    b = store.record(
        "robustlab attack",
        model="m2",
        model_hash="def",
        data="digits",
        settings={},
        metrics={"clean_accuracy": 0.8, "robust_accuracy@0.1": 0.5},
        report=None,
        db=db,
    )
    assert [r.id for r in store.list_runs(db)] == [b, a]
    assert store.get_run(a, db).settings == {"eps": [0.1]}
    header, rows = store.compare([a, b], db)
    assert header == ["", f"run {a}", f"run {b}"]
    assert ["robust_accuracy@0.1", "-", "0.5000"] in rows
    with pytest.raises(RobustlabError):
        store.get_run(42, db)


def test_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_DB", str(tmp_path / "x.sqlite"))
    assert store.default_path() == tmp_path / "x.sqlite"


def test_corrupt_database(tmp_path):
    db = tmp_path / "bad.sqlite"
    db.write_bytes(b"garbage" * 100)
    with pytest.raises(RobustlabError, match="run-history"):
        store.list_runs(db)
