"""zoo:vit, the small vision transformer: it trains, its bounds contain sampled and attacked
outputs for every method, and the audit runs every stage on it (certified bounds included)."""

import copy
import json

import pytest
import torch

from robustlab import zoo
from robustlab.attacks import PGD, predict
from robustlab.bounds import METHODS, compute_bounds
from robustlab.bounds.graph import graph_of
from robustlab.threat import LpBall

from .conftest import run_cli


@pytest.fixture(scope="module")
def vit():
    return zoo.pretrained("vit")


def test_vit_is_a_transformer_that_trains(vit, digits):
    ops = {type(n.op).__name__ for n in graph_of(vit, zoo.INPUT_SHAPE).nodes[1:]}
    assert {"MatMul", "Mul", "Softmax", "GELU", "Center", "Conv"} <= ops
    assert (predict(vit, digits.x) == digits.y).float().mean().item() >= 0.9


def test_vit_bounds_contain_sampled_and_attacked_outputs(vit, digits):
    x0 = digits.x[:2]
    threat = LpBall("inf", 0.01)
    g = torch.Generator().manual_seed(0)
    x64 = x0.double()  # the region as the bounds take it: x0 +- eps in float64
    pts = threat.sample(x64, 2000, g)
    attacked = [
        threat.project(
            x64,
            PGD(steps=20, loss=lambda z, y, j=j, s=s: s * z[:, j])(vit, x0, digits.y[:2], threat),
        )
        for j in range(10)
        for s in (1.0, -1.0)
    ]
    pts = torch.cat([pts, torch.stack(attacked)])
    with torch.no_grad():
        out = copy.deepcopy(vit).double()(pts.flatten(0, 1).double()).reshape(len(pts), 2, -1)
    widths = {}
    for method in METHODS:
        b = compute_bounds(vit, (threat, x0), method, alpha_iterations=5)
        lo, hi = b.lower.double(), b.upper.double()
        assert (out >= lo - 1e-9).all() and (out <= hi + 1e-9).all(), method
        widths[method] = float((hi - lo).sum())
    b32 = compute_bounds(vit, (threat, x0), "crown", dtype=torch.float32)
    assert (out >= b32.lower.double()).all() and (out <= b32.upper.double()).all()
    assert widths["alpha-crown"] <= widths["crown"] + 1e-6 < widths["ibp"]


@pytest.mark.slow
def test_audit_runs_every_stage_on_the_vit(monkeypatch, capsys, tmp_path, vit):
    code, _, err = run_cli(
        monkeypatch,
        capsys,
        "audit",
        "--model",
        "zoo:vit",
        "--data",
        "digits",
        "--profile",
        "quick",
        "--out",
        tmp_path,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "report.json").read_text())
    status = {s["name"]: s["status"] for s in report["stages"]}
    assert all(v == "ok" for k, v in status.items() if k != "smoothing"), status
    methods = {r["method"] for r in report["certified"]["per_method"] if r["n_bounded"]}
    assert {"ibp", "crown"} <= methods


def test_tightness_covers_products_and_softmax(vit, digits):
    from robustlab.bounds.tightness import tightness

    t = tightness(vit, digits.x[:3], 0.01)
    assert t.shape == (3,) and bool(((t > 0) & (t <= 1 + 1e-9)).all())
