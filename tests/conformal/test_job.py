"""``robustlab conformal`` end to end (in-process) and its bad input: one line, exit 2."""

import json

import pytest

from robustlab import store

from ..conftest import run_cli as run


def test_conformal_command_reports_and_records(monkeypatch, capsys, tmp_path):
    out, db = tmp_path / "c" / "conf.json", tmp_path / "runs.sqlite"
    code, stdout, err = run(monkeypatch, capsys, "conformal", "--model", "zoo:mlp", "--data",
                            "digits", "--eps", "0.02", "--n", "40", "--samples", "64", "--steps",
                            "5", "--out", out, "--db", db)  # fmt: skip
    assert code == 0, err
    r = json.loads(out.read_text())
    assert r["kind"] == "conformal" and len(r["rows"]) == 12 and r["n_test"] == 20
    assert "Conformal prediction sets" in out.with_suffix(".html").read_text()
    (rec,) = store.list_runs(db, 5)
    assert "rscp+ attacked coverage" in rec.metrics
    assert "vrcp" in stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--alpha", "2"], "alpha"), (["--eps", "-1"], "eps"), (["--norm", "3"], "norm"),
     (["--bounds", "magic"], "bound method"), (["--cal-share", "0"], "cal_share")],
)  # fmt: skip
def test_conformal_bad_input_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path, args, needle):
    base = {"--model": "zoo:mlp", "--data": "digits", "--eps": "0.02", "--n": "20",
            "--samples": "8", "--steps": "2", "--out": tmp_path / "c.json",
            "--db": tmp_path / "r.sqlite"}  # fmt: skip
    base.update(zip(args[::2], args[1::2], strict=True))
    code, _, err = run(monkeypatch, capsys, "conformal", *[s for kv in base.items() for s in kv])
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
