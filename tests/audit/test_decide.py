"""The audit's optional decide-and-abstain stages: conformal sets, BEYOND detection, mixing with a
second model, certify-or-abstain under the availability attack; each within its deadline."""

import time

import pytest
from torch import nn

from robustlab.errors import RobustlabError
from robustlab.jobs import audit_job
from tests.conftest import run_cli


@pytest.mark.slow
def test_conformal_and_detect_stages_when_asked_for(tmp_path):
    from robustlab.report import render_html

    r = audit_job("zoo:mlp", "digits", [0.02], "inf", n=30, budget=60, conformal=0.1, detect=True,
                  out=tmp_path)  # fmt: skip
    status = {s["name"]: s["status"] for s in r["stages"]}
    assert status["conformal"] == "ok" and status["detect"] == "ok"
    assert [s["name"] for s in r["stages"]].index("conformal") < [
        s["name"] for s in r["stages"]].index("detect")  # fmt: skip
    assert r["conformal"]["rows"] and r["detect"]["rows"][-1]["adaptive"]
    assert r["reproduce"].endswith("--conformal 0.1 --detect")
    html = render_html(r)
    assert "Conformal prediction sets" in html and "Adversarial-example detection" in html


def test_stages_absent_unless_asked_and_alpha_checked():
    with pytest.raises(RobustlabError, match="conformal expects an alpha"):
        audit_job("zoo:mlp", "digits", [0.02], conformal=1.5)


@pytest.mark.slow
def test_mix_and_abstain_stages_when_asked_for(tmp_path):
    from robustlab.report import render_html

    r = audit_job("zoo:mlp", "digits", [0.02], "inf", n=30, budget=80, mix_accurate="zoo:mlp",
                  abstain=0.01, out=tmp_path)  # fmt: skip
    status = {s["name"]: s["status"] for s in r["stages"]}
    assert status["mix"] in ("ok", "partial") and status["abstain"] == "ok"
    mx, ab = r["mix"], r["abstain"]
    assert [row["name"] for row in mx["frontier"]][:3] == ["accurate", "robust", "mix q=1"]
    assert mx["accurate"] == "zoo:mlp" and mx["eps"] == 0.02 and mx["metrics"]
    assert ab["examples"] == 30 and ab["radius"] == 0.01 and ab["eps"] == 0.02
    assert ab["attacked"]["abstain_rate"] >= ab["clean"]["abstain_rate"]
    assert r["settings"]["mix_accurate"] == "zoo:mlp" and r["settings"]["abstain_radius"] == 0.01
    assert "--mix-accurate zoo:mlp --abstain 0.01" in r["reproduce"]
    html = render_html(r)
    assert "Mixed classifiers" in html and "certify or abstain under attack" in html


@pytest.mark.slow
def test_decide_stages_answer_within_the_audit_deadline(tmp_path):
    budget = 30.0
    t0 = time.perf_counter()
    r = audit_job("zoo:mlp", "digits", [0.02], "inf", n=60, budget=budget, conformal=0.1,
                  detect=True, mix_accurate="zoo:mlp", abstain=0.01, out=tmp_path)  # fmt: skip
    wall = time.perf_counter() - t0
    assert wall <= budget + 5  # loading and the summary beside the stages' budget
    stages = {s["name"]: s for s in r["stages"]}
    for name in ("conformal", "detect", "mix", "abstain"):
        s = stages[name]
        assert s["status"] in ("ok", "partial", "timeout", "skipped"), s
        # stopped at the first progress report past the hard deadline (soft * 1.25 + 1 s): one
        # step late at most (an attack run, an encoder epoch: 0.5-2.2 s at load 10)
        assert s["seconds"] <= s["budget_s"] * 1.25 + 1 + 5, s
    if stages["mix"]["status"] == "partial":  # the result's own note kept, the stage's added
        assert "no trade-off" in stages["mix"]["note"] and "left out" in stages["mix"]["note"]


def test_stages_absent_unless_asked_and_checked(monkeypatch, capsys):
    r = audit_job("zoo:mlp", "digits", [0.02], n=8, budget=1)
    assert not {"mix", "abstain", "conformal", "detect"} & {s["name"] for s in r["stages"]}
    with pytest.raises(RobustlabError, match="abstain expects a certificate radius > 0"):
        audit_job("zoo:mlp", "digits", [0.02], abstain=0)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(RobustlabError, match="mix-accurate model has 3 outputs"):
        audit_job("zoo:mlp", "digits", [0.02], n=8, mix_accurate=other)
    code, out, err = run_cli(monkeypatch, capsys, "audit", "--model", "zoo:mlp", "--data",
                             "digits", "--abstain", "-1")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "abstain" in err
    code, out, err = run_cli(monkeypatch, capsys, "audit", "--model", "zoo:mlp", "--data",
                             "digits", "--mix-accurate", "missing.onnx")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing.onnx" in err
