"""FullCert: interval arithmetic encloses every point evaluation (float64 included); on a tiny MLP
with a tiny poisoning budget, retraining on sampled perturbed training sets (corners included)
stays inside the parameter boxes and never changes a certified prediction."""

import copy

import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab.data import Dataset, load_digits_split
from robustlab.errors import RobustlabError
from robustlab.train.fullcert import (
    certify_training,
    mlp_layers,
    point_forward,
    retrain,
)
from robustlab.train.intervals import Interval, matmul, relu_backward, softmax


def sample(box: Interval, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(box.lo.shape, generator=gen, dtype=torch.float64)
    corner = torch.rand(box.lo.shape, generator=gen) < 0.3  # some coordinates at the ends
    u = torch.where(corner, u.round(), u)
    return torch.minimum(torch.maximum(box.lo + u * (box.hi - box.lo), box.lo), box.hi)


def random_box(shape, gen, scale=3.0, width=0.5) -> Interval:
    c = torch.randn(shape, generator=gen, dtype=torch.float64) * scale
    r = torch.rand(shape, generator=gen, dtype=torch.float64) * width
    return Interval(c - r, c + r)


def test_interval_operations_enclose_point_evaluations():
    gen = torch.Generator().manual_seed(0)
    a, b = random_box((5, 7), gen), random_box((7, 4), gen)
    z = random_box((6, 10), gen, scale=20.0, width=2.0)
    pre, g = random_box((6, 10), gen), random_box((6, 10), gen)
    prod, soft, back = matmul(a, b), softmax(z), relu_backward(pre, g)
    for _ in range(200):
        pa, pb, pz, pp, pg = (sample(v, gen) for v in (a, b, z, pre, g))
        assert prod.contains(pa @ pb).all()
        assert soft.contains(torch.softmax(pz, 1)).all()
        assert back.contains(pg * (pp > 0)).all()
        pa2 = sample(a, gen)
        assert (a + a).contains(pa + pa2).all() and (a - a).contains(pa - pa2).all()
        assert a.sum(0).contains(pa.sum(0)).all() and a.scale(0.3).contains(0.3 * pa).all()
    assert (prod.lo <= prod.hi).all() and (soft.hi <= 1).all() and (soft.lo >= 0).all()


@pytest.fixture(scope="module")
def tiny():
    """A 64-8-10 MLP trained briefly on 120 digits, then certified for a short fine-tuning."""
    d = load_digits_split(train=True)
    train_d = Dataset("tiny", d.x[:120], d.y[:120])
    test = load_digits_split(train=False).subset(150)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(150):  # a reasonable starting point: fine-tuning is what FullCert bounds
        loss = nn.functional.cross_entropy(model(train_d.x), train_d.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, train_d, test


@pytest.mark.parametrize("delta", [1e-3, 2e-2])
def test_certified_predictions_agree_with_retraining(tiny, delta):
    model, train_d, test = tiny
    start = copy.deepcopy(model)
    kw = {"epochs": 2, "lr": 0.2, "batch_size": 40, "seed": 3}
    cert = certify_training(model, train_d, test, delta, **kw)
    certified, pred = torch.tensor(cert.certified), torch.tensor(cert.predictions)
    layers = mlp_layers(start)
    if delta == 1e-3:
        assert cert.certified_share > 0.5  # a tiny budget certifies most predictions
    gen = torch.Generator().manual_seed(1)
    changed = torch.zeros(len(test), dtype=torch.bool)
    for k in range(12):
        u = (torch.rand(train_d.x.shape, generator=gen, dtype=torch.float64) * 2 - 1) * delta
        if k < 4:  # corners of the poisoning box
            u = delta * torch.where(u >= 0, 1.0, -1.0).double()
        params = retrain(start, train_d.x.double() + u, train_d.y, **kw)
        for p, box in zip(params, cert.box, strict=True):
            assert box.contains(p).all()  # every retrained parameter inside its interval
        now = point_forward(layers, params, test.x.double()).argmax(1)
        assert (now[certified] == pred[certified]).all()
        changed |= now != pred
    nominal = retrain(start, train_d.x.double(), train_d.y, **kw)
    with torch.no_grad():
        assert torch.equal(point_forward(layers, nominal, test.x.double()).argmax(1), pred)
        assert torch.allclose(model[1].weight.double(), nominal[0], atol=1e-6)
    if delta == 2e-2:  # a larger budget: fewer certified, and some uncertified ones do change
        assert cert.certified_share < 1 and changed.any()
    assert [e["epoch"] for e in cert.log] == [1, 2]
    assert cert.to_dict().keys() >= {"certified_share", "certified_accuracy", "delta", "log"}


def test_refusals():
    d = load_digits_split(train=False).subset(20)
    with pytest.raises(RobustlabError, match="MLP of Linear and ReLU.*Conv2d"):
        certify_training(zoo.build("cnn"), d, d, 1e-3)
    with pytest.raises(RobustlabError, match="delta"):
        certify_training(zoo.build("mlp"), d, d, -1.0)
    with pytest.raises(RobustlabError, match="epochs"):
        certify_training(zoo.build("mlp"), d, d, 1e-3, epochs=0)
