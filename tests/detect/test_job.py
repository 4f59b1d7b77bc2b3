"""``robustlab detect`` end to end (in-process) and its bad input: one line, exit 2."""

import json

import pytest

from robustlab import store

from ..conftest import run_cli as run


def test_detect_command_reports_and_records(monkeypatch, capsys, tmp_path):
    out, db = tmp_path / "d" / "det.json", tmp_path / "runs.sqlite"
    code, stdout, err = run(monkeypatch, capsys, "detect", "--model", "zoo:mlp", "--data",
                            "digits", "--n", "30", "--epochs", "1", "--k", "4", "--attacks",
                            "fgsm", "--adaptive-steps", "3", "--out", out, "--db", db)  # fmt: skip
    assert code == 0, err
    r = json.loads(out.read_text())
    assert r["kind"] == "detect" and len(r["rows"]) == 2 and "verdict" in err
    assert "Adversarial-example detection (BEYOND)" in out.with_suffix(".html").read_text()
    (rec,) = store.list_runs(db, 5)
    assert "fgsm auroc" in rec.metrics or "fgsm undetected_success_rate" in rec.metrics
    assert "fgsm" in stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--eps", "-1"], "eps"), (["--attacks", "nope"], "unknown attack"),
     (["--fpr", "2"], "fpr"), (["--epochs", "0"], "encoder_epochs"), (["--norm", "7"], "norm")],
)  # fmt: skip
def test_detect_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args, needle):
    base = {"--model": "zoo:mlp", "--data": "digits", "--n": "20", "--epochs": "1",
            "--out": tmp_path / "d.json", "--db": tmp_path / "r.sqlite"}  # fmt: skip
    base.update(zip(args[::2], args[1::2], strict=True))
    code, _, err = run(monkeypatch, capsys, "detect", *[s for kv in base.items() for s in kv])
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
