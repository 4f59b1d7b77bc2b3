"""Emulated precision: known answers for the formats, emulation layer by layer, the bound engine
on weight-rounded models, and the table."""

import pytest
import torch
from torch import nn

from robustlab.bounds import compute_bounds
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.sensitivity.precision import FORMATS, emulate, parse_formats, round_weights
from robustlab.sensitivity.precision_eval import evaluate_precision, rank_correlation
from robustlab.threat import LpBall


def cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16, 8), nn.ReLU(),
        nn.Linear(8, 3),
    ).eval()  # fmt: skip


def data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Dataset("rand", torch.rand(n, 1, 4, 4, generator=g), torch.arange(n) % 3)


@pytest.mark.parametrize("name,dtype", [("float16", torch.float16), ("bfloat16", torch.bfloat16)])
def test_float_formats_round_to_the_nearest_representable_value(name, dtype):
    w = torch.randn(1000, dtype=torch.float32) * 10.0 ** torch.randint(-6, 4, (1000,))
    q = FORMATS[name].round_weight(w)
    assert torch.equal(q, w.to(dtype).float())  # round to nearest even, as torch's cast
    assert torch.equal(q.to(dtype).float(), q)  # representable exactly
    ulp = torch.finfo(dtype).eps
    finite = q.isfinite() & (w.abs() > torch.finfo(dtype).tiny)
    assert ((q - w).abs()[finite] <= 0.5 * ulp * w.abs()[finite] * 1.0001).all()


def test_int8_weights_use_one_symmetric_scale_per_output_channel():
    w = torch.tensor([[0.5, -1.27, 0.003], [2.54, 0.0, -0.01], [0.0, 0.0, 0.0]])
    q = FORMATS["int8"].round_weight(w)
    scale = torch.tensor([1.27, 2.54, 0.0]) / 127
    assert torch.allclose(q[0], torch.round(w[0] / scale[0]) * scale[0])
    assert q[0, 1] == pytest.approx(-1.27) and q[1, 0] == pytest.approx(2.54)  # the extremes exact
    assert torch.equal(q[2], w[2])  # an all-zero channel stays zero
    assert ((q - w).abs() <= scale[:, None] / 2 + 1e-7).all()
    q4 = FORMATS["int4"].round_weight(w)  # 7 levels a side
    assert torch.allclose(q4[0] / (1.27 / 7), torch.round(w[0] / (1.27 / 7)), atol=1e-5)


def test_emulating_one_layer_changes_only_that_layer():
    model, d = cnn(), data()
    m = emulate(model, FORMATS["int8"], ["3"], calibration=d.x)
    assert torch.equal(m.get_submodule("0").weight, model[0].weight)
    assert not torch.equal(m.get_submodule("3").inner.weight, model[3].weight)
    # by hand: the input of layer 3 quantised with max |x| / 127 over the calibration inputs
    with torch.no_grad():
        h = model[2](model[1](model[0](d.x)))
        s = float(h.abs().max()) / 127
        hq = torch.round(h / s).clamp(-127, 127) * s
        w = FORMATS["int8"].round_weight(model[3].weight)
        want = model[5](model[4](nn.functional.linear(hq, w, model[3].bias)))
        assert torch.allclose(m(d.x), want, atol=1e-6)


def test_emulated_activations_pass_gradients_straight_through():
    model, d = cnn(), data()
    m = emulate(model, FORMATS["int8"], calibration=d.x)
    x = d.x[:4].clone().requires_grad_(True)
    m(x).sum().backward()
    assert x.grad.abs().sum() > 0


def test_bounds_of_a_weight_rounded_model_contain_its_outputs():
    model, d = cnn(), data()
    m = round_weights(model, FORMATS["bfloat16"])
    threat = LpBall("inf", 0.05)
    b = compute_bounds(m, (threat, d.x[:3]), "crown")
    xs = threat.sample(d.x[:3], 200, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ys = torch.stack([m(x) for x in xs])
    assert (ys >= b.lower - 1e-6).all() and (ys <= b.upper + 1e-6).all()


def test_precision_table_rows_and_the_float32_baseline():
    model, d = cnn(), data(60)
    r = evaluate_precision(model, d, formats=["float16", "int8"], layer_formats=["int8"],
                           eps=0.02, certify_methods=["ibp"], robust_n=20, certify_n=20)  # fmt: skip
    assert r.baseline["format"] == "float32" and r.baseline["clean_drop"] == 0
    scopes = [(row["format"], row["scope"], row["activations"]) for row in r.rows]
    assert scopes[:4] == [("float16", "model", False), ("float16", "model", True),
                          ("int8", "model", False), ("int8", "model", True)]  # fmt: skip
    assert [s for s in scopes[4:]] == [("int8", n, True) for n in ("0", "3", "5")]
    for row in r.rows:
        assert 0 <= row["clean_accuracy"] <= 1 and 0 <= row["robust_accuracy"] <= 1
        assert row["certified_accuracy"] is not None and row["weight_error"] >= 0
    f16 = r.rows[1]
    assert abs(f16["clean_drop"]) <= 1 / 60 and abs(f16["loss_increase"]) < 1e-2


def test_bad_formats_and_layers_are_one_line_errors():
    with pytest.raises(RobustlabError, match="unknown formats entry 'int3'"):
        parse_formats("float16,int3")
    assert parse_formats("none") == [] and parse_formats("int8, float16") == ["int8", "float16"]
    with pytest.raises(RobustlabError, match="unknown layer 'nope'"):
        emulate(cnn(), FORMATS["float16"], ["nope"])
    with pytest.raises(RobustlabError, match="calibration"):
        emulate(cnn(), FORMATS["int8"])


def test_rank_correlation_is_none_when_undefined():
    assert rank_correlation([1, 2, 3], [2, 4, 9]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2], [1, 2]) is None
    assert rank_correlation([1, 2, 3], [0, 0, 0]) is None


@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_zoo_cnn_in_half_precision_keeps_its_accuracy(name):
    """Issue 20: the zoo CNN with weights and activations in float16 / bfloat16 keeps its digits
    test accuracy within 0.5 points of float32."""
    from robustlab import zoo
    from robustlab.data import load_digits_split
    from robustlab.sensitivity.precision import get_format

    model, test = zoo.pretrained("cnn").eval(), load_digits_split(train=False)
    half = emulate(model, get_format(name), activations=True)
    with torch.no_grad():
        full = (model(test.x).argmax(1) == test.y).double().mean()
        low = (half(test.x).argmax(1) == test.y).double().mean()
    assert abs(float(full - low)) <= 0.005, (float(full), float(low))
