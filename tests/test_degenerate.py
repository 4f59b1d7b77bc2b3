"""Degenerate regions have a documented behaviour: eps 0 evaluates exactly (attacks change nothing,
certified accuracy is clean accuracy, bounds enclose the exact output within float32's rounding),
a zero-width box is fine, and the zero settings of smoothing and transformations are named."""

import copy
import json

import pytest
import torch

import robustlab as rl
from robustlab.attacks import REGISTRY
from robustlab.errors import RobustlabError

from .conftest import run_cli as run
from .tolerance import network_magnitude, network_terms, rounding_atol

METHODS = ("ibp", "crown-ibp", "crown", "alpha-crown")


@pytest.fixture(scope="module")
def small(mlp, digits):
    return digits.subset(40)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_every_attack_at_eps_0_changes_nothing(mlp, small, norm):
    named = [a for a in sorted(REGISTRY) if a != "transfer"]  # transfer needs a surrogate
    for kw in ({"suite": "fast"}, {"suite": "standard"}, {"attacks": named}):
        r = rl.attacks.evaluate(mlp, small, [0.0], norm, **kw).to_dict()
        assert r["curve"][0]["robust_accuracy"] == r["clean_accuracy"], kw


def test_bounds_at_eps_0_and_on_a_zero_width_box_enclose_the_exact_output(mlp, small):
    x = small.x[:8]
    exact = copy.deepcopy(mlp).double()(x.double()).detach()  # the float32 weights, exactly
    # bounds are computed in float64 and rounded outward to float32: at most one float32 ulp
    # (<= eps32 |y|) on each side, plus float64 rounding of the network's sums
    slack = 2 * torch.finfo(torch.float32).eps * exact.abs() + rounding_atol(
        network_magnitude(mlp, x, 0).max(), network_terms(mlp, x), torch.float64
    )
    regions = [rl.Box(x, x), (rl.LpBall("inf", 0.0), x), (rl.LpBall("2", 0.0), x)]
    for method in METHODS:
        for region in regions:
            b = rl.compute_bounds(mlp, region, method)
            lo, hi = b.lower.double(), b.upper.double()
            assert ((lo <= exact) & (exact <= hi)).all(), method  # soundness: never loosened
            assert ((hi - lo) <= slack).all(), method


@pytest.mark.parametrize("method", METHODS)
def test_certified_accuracy_at_eps_0_is_clean_accuracy(mlp, small, method):
    r = rl.certify(mlp, small, rl.LpBall("inf", 0.0), method).to_dict()
    assert r["certified_accuracy"] == r["clean_accuracy"]


def test_cli_eps_0(monkeypatch, capsys, tmp_path):
    common = ["--model", "zoo:mlp", "--data", "digits", "--n", "30", "--eps", "0,0.05"]
    for command, key in (("attack", "robust_accuracy"), ("certify", "certified_accuracy")):
        out = tmp_path / f"{command}.json"
        code, _, err = run(monkeypatch, capsys, command, *common, "--out", out)
        assert code == 0, err
        r = json.loads(out.read_text())
        assert r["curve"][0]["eps"] == 0 and r["curve"][0][key] == r["clean_accuracy"]


def test_smoothing_needs_noise(mlp, small):
    """Randomized smoothing with sigma 0 is no smoothing: an error naming the value."""
    from robustlab.smoothing import smooth

    with pytest.raises(RobustlabError, match="sigma must be a positive number; found 0"):
        smooth(mlp, small, 0.0, n0=4, n=8)


def test_transformations_without_shifts(monkeypatch, capsys, tmp_path):
    """--max-shift 0: no translation views; the other families' reference view is the clean
    input, so their reference accuracy is the clean accuracy."""
    out = tmp_path / "k.json"
    args = ["corrupt", "--model", "zoo:mlp", "--data", "digits", "--n", "30", "--max-shift", "0"]
    code, _, err = run(
        monkeypatch, capsys, *args, "--corruptions", "fog", "--severities", "1", "--out", out
    )
    assert code == 0, err
    r = json.loads(out.read_text())
    families = {f["family"]: f for f in r["transformations"]["families"]}
    assert "translation" not in families and families
    for f in families.values():
        assert abs(f["reference_accuracy"] - r["clean_accuracy"]) < 1 / 60  # the same count of 30
