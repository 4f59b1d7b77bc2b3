"""What every API function accepts (robustlab.inputs): a loaded model, a module or a path; data
matched to the model; a threat model on the data's value range; eps on the 0-255 scale refused."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import robustlab as rl
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.threat import on_data, parse_eps, parse_eps_list

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Python API") : text.index("## Command line")]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = _python_blocks()[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (the README's own example)
    attack, data, threat = scope["attack"], scope["data"], scope["threat"]
    assert 0 <= attack.robust_accuracy <= attack.clean_accuracy
    assert attack.x_adv.shape == data.x.shape
    assert threat.contains(data.x, attack.x_adv).all()
    assert scope["cert"].certified_accuracy <= attack.robust_accuracy


def test_readme_verify_and_audit_example_names_real_functions():
    code = _python_blocks()[1]
    compile(code, "README.md", "exec")  # valid Python
    from robustlab.jobs import audit_job  # noqa: F401 (the names the example imports)
    from robustlab.report import write_report_dir  # noqa: F401
    from robustlab.verify import verify
    from robustlab.verify.verifier import VerifyResult

    assert "verify(" in code and hasattr(VerifyResult, "summary") and callable(verify)


@pytest.fixture(scope="module")
def zoo():
    model = rl.load_model("zoo:mlp")
    return model, rl.load_data("digits").subset(60)


def test_every_function_takes_load_model_directly(zoo):
    model, data = zoo
    threat = rl.LpBall("inf", 0.03)
    pgd = rl.PGD(steps=5)
    a_loaded = rl.run_attack(rl.load_model("zoo:mlp"), data, threat, pgd)
    a_module = rl.run_attack(model.module, data.matched_to(model.input_shape), threat, pgd)
    a_path = rl.run_attack("zoo:mlp", data, threat, pgd)
    assert a_loaded.robust == a_module.robust == a_path.robust
    c1 = rl.certify(rl.load_model("zoo:mlp"), data, threat, method="ibp")
    c2 = rl.certify(model.module, data.matched_to(model.input_shape), threat, method="ibp")
    assert c1.certified == c2.certified
    x = data.matched_to(model.input_shape).x[:3]
    b1 = rl.compute_bounds(rl.load_model("zoo:mlp"), (threat, x), "ibp")
    b2 = rl.compute_bounds(model.module, (threat, x), "ibp")
    assert torch.equal(b1.lower, b2.lower) and torch.equal(b1.upper, b2.upper)
    suite = rl.attacks.evaluate(rl.load_model("zoo:mlp"), data, [0.03], "inf", attacks=["fgsm"])
    assert suite.n == len(data)
    sm = rl.smoothing.smooth(rl.load_model("zoo:mlp"), data.subset(4), 0.25, n0=10, samples=50)
    assert len(sm.samples) == 4 and sm.n == 50
    ex = rl.explain.explain(rl.load_model("zoo:mlp"), x, "saliency")
    assert ex.attributions.shape == x.shape


def test_module_input_shape_is_inferred_from_the_data():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    loaded = rl.load_model(net)
    assert loaded.input_shape is None
    data = rl.load_data("digits").subset(8).matched_to(loaded.input_shape)  # None: kept as it is
    assert data.x.shape[1:] == (1, 8, 8)
    res = rl.run_attack(loaded, data, rl.LpBall("inf", 0.01), rl.FGSM())
    assert res.n == 8


def test_shape_mismatch_names_expected_and_found():
    data = rl.load_data("digits").subset(4)
    with pytest.raises(RobustlabError, match=r"shape \(1, 8, 8\).*expects inputs of shape \(30,\)"):
        rl.run_attack(torch.nn.Linear(30, 10), data, rl.LpBall("inf", 0.01), rl.FGSM())
    with pytest.raises(RobustlabError, match=r"shape \(1, 8, 8\).*expects \(3, 32, 32\)"):
        data.matched_to((3, 32, 32))
    with pytest.raises(RobustlabError, match="expected a model"):
        rl.certify(42, data, rl.LpBall("inf", 0.01))


def test_csv_rows_match_an_image_shape_like_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(5, 3, 4, 4)).astype(float)
    img = np.cumsum(img, axis=3) % 256  # smooth along rows: channel-major layout
    path = tmp_path / "rows.csv"
    np.savetxt(path, np.column_stack([np.arange(5) % 3, img.reshape(5, -1)]), delimiter=",")
    api = rl.load_data(path).matched_to((3, 4, 4))
    cli = rl.load_data(path, (3, 4, 4))
    assert api.x.shape == (5, 3, 4, 4) and torch.equal(api.x, cli.x)


def test_threat_range_comes_from_the_data():
    x = torch.linspace(-2.0, 2.5, 40).reshape(10, 4)
    data = rl.Dataset("wide", x, torch.zeros(10, dtype=torch.long), -2.16, 2.64)
    t = on_data(rl.LpBall("inf", 0.0), data)
    assert (t.lower, t.upper) == (-2.16, 2.64)
    lo, hi = t.box(data.x)
    assert (lo <= data.x).all() and (data.x <= hi).all()
    net = torch.nn.Linear(4, 2)
    cert = rl.certify(net, data, rl.LpBall("inf", 0.0), method="ibp")
    assert cert.certified_accuracy == cert.clean_accuracy  # eps 0: every correct point
    res = rl.run_attack(net, data, rl.LpBall("inf", 0.1), rl.PGD(steps=3))
    assert rl.LpBall("inf", 0.1, -2.16, 2.64).contains(data.x, res.x_adv).all()


def test_value_range_mismatch_is_an_error():
    data = rl.load_data("digits").subset(4)
    with pytest.raises(RobustlabError, match=r"value range \[-1, 1\] differs .*\[0, 1\]"):
        rl.certify("zoo:mlp", data, rl.LpBall("inf", 0.1, -1.0, 1.0))
    assert on_data(rl.LpBall("inf", 0.1, 0.0, 1.0), data).range_given  # the same range is fine


def test_eps_on_the_255_scale_is_refused_with_a_hint():
    data = rl.load_data("digits").subset(4)
    with pytest.raises(RobustlabError, match=r"eps 8 .*exceeds.*8/255"):
        rl.run_attack("zoo:mlp", data, rl.LpBall("inf", 8), rl.FGSM())
    with pytest.raises(RobustlabError, match="8/255"):
        rl.LpBall("inf", 8, 0.0, 1.0)
    with pytest.raises(RobustlabError, match="diagonal"):
        on_data(rl.LpBall("2", 9), data)  # sqrt(64) = 8 is the largest L2 distance
    assert on_data(rl.LpBall("2", 3), data).eps == 3  # L2 eps above 1 is common and fine
    assert on_data(rl.LpBall("inf", 1.0), data).eps == 1.0  # the width itself: allowed


def test_eps_fractions():
    assert parse_eps("8/255") == 8 / 255
    assert parse_eps_list("0, 2/255,8/255") == [0.0, 2 / 255, 8 / 255]
    for bad in ("8/0", "a/255", "1/2/3"):
        with pytest.raises(RobustlabError, match="fraction such as 8/255"):
            parse_eps(bad)


def test_bounds_to_dict():
    x = torch.zeros(2, 3)
    b = rl.compute_bounds(torch.nn.Linear(3, 2), (rl.LpBall("inf", 0.1), x), "ibp")
    d = b.to_dict()
    assert (
        torch.tensor(d["lower"]).shape == (2, 2)
        and (torch.tensor(d["upper"]) >= torch.tensor(d["lower"])).all()
    )


def test_cli_eps_on_the_255_scale_is_one_line(monkeypatch, capsys, tmp_path):
    from tests.conftest import run_cli

    args = ["--model", "zoo:mlp", "--data", "digits", "--n", "4", "--db", tmp_path / "r.sqlite"]
    code, _, err = run_cli(
        monkeypatch, capsys, "attack", *args, "--eps", "8", "--out", tmp_path / "a.json"
    )
    assert code == 2 and "write 8/255" in err and len(err.splitlines()) == 1
    code, _, err = run_cli(
        monkeypatch, capsys, "certify", *args, "--eps", "0,8/255", "--method", "ibp",
        "--out", tmp_path / "c.json",
    )  # fmt: skip
    assert code == 0, err
    import json

    curve = json.loads((tmp_path / "c.json").read_text())["curve"]
    assert [p["eps"] for p in curve] == [0.0, 8 / 255]


def test_frozen_restores_each_mode_and_flag_and_batched_logits_match():
    from torch import nn

    from robustlab.inputs import batched_logits, eval_mode, frozen

    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.train()
    model[2].weight.requires_grad_(False)  # a mixed state: restored as it was
    model[1].eval()
    with frozen(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert [m.training for m in model.modules()] == [True, True, False, True]
    assert [p.requires_grad for p in model.parameters()] == [True, True, False, True]
    x = torch.randn(10, 4)
    with eval_mode(model):
        full = model(x).detach()
    assert model.training
    got = batched_logits(model.eval(), x, batch_size=3)
    assert got.shape == (10, 3) and not got.requires_grad
    assert torch.allclose(got, full, atol=1e-6)


class _Limited(torch.nn.Module):
    """A model whose "device" runs out of memory above ``limit`` inputs per call."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, []

    def forward(self, x):
        self.calls.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_batches_that_run_out_of_memory_are_halved_and_the_size_remembered(mlp, digits):
    from robustlab.inputs import _FITTING, batched_logits

    model = _Limited(mlp, 20)
    x = digits.x[:100]
    out = batched_logits(model, x, batch_size=64)
    torch.testing.assert_close(out, batched_logits(mlp, x, batch_size=64))
    assert model.calls[:3] == [64, 32, 16] and _FITTING[model]["logits"] == 16
    model.calls.clear()
    batched_logits(model, x, batch_size=64)  # starts from the size that worked
    assert set(model.calls) <= {16, 4} and model.calls[0] == 16


def test_out_of_memory_in_certify_and_attacks_falls_back_to_smaller_batches(
    mlp, digits, monkeypatch
):
    import copy
    import importlib

    from robustlab.attacks import evaluate
    from robustlab.threat import LpBall

    certify_module = importlib.import_module("robustlab.bounds.certify")  # the module

    data = Dataset(digits.name, digits.x[:60], digits.y[:60], digits.lower, digits.upper)
    threat = LpBall("inf", 0.03, data.lower, data.upper)
    want = certify_module.certify(mlp, data, threat, "crown", batch_size=64)
    real, sizes = certify_module.compute_bounds, []

    def limited(model, region, *args, **kwargs):  # the bound computation's memory limit
        sizes.append(len(region[1]))
        if len(region[1]) > 9:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, region, *args, **kwargs)

    monkeypatch.setattr(certify_module, "compute_bounds", limited)
    own = copy.deepcopy(mlp)  # the fitting batch size is remembered per model
    got = certify_module.certify(own, data, threat, "crown", batch_size=64)
    assert got.certified == want.certified and max(sizes) > 9 and sizes[-1] <= 9
    kw = dict(attacks=["fgsm"], batch_size=64, checks=False)  # the checks take 64 points at once
    limited_model = _Limited(mlp, 40)
    a = evaluate(limited_model, data, [0.05], "inf", **kw)
    assert max(limited_model.calls) > 40  # ran out of memory once, then went on with halves
    assert a.robust == evaluate(mlp, data, [0.05], "inf", **kw).robust


def test_other_errors_are_not_mistaken_for_memory():
    from robustlab.inputs import batched_logits

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes"):
        batched_logits(Broken(), torch.zeros(4, 3), batch_size=4)
