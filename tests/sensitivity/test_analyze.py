"""Weight-noise curves and the whole analysis on small models."""

import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.sensitivity import analyze, noise_curves

from .nets import cnn, data


def test_noise_curves_start_at_the_clean_accuracy_and_leave_the_model_alone():
    model, d = cnn().eval(), data(60)
    before = [p.detach().clone() for p in model.parameters()]
    r = noise_curves(model, d, levels=[0.0, 0.5, 5.0], draws=2, eps=0.02, robust_n=20)
    with torch.no_grad():
        clean = float((model(d.x).argmax(1) == d.y).float().mean())
    assert [c["layer"] for c in r.curves] == ["model", "0", "3", "5"]
    for c in r.curves:
        p0 = c["points"][0]
        assert p0["sigma"] == 0 and p0["clean_accuracy"] == clean and p0["clean_std"] == 0
        assert all(p["robust_accuracy"] is not None for p in c["points"])
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(RobustlabError, match="levels must be finite numbers >= 0"):
        noise_curves(model, d, levels=[-0.1])


def test_analyze_joins_every_measure_per_layer():
    model, d = cnn().eval(), data(60)
    r = analyze(model, d, samples=4, iterations=5, noise_levels=[0.0, 0.1], draws=1, eps=0.02,
                robust_n=10, formats=["bfloat16"], layer_formats=["int8"],
                certify_methods=["ibp"], certify_n=10)  # fmt: skip
    out = r.to_dict()
    assert [row["name"] for row in out["layers"]] == ["0", "3", "5"]
    for row in out["layers"]:
        assert row["hessian_trace_ci"][0] <= row["hessian_trace"] <= row["hessian_trace_ci"][1]
        assert row["fisher_trace"] > 0 and "int8_loss_increase" in row
    (corr,) = out["correlations"]
    assert corr["format"] == "int8" and len(corr["layers"]) == 3
    names = {m["name"] for m in out["metrics"]}
    assert {"clean_accuracy", "hessian_trace", "top_hessian_eigenvalue", "bfloat16 clean_accuracy",
            "clean_accuracy@weight noise 0.1"} <= names  # fmt: skip
    assert all(isinstance(m["higher_is_better"], bool) for m in out["metrics"])
    total = sum(row["hessian_trace"] for row in out["layers"])
    assert out["whole_model"]["hessian_trace"] == pytest.approx(total)


def test_analyze_without_eps_noise_or_formats():
    r = analyze(cnn().eval(), data(30), samples=2, iterations=2, noise_levels=[], formats=[],
                layer_formats=[])  # fmt: skip
    assert r.noise is None and r.precision is None and r.correlations == []
    assert 0 <= r.clean_accuracy <= 1 and r.loss > 0
