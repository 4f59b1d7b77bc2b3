import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab.errors import RobustlabError
from robustlab.model import load_model


def test_module_is_put_in_eval_mode():
    net = nn.Sequential(nn.Linear(4, 2), nn.Dropout(0.5)).train()
    loaded = load_model(net)
    assert not loaded.module.training and loaded.input_shape == (4,) and loaded.kind == "module"


def test_zoo_name():
    loaded = load_model("zoo:mlp")
    assert loaded.input_shape == (1, 8, 8) and loaded.kind == "zoo"


def test_torchscript_file(tmp_path, mlp):
    path = tmp_path / "m.pt"
    torch.jit.script(mlp).save(str(path))
    loaded = load_model(path, input_shape=(1, 8, 8))
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(loaded.module(x), mlp(x)) and loaded.kind == "torchscript"


def test_state_dict_with_zoo_architecture(tmp_path, mlp):
    path = tmp_path / "w.pt"
    torch.save(mlp.state_dict(), path)
    loaded = load_model(path, arch="mlp")
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(loaded.module(x), mlp(x)) and loaded.kind == "state_dict"
    with pytest.raises(RobustlabError, match="not a TorchScript file"):
        load_model(path)
    with pytest.raises(RobustlabError, match="cannot load as a 'cnn' state dict"):
        load_model(path, arch="cnn")


def test_pickled_module_is_refused(tmp_path, mlp):
    """A full pickled module needs code execution to load: weights_only refuses it."""
    path = tmp_path / "full.pt"
    torch.save(mlp, path)
    with pytest.raises(RobustlabError):
        load_model(path, arch="mlp")


def test_onnx_file_is_checked_against_onnxruntime(tmp_path, mlp):
    import onnx

    from robustlab._onnx import torch_to_onnx

    path = tmp_path / "m.onnx"
    onnx.save(torch_to_onnx(mlp, zoo.INPUT_SHAPE), path)
    loaded = load_model(path)
    assert loaded.kind == "onnx" and loaded.input_shape == (1, 8, 8)
    assert loaded.onnx_max_abs_error is not None and loaded.onnx_max_abs_error < 1e-5
    x = torch.rand(5, 1, 8, 8)
    assert torch.allclose(loaded.module(x), mlp(x), atol=1e-5)


@pytest.mark.parametrize(
    "content,match",
    [(b"\x00garbage\xff" * 10, "not a valid ONNX model"), (b"", "not a valid ONNX model")],
)
def test_corrupt_onnx(tmp_path, content, match):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(RobustlabError, match=match):
        load_model(path)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(RobustlabError, match="not found"):
        load_model(tmp_path / "none.onnx")
    (tmp_path / "m.h5").write_bytes(b"x")
    with pytest.raises(RobustlabError, match="unknown model format"):
        load_model(tmp_path / "m.h5")
    with pytest.raises(RobustlabError, match="unknown zoo architecture"):
        load_model("zoo:resnet")
