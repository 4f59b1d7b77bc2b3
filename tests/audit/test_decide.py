"""The audit's optional decide-and-abstain stages: conformal sets and BEYOND detection."""

import pytest

from robustlab.errors import RobustlabError
from robustlab.jobs import audit_job


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
