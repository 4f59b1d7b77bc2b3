"""The audit's network-sensitivity stage (Hessian, Fisher, weight noise, precision), when asked."""

import pytest

from robustlab.jobs import audit_job
from robustlab.report import render_html


@pytest.mark.slow
def test_weight_sensitivity_stage_when_asked_for(tmp_path):
    r = audit_job("zoo:mlp", "digits", [0.02], "inf", n=30, budget=90, weight_sensitivity=True,
                  out=tmp_path)  # fmt: skip
    names = [s["name"] for s in r["stages"]]
    assert names.index("sensitivity") + 1 == names.index("weights")
    assert {s["name"]: s["status"] for s in r["stages"]}["weights"] == "ok"
    w = r["weights"]
    assert [x["name"] for x in w["layers"]] == ["1", "3", "5"] and w["eps"] == 0.02
    assert w["whole_model"]["hessian_trace"] > 0 and w["precision"]["rows"]
    assert {row["format"] for row in w["precision"]["rows"]} >= {"float16", "bfloat16", "int8"}
    assert r["reproduce"].endswith("--weight-sensitivity")
    html = render_html(r)
    assert "Network sensitivity" in html and "Per-layer sensitivity" in html
    assert "Emulated precision" in html


def test_absent_unless_asked_for(tmp_path):
    from dataclasses import replace

    from robustlab.audit import get_profile

    tiny = replace(get_profile("quick"), n=8, corruptions="gaussian_noise", severities="3",
                   explain_methods=("saliency",), n_explain=2, n_adversarial=1)  # fmt: skip
    r = audit_job("zoo:mlp", "digits", [0.02], "inf", profile=tiny, budget=30)
    assert "weights" not in [s["name"] for s in r["stages"]] and "weights" not in r
