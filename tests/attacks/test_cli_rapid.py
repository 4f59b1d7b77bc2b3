"""``robustlab attack --suite rapid --eot N``: the rapid suite and EOT from the command line."""

import json

from ..conftest import run_cli as run


def test_rapid_suite_with_eot(monkeypatch, capsys, tmp_path):
    out = tmp_path / "r.json"
    code, _, err = run(
        monkeypatch, capsys, "attack", "--model", "zoo:mlp", "--data", "digits", "--eps",
        "0.02,0.1", "--n", "24", "--suite", "rapid", "--eot", "2", "--out", out,
        "--db", tmp_path / "runs.sqlite",
    )  # fmt: skip
    assert code == 0, err
    r = json.loads(out.read_text())
    assert r["suite"] == "rapid" and r["attacks"][:2] == ["apgd-ce", "malt"]
    assert r["settings"]["eot"] == 2 and r["eot"] == 2
    assert r["certified_skipped"] == r["curve"][0]["certified_skipped"] > 0  # eps 0.02
    assert {c["method"] for c in r["certification"]} >= {"ibp"}
    assert r["robust_accuracy"] >= r["curve"][1]["robust_accuracy"]


def test_eot_must_be_positive(monkeypatch, capsys, tmp_path):
    code, _, err = run(
        monkeypatch, capsys, "attack", "--model", "zoo:mlp", "--data", "digits", "--eps", "0.1",
        "--eot", "0", "--out", tmp_path / "r.json", "--db", tmp_path / "runs.sqlite",
    )  # fmt: skip
    assert code == 2 and "eot" in err.lower()
