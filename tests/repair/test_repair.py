"""Counterexample-guided repair: worst points, the repair loop, its acceptance on digits."""

import pytest
import torch
from torch import nn

from robustlab.data import load_digits_split
from robustlab.errors import RobustlabError
from robustlab.repair import (
    RepairResult,
    bound_violation,
    local_robustness_specs,
    repair,
    sub_boxes,
    worst_points,
)
from robustlab.verify.spec import robustness_spec

SHAPE = (1, 8, 8)


def _violated_indices(model, x, y, eps, want):
    """Indices of examples whose local robustness the PGD search breaks (the first ``want``)."""
    out = []
    for i, spec in enumerate(local_robustness_specs(x, y, eps, 10)):
        p = worst_points(model, spec, SHAPE)
        with torch.no_grad():
            v = spec.violation(model(p.float().view(-1, *SHAPE)).double(), torch.zeros(1).long())
        if v.item() <= 0:
            out.append(i)
        if len(out) == want:
            break
    return out


def test_worst_points_stay_in_the_box_and_find_the_flip():
    """A linear score y0 - y1 = sum(x) - 0.5 on [0, 1]^2: the worst point is the lower corner."""
    lin = nn.Linear(2, 2)
    lin.weight.data = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    lin.bias.data = torch.tensor([-0.5, 0.0])
    spec = robustness_spec(torch.tensor([0.5, 0.5]), 0, 0.4, 2)
    p = worst_points(lin, spec, (2,))
    assert ((p >= spec.lower) & (p <= spec.upper)).all()
    torch.testing.assert_close(p[0], torch.tensor([0.1, 0.1], dtype=torch.float64))


def test_result_dict_and_metrics():
    r = RepairResult(("violated", "holds", "timeout"), ("holds", "holds", "violated"), 0.9, 0.89)
    d = r.to_dict()
    assert (d["fixed"], d["holds_before"], d["holds_after"], d["violated_after"]) == (1, 1, 2, 1)
    assert not r.all_hold
    assert {m.name for m in r.metrics()} == {"fixed", "holds_after", "accuracy_after"}


def test_bad_input(mlp, digits):
    specs = local_robustness_specs(digits.x[:1], digits.y[:1], 0.01, 10)
    anchor = (digits.x, digits.y)
    with pytest.raises(RobustlabError, match="rounds must be a positive integer"):
        repair(mlp, specs, SHAPE, anchor, rounds=0)
    with pytest.raises(RobustlabError, match="at least one specification"):
        repair(mlp, [], SHAPE, anchor)
    with pytest.raises(RobustlabError, match="eps must be positive"):
        local_robustness_specs(digits.x[:1], digits.y[:1], 0.0, 10)


def test_repair_fixes_a_few_and_keeps_the_original(mlp):
    train = load_digits_split(train=True)
    idx = _violated_indices(mlp, train.x[:80], train.y[:80], 0.05, 4)
    assert len(idx) == 4
    specs = local_robustness_specs(train.x[idx], train.y[idx], 0.05, 10)
    with torch.no_grad():
        anchor = (train.x, mlp(train.x))
    before = [p.detach().clone() for p in mlp.parameters()]
    repaired, r = repair(mlp, specs, SHAPE, anchor, rounds=3, timeout=5)
    assert all(torch.equal(a, b) for a, b in zip(before, mlp.parameters(), strict=True))
    assert r.verdicts_before.count("violated") == 4
    assert r.fixed >= 2 and len(r.rounds) >= 1
    assert all(row["holds"] >= row["round"] - 1 for row in r.rounds)
    # every property proven after repair holds at its counterexamples' worst points too
    for spec, v in zip(specs, r.verdicts_after, strict=True):
        if v == "holds":
            p = worst_points(repaired, spec, SHAPE)
            with torch.no_grad():
                y = repaired(p.float().view(-1, *SHAPE)).double()
            assert spec.violation(y, torch.zeros(1).long()).item() > 0


@pytest.mark.slow
def test_acceptance_twenty_violated_properties_all_hold_after_repair(mlp):
    """Issue 21: an MLP on digits, >= 20 violated local-robustness properties at eps 0.05; after
    repair every property holds (verified) and test accuracy drops by at most one point."""
    train, test = load_digits_split(train=True), load_digits_split(train=False)
    idx = _violated_indices(mlp, train.x[:200], train.y[:200], 0.05, 20)
    assert len(idx) == 20
    specs = local_robustness_specs(train.x[idx], train.y[idx], 0.05, 10)
    with torch.no_grad():
        anchor = (train.x, mlp(train.x))
    _, r = repair(mlp, specs, SHAPE, anchor, test=(test.x, test.y), rounds=12, timeout=10)
    assert r.verdicts_before.count("violated") == 20
    assert r.all_hold, r.to_dict()["rounds"]
    assert r.accuracy_after >= r.accuracy_before - 0.01


def test_repair_command(monkeypatch, capsys, tmp_path):
    from robustlab.model import load_model

    from ..conftest import run_cli

    out = tmp_path / "rep" / "repaired.onnx"
    code, stdout, _ = run_cli(monkeypatch, capsys, "repair", "--model", "zoo:mlp", "--data",
                              "digits", "--eps", "0.01", "--n", "3", "--rounds", "1",
                              "--timeout", "5", "--out", out)  # fmt: skip
    assert code == 0, stdout
    assert "of 3 properties hold" in stdout
    assert load_model(out).module(torch.zeros(1, *SHAPE)).shape == (1, 10)
    html = (tmp_path / "rep" / "repaired.html").read_text()
    assert "Counterexample-guided repair" in html
    code, _, err = run_cli(monkeypatch, capsys, "repair", "--model", "zoo:mlp", "--data",
                           "digits", "--out", out)  # fmt: skip
    assert code == 2 and "either specification files or eps" in err
    for flags, message in (
        (("--boxes", "-1"), "boxes must be an integer >= 0"),
        (("--region-samples", "-2"), "region_samples must be an integer >= 0"),
        (("--box-weight", "-1"), "box_weight must be a finite number >= 0"),
        (("--domain", "d.vnnlib"), "domain samples the anchor without data"),
    ):
        code, _, err = run_cli(monkeypatch, capsys, "repair", "--model", "zoo:mlp", "--data",
                               "digits", "--eps", "0.01", "--n", "1", "--rounds", "1",
                               "--out", out, *flags)  # fmt: skip
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_repair_command_on_a_vnnlib_property(monkeypatch, capsys, tmp_path):
    """An ACAS Xu-shaped network violating ACAS Xu property 3 (the shared test_sat.onnx): after
    repair the exported ONNX is verified again from the files (onnxruntime re-checks)."""
    from robustlab.verify import verify

    from ..conftest import SHARED, run_cli

    onnx_path = SHARED / "benchmarks" / "test" / "test_sat.onnx"
    spec = SHARED / "benchmarks" / "test" / "test_prop.vnnlib"
    if not onnx_path.is_file():
        pytest.skip("shared benchmarks are missing")
    assert verify(onnx_path, spec, timeout=60).verdict == "violated"
    out = tmp_path / "sat.onnx"
    code, stdout, _ = run_cli(monkeypatch, capsys, "repair", "--model", onnx_path, "--spec", spec,
                              "--rounds", "4", "--timeout", "30", "--margin", "0.02",
                              "--out", out)  # fmt: skip
    assert code == 0, stdout
    assert "0 -> 1 of 1 properties hold" in stdout
    assert verify(out, spec, timeout=60).verdict == "holds"


def test_sub_boxes_tile_the_box():
    lo, hi = torch.tensor([0.0, -1.0, 2.0]), torch.tensor([4.0, 1.0, 2.5])
    blo, bhi = sub_boxes(lo, hi, 6)
    assert len(blo) == 8 and (blo >= lo).all() and (bhi <= hi).all() and (blo <= bhi).all()
    vol = (bhi - blo).prod(1)
    torch.testing.assert_close(vol.sum(), (hi - lo).prod())  # disjoint pieces, same volume
    torch.testing.assert_close(vol, vol[:1].expand(8))


def test_bound_violation_is_below_every_sampled_violation(mlp, digits):
    """The CROWN bound of a property's violation over each sub-box lies below the violation at
    every sampled point of the box (a lower bound), for a robustness spec of the zoo MLP."""
    spec = local_robustness_specs(digits.x[:1], digits.y[:1], 0.05, 10)[0]
    lo, hi = sub_boxes(spec.lower[0], spec.upper[0], 4)
    regs = torch.zeros(len(lo), dtype=torch.long)
    with torch.no_grad():
        bound = bound_violation(mlp, SHAPE, spec, regs, lo, hi)
    gen = torch.Generator().manual_seed(0)
    for i in range(len(lo)):
        pts = lo[i] + (hi[i] - lo[i]) * torch.rand(200, lo.shape[1], generator=gen, dtype=lo.dtype)
        with torch.no_grad():
            v = spec.violation(mlp(pts.float().view(-1, *SHAPE)).double(), torch.zeros(200).long())
        assert bound[i] <= v.min() + 1e-5


@pytest.mark.slow
def test_acasxu_property_8_on_2_9_repaired_and_verified_from_the_file(tmp_path):
    """Issue 21: a violated ACAS Xu property (8 on network 2_9) holds after repair, verified again
    from the exported ONNX; the anchor on the whole input domain keeps the advisories (the
    smallest output) outside the property's box; no sampled input of the box violates it."""
    import onnxruntime

    from robustlab.jobs.repair import repair_job
    from robustlab.verify import verify
    from robustlab.verify.vnnlib import read_vnnlib

    from ..conftest import SHARED

    acas = SHARED / "benchmarks" / "acasxu"
    net, prop = acas / "ACASXU_run2a_2_9_batch_2000.onnx", acas / "prop_8.vnnlib"
    if not net.is_file():
        pytest.skip("shared benchmarks are missing")
    out = tmp_path / "repaired.onnx"
    r = repair_job(net, specs=[prop], domain=acas / "prop_7.vnnlib", out=out, rounds=4, epochs=4,
                   lr=3e-4, margin=0.3, penalty=10.0, region_samples=4096, boxes=256,
                   timeout=30, n_anchor=8192)  # fmt: skip
    assert r["repair"]["verdicts_before"] == ["violated"]
    assert r["repair"]["verdicts_after"] == ["holds"]
    assert r["decisions_kept"]["argmin"] >= 0.98
    assert verify(out, prop, timeout=120).verdict == "holds"
    spec = read_vnnlib(prop, 5, 5)
    x = spec.lower + (spec.upper - spec.lower) * torch.rand(20000, 5, dtype=torch.float64)
    sess = onnxruntime.InferenceSession(str(out))
    name = sess.get_inputs()[0].name
    y = sess.run(None, {name: x.float().numpy().reshape(-1, 1, 1, 5)})[0].reshape(len(x), -1)
    assert spec.violation(torch.from_numpy(y).double(), torch.zeros(len(x)).long()).min() > 0
