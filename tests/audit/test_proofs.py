"""The certified section's proof features (ProFIt) in the audit."""

import json
import time
from dataclasses import replace

import torch
from torch import nn

from robustlab.audit import get_profile
from robustlab.audit.budget import Deadline
from robustlab.audit.proofs import proof_section, with_proof_features
from robustlab.audit.runner import Context
from robustlab.data import Dataset
from robustlab.model import LoadedModel


def _context(module, data, certified: dict) -> Context:
    loaded = LoadedModel(module, (1, 8, 8), "m", "0", "module")
    ctx = Context(loaded, data, get_profile("quick"), [0.0, 0.01], "inf", 0.01)
    ctx.certified = certified
    return ctx


def _deadline(seconds=60.0) -> Deadline:
    now = time.perf_counter()
    return Deadline(now, now + seconds, now + 2 * seconds)


def test_proof_features_of_the_first_certified_points(mlp, digits):
    data = Dataset("digits", digits.x[:12], digits.y[:12], 0.0, 1.0)
    cert = torch.zeros(12, dtype=torch.bool)
    cert[[1, 4, 5, 7]] = True
    ctx = _context(mlp, data, {0.01: cert})
    out = proof_section(ctx, _deadline(), lambda *a: None, limit=3)
    assert out["eps"] == 0.01
    assert [p["index"] for p in out["points"]] == [1, 4, 5][: len(out["points"])]
    assert out["points"], out
    for p in out["points"]:
        assert p["certified"] and p["preserved"] and p["broken"]
        assert len(p["features"]) < p["n_neurons"]


def test_nothing_certified_or_l2_gives_none(mlp, digits):
    data = Dataset("digits", digits.x[:4], digits.y[:4], 0.0, 1.0)
    none = torch.zeros(4, dtype=torch.bool)
    assert proof_section(_context(mlp, data, {0.01: none}), _deadline(), print) is None
    ctx = _context(mlp, data, {0.01: ~none})
    ctx.norm = "2"
    assert proof_section(ctx, _deadline(), print) is None


def test_without_crown_a_note(mlp, digits):
    data = Dataset("digits", digits.x[:2], digits.y[:2], 0.0, 1.0)
    ctx = _context(mlp, data, {0.01: torch.ones(2, dtype=torch.bool)})
    ctx.profile = replace(ctx.profile, methods=("ibp",))
    out = proof_section(ctx, _deadline(), lambda *a: None)
    assert out["points"] == [] and "need CROWN" in out["note"]


def test_a_nonlinear_head_is_a_note(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10), nn.Tanh())
    data = Dataset("digits", digits.x[:2], digits.y[:2], 0.0, 1.0)
    ctx = _context(model.eval(), data, {0.01: torch.ones(2, dtype=torch.bool)})
    out = proof_section(ctx, _deadline(), lambda *a: None)
    assert out["points"] == [] and "affine head" in out["note"]


def test_the_certified_stage_carries_them(mlp, digits):
    data = Dataset("digits", digits.x[:6], digits.y[:6], 0.0, 1.0)
    ctx = _context(mlp, data, None)

    def certify(ctx, deadline, say):
        ctx.certified = {0.01: torch.ones(6, dtype=torch.bool)}
        return {"methods": ["crown"], "curve": []}

    section = with_proof_features(certify, limit=2)(ctx, _deadline(), lambda *a: None)
    assert section["methods"] == ["crown"] and 1 <= len(section["proof_features"]["points"]) <= 2


def test_the_audit_page_shows_them(audited):
    """The recorded audit (zoo MLP, 40 digits): proof features of certified points at the
    headline eps in the certified section and on the page."""
    out, _, _ = audited
    report = json.loads((out / "report.json").read_text())
    pf = report["certified"]["proof_features"]
    assert pf["eps"] == report["headline"]["eps"] and pf["points"]
    assert all(p["preserved"] and p["broken"] for p in pf["points"])
    html = (out / "report.html").read_text()
    assert "Proof features" in html and 'alt="proof features"' in html
