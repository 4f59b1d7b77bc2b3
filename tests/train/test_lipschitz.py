"""1-Lipschitz training: prepared MLPs and CNNs are checked (not assumed) to have a Lipschitz
bound of 1; after training the exported ONNX file's bound, computed by the certificate, is 1 up
to float32 storage; PGD-L2 with restarts never breaks a point inside its certified radius; layers
that cannot be made 1-Lipschitz are refused by name."""

import copy

import onnx
import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab._onnx import torch_to_onnx
from robustlab.attacks import PGD, run_attack
from robustlab.bounds import certify, global_lipschitz, l2_radius
from robustlab.bounds.norms import matrix_norm_upper
from robustlab.data import load_digits_split
from robustlab.errors import RobustlabError
from robustlab.model import load_model
from robustlab.threat import LpBall
from robustlab.train import get_method, train
from robustlab.train.lipschitz import finish_lipschitz, make_lipschitz


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_prepared_models_are_one_lipschitz(arch):
    torch.manual_seed(0)
    model = zoo.build(arch)
    x = torch.rand(2, 1, 8, 8)
    make_lipschitz(model, x, generator=torch.Generator().manual_seed(0))
    bound = global_lipschitz(model, (1, 8, 8))
    assert bound.bound <= 1 + 1e-5
    if arch == "mlp":  # orthogonal (Björck) layers: each exactly 1 up to rounding
        norms = [matrix_norm_upper(m.weight) for m in model if isinstance(m, nn.Linear)]
        assert len(norms) == 3 and all(abs(v - 1) < 1e-5 for v in norms)
        assert bound.bound > 1 - 1e-5
    plain = finish_lipschitz(copy.deepcopy(model))  # a copy: the original keeps working
    assert all(type(m) in (nn.Linear, nn.Conv2d) for m in plain if hasattr(m, "weight"))
    with torch.no_grad():
        assert torch.allclose(plain(x), model(x), atol=1e-6)
    model(x).sum().backward()  # still trainable after the copy was finished


def test_refusals():
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(RobustlabError, match="BatchNorm"):
        make_lipschitz(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)), x)
    overlapping = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(3, 1), nn.Flatten(),
                                nn.Linear(72, 10))  # fmt: skip
    with pytest.raises(RobustlabError, match="1-Lipschitz layers; found MaxPool2d '1'"):
        make_lipschitz(overlapping, x)
    with pytest.raises(RobustlabError, match="bare Linear"):
        make_lipschitz(nn.Linear(64, 10), x.flatten(1))
    with pytest.raises(RobustlabError, match="eps"):
        get_method("lipschitz", eps=-1.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train_d = load_digits_split(train=True)
    test_d = load_digits_split(train=False).subset(200)
    torch.manual_seed(0)
    model = zoo.build("mlp")
    result = train(model, train_d, get_method("lipschitz", eps=0.5), 0.1, epochs=6,
                   batch_size=64, eval_data=test_d.subset(32))  # fmt: skip
    path = tmp_path_factory.mktemp("lip") / "lip.onnx"
    onnx.save(torch_to_onnx(model.eval(), (1, 8, 8)), str(path))
    return load_model(path).module, test_d, result


def test_exported_network_has_bound_one_and_certifies(trained):
    model, test_d, result = trained
    assert len(result.log) == 6 and result.log[-1]["train_certified_accuracy"] > 0.3
    bound = global_lipschitz(model, (1, 8, 8)).bound
    assert 1 - 1e-4 < bound <= 1 + 1e-5  # float32 weights: 1 to about 1e-7
    res = certify(model, test_d, LpBall("2", 0.5), "lipschitz")
    assert res.clean_accuracy > 0.85 and res.certified_accuracy > 0.35


def test_no_attack_breaks_a_certified_point(trained):
    model, test_d, _ = trained
    radii = l2_radius(model, test_d.x, test_d.y)
    for eps in (0.25, 0.5, 0.75):
        cert = radii.certified("2", eps, 64)
        adv = run_attack(model, test_d, LpBall("2", eps), PGD(steps=50, restarts=3, loss="margin"))
        assert cert.any() and not (cert & ~torch.tensor(adv.robust)).any()
    far = run_attack(model, test_d, LpBall("2", 3.0), PGD(steps=50, restarts=2))
    assert (~torch.tensor(far.robust) & radii.certified("2", 0.5, 64)).any()  # the attack works
