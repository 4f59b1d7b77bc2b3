"""The audit job end to end on small models and data: the report's content and its soundness,
a failing stage, an interrupted run, tabular data and bad input."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.attacks import PGD, predict
from robustlab.audit import get_profile
from robustlab.data import load_digits_split
from robustlab.errors import RobustlabError
from robustlab.jobs import audit_job
from robustlab.report import render_html
from robustlab.threat import LpBall
from robustlab.zoo import pretrained

TINY = replace(get_profile("quick"), n=24, corruptions="gaussian_noise,fog", severities="3",
               explain_methods=("saliency",), n_explain=3, n_adversarial=2)  # fmt: skip


@pytest.fixture(scope="module")
def report(audited):
    out, _, _ = audited
    return json.loads((out / "report.json").read_text())


def test_report_sections(report):
    assert report["schema_version"] == 2 and report["kind"] == "audit"
    assert report["status"] == "complete" and report["profile"] == "quick"
    status = {s["name"]: s["status"] for s in report["stages"]}
    assert status == dict.fromkeys(
        ["clean", "attacks", "certified", "corruptions", "smoothing", "sensitivity", "examples"],
        "ok",
    )
    h = report["headline"]
    assert h["eps"] == 0.05 and h["n"] == 40 and h["verdict"] in ("good", "warn", "bad")
    assert h["gap"] == pytest.approx(h["robust_accuracy"] - h["certified_accuracy"])
    assert h["ci"]["clean"][0] <= h["clean_accuracy"] <= h["ci"]["clean"][1]
    assert set(report["attacks"]["per_attack_curves"]) == {"apgd-ce", "apgd-t"}
    assert report["certified"]["methods"] == ["ibp", "crown"]
    assert report["certified"]["cross_check"]["certified_but_broken"] == 0
    assert sum(c["n"] for c in report["per_class"]) == 40
    assert report["corruptions"]["table"] and report["corruptions"]["transformations"]
    assert report["smoothing"]["n"] == 40 and report["smoothing"]["curve"]
    assert report["sensitivity"]["png"] and report["examples"]["png"]
    assert {f["name"] for f in report["flags"]} >= {"quick_profile", "small_sample"}
    assert report["reproduce"].startswith("robustlab audit --model zoo:mlp --data digits")
    assert {"torch", "numpy", "scipy", "python"} <= report["versions"].keys()


def test_curves_are_ordered(report):
    clean = report["clean_accuracy"]
    robust = [p["robust_accuracy"] for p in report["curve"]]
    assert robust == sorted(robust, reverse=True) and robust[0] == clean
    for p in report["curve"]:
        assert p["certified_accuracy"] <= p["robust_accuracy"] <= clean
    for pts in report["attacks"]["per_attack_curves"].values():  # each attack alone is weaker
        for p, q in zip(pts, report["curve"], strict=True):
            assert p["robust_accuracy"] >= q["robust_accuracy"]


def test_certified_points_survive_a_fresh_attack(report):
    """Soundness: no point counted certified is broken by an attack the audit did not run."""
    ex = report["per_example"]
    data = load_digits_split(train=False)
    model = pretrained("mlp")
    cert = torch.tensor([c == "1" for c in ex["certified"]])
    robust = torch.tensor([c == "1" for c in ex["robust"]])
    correct = torch.tensor([c == "1" for c in ex["correct"]])
    assert not (cert & ~robust).any() and not (robust & ~correct).any()
    idx = cert.nonzero().squeeze(1)
    assert len(idx) > 5
    threat = LpBall("inf", report["headline"]["eps"])
    x_adv = PGD(steps=100, restarts=3, loss="margin")(model, data.x[idx], data.y[idx], threat)
    assert bool(threat.contains(data.x[idx], x_adv).all())
    assert bool((predict(model, x_adv) == data.y[idx]).all())


def test_failed_stage_is_reported_and_the_others_run(monkeypatch, tmp_path):
    import robustlab.jobs.audit as job

    def broken(ctx, deadline, say):
        raise RuntimeError("bounds exploded")

    monkeypatch.setattr(job, "certify_stage", broken)
    r = audit_job("zoo:mlp", "digits", [0.0, 0.05], profile=TINY, out=tmp_path)
    status = {s["name"]: s for s in r["stages"]}
    assert status["certified"]["status"] == "failed"
    assert status["certified"]["error"] == "RuntimeError: bounds exploded"
    assert status["attacks"]["status"] == status["corruptions"]["status"] == "ok"
    assert r["certified"] is None and r["curve"][1]["certified_accuracy"] is None
    assert any(f["name"] == "stage_failed" and f["stage"] == "certified" for f in r["flags"])
    assert json.loads((tmp_path / "report.json").read_text())["status"] == "complete"
    html = render_html(r)
    assert "bounds exploded" in html and html.count("data:image/png;base64,") >= 3


def test_interrupted_audit_keeps_what_it_has(monkeypatch, tmp_path):
    import robustlab.jobs.audit as job

    def stop(ctx, deadline, say):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "natural_stage", stop)
    with pytest.raises(KeyboardInterrupt):
        audit_job("zoo:mlp", "digits", [0.0, 0.05], profile=TINY, out=tmp_path)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["status"] == "interrupted" and saved["attacks"]["curve"]
    assert [s["status"] for s in saved["stages"]] == ["ok", "ok", "ok", "interrupted"]
    assert "interrupted" in (tmp_path / "report.html").read_text()


def test_tabular_data(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 4, generator=gen)
    y = (x[:, 0] > x[:, 1]).long() + (x[:, 2] > 0.7).long()
    np.savez(tmp_path / "rows.npz", x=x.numpy(), y=y.numpy())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    r = audit_job(model, tmp_path / "rows.npz", [0.0, 0.1], profile=TINY, sigma=0.1)
    status = {s["name"]: s["status"] for s in r["stages"]}
    assert set(status.values()) == {"ok"}, r["stages"]
    assert r["corruptions"]["settings"]["corruptions"] == ["gaussian", "uniform", "dropout"]
    assert r["reproduce"] is None  # an in-memory model cannot be named on a command line
    assert "<img" in render_html(r)


def test_colour_images(tmp_path):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(24, 3, 16, 16, generator=gen)
    y = (x[:, 0].mean((1, 2)) > x[:, 2].mean((1, 2))).long()
    np.savez(tmp_path / "rgb.npz", x=x.numpy(), y=y.numpy())
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 2))  # fmt: skip
    r = audit_job(model, tmp_path / "rgb.npz", [0.0, 0.02], profile=TINY)
    assert {s["status"] for s in r["stages"]} == {"ok", "skipped"}, r["stages"]
    assert r["corruptions"]["corrupted_examples"]["png"] and r["examples"]["png"]
    assert r["sensitivity"]["methods"][0]["method"] == "saliency"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"profile": "fast"}, "unknown profile 'fast'"),
        ({"budget": 0}, "budget must be a positive number of seconds; found 0"),
        ({"sigma": -1.0}, "sigma expects a noise sigma > 0; found -1.0"),
        ({"eps": [-0.1]}, "eps must be a finite number >= 0; found -0.1"),
    ],
)
def test_bad_input(kwargs, message):
    kwargs = {"eps": None, **kwargs}
    with pytest.raises(RobustlabError, match=message.replace(".", r"\.").replace("(", r"\(")):
        audit_job("zoo:mlp", "digits", kwargs.pop("eps"), **kwargs)
