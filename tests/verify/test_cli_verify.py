"""robustlab verify: a one-line summary then the verdict word last; the run in the history."""

import pytest

from robustlab import store

from ..conftest import SHARED, run_cli

TEST = SHARED / "benchmarks" / "test"


@pytest.mark.skipif(not TEST.exists(), reason="shared benchmarks not present")
def test_verify_prints_summary_then_verdict_and_records_the_run(tmp_path, monkeypatch, capsys):
    db = tmp_path / "runs.sqlite"
    code, out, err = run_cli(
        monkeypatch, capsys, "verify", TEST / "test_nano.onnx", TEST / "test_nano.vnnlib",
        "--timeout", "20", "--db", db,
    )  # fmt: skip
    assert code == 0, err
    summary, verdict = out.strip().splitlines()[-2:]
    assert verdict in {"holds", "violated"}
    assert summary.startswith(f"{verdict} in ") and "strategy" in summary
    (run,) = store.list_runs(db, 5)
    assert run.model == "test_nano.onnx" and run.data == "test_nano.vnnlib"
    assert run.metrics[verdict] == 1.0 and run.metrics["seconds"] > 0


def test_verify_missing_file_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "p.vnnlib").write_text("(declare-const X_0 Real)")
    code, out, err = run_cli(
        monkeypatch, capsys, "verify", tmp_path / "nope.onnx", tmp_path / "p.vnnlib",
        "--db", tmp_path / "runs.sqlite",
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.strip() == f"error: model file not found: {tmp_path / 'nope.onnx'}"
