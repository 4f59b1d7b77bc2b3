"""One network of every family of the shared benchmarks through load_model (gzipped as published):
it loads, its per-sample input shape follows VNN-LIB's flat order, and the onnxruntime check that
load_model runs passes. Skipped without ../shared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.errors import UnsupportedOperation
from robustlab.model import load_model

from ..conftest import SHARED

BENCH = SHARED / "benchmarks"
V23 = "vnncomp2023"
pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason="shared benchmarks are missing")

FAMILIES = [  # (file, per-sample input shape, outputs per sample)
    ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", (1, 1, 5), 5),
    ("oval21/nets/cifar_deep_kw.onnx", (3, 32, 32), 10),
    ("verivital/Convnet_avgpool.onnx", (1, 28, 28), 10),
    ("test/test_nano.onnx", (1,), 1),
    (f"{V23}/cgan/onnx/cGAN_imgSz32_nCh_1_transposedConvPadding_1.onnx.gz", (5,), 1),
    (f"{V23}/cgan/onnx/cGAN_imgSz32_nCh_3_upsample.onnx.gz", (5,), 1),
    (f"{V23}/vit/onnx/pgd_2_3_16.onnx.gz", (3, 32, 32), 10),
    (f"{V23}/traffic_signs_recognition/onnx/"
     "3_30_30_QConv_16_3_QConv_32_2_Dense_43_ep_30.onnx.gz", (30, 30, 3), 43),
    (f"{V23}/dist_shift/onnx/mnist_concat.onnx.gz", (792,), 10),
    (f"{V23}/collins_rul_cnn/onnx/NN_rul_small_window_20.onnx.gz", (1, 20, 20), 1),
    (f"{V23}/ml4acopf/onnx/14_ieee_ml4acopf.onnx.gz", (22,), 186),
    (f"{V23}/yolo/onnx/TinyYOLO.onnx.gz", (3, 52, 52), 21125),
    (f"{V23}/tllverifybench/onnx/tllBench_n=2_N=M=16_m=1_instance_1_0.onnx.gz", (2,), 1),
    (f"{V23}/cctsdb_yolo/onnx/patch-1.onnx.gz", (12296,), 1),
    ("vnnlib2/ACC/onnx/NET_0_1.5_5.onnx.gz", (3,), 1),
    ("vnnlib2/acasxu_2023/onnx/ACASXU_run2a_1_1_batch_2000.onnx.gz", (1, 1, 5), 5),
    ("vnnlib2/dist_shift_2023/onnx/mnist_concat.onnx.gz", (792,), 10),
]  # fmt: skip

SLOW = [
    (f"{V23}/cgan/onnx/cGAN_imgSz64_nCh_3.onnx.gz", (5,), 1),
    (f"{V23}/tllverifybench/onnx/tllBench_n=2_N=M=64_m=1_instance_7_3.onnx.gz", (2,), 1),
]


def _check(name: str, shape: tuple, outputs: int) -> None:
    path = BENCH / name
    if not path.is_file():
        pytest.skip(f"{name} is missing")
    loaded = load_model(path)
    assert loaded.input_shape == shape
    assert loaded.onnx_max_rel_error is not None and loaded.onnx_max_rel_error < 1e-4
    with torch.no_grad():
        y = loaded.module(torch.rand(2, *shape))
    assert y.shape[0] == 2 and y[0].numel() == outputs


@pytest.mark.parametrize(("name", "shape", "outputs"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_loads(name: str, shape: tuple, outputs: int) -> None:
    _check(name, shape, outputs)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "shape", "outputs"), SLOW, ids=[f[0] for f in SLOW])
def test_largest_networks_load(name: str, shape: tuple, outputs: int) -> None:
    _check(name, shape, outputs)


def test_float64_network_stays_float64() -> None:
    path = BENCH / "vnnlib2/ACC/onnx/NET_1_1.5_5.onnx.gz"
    if not path.is_file():
        pytest.skip("ACC is missing")
    loaded = load_model(path)
    assert all(p.dtype == torch.float64 for p in loaded.module.parameters())
    assert loaded.onnx_max_abs_error < 1e-12


def test_data_dependent_slicing_of_data_is_refused_by_name() -> None:
    """A slice of input-dependent data at a position read from the input values (not the
    constant masks of cctsdb_yolo, which load as case values): refused, naming the node."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array([k]), n) for k, n in ((0, "z"), (1, "o"), (4, "p"))]
    nodes = [
        helper.make_node("Gather", ["x", "p"], ["pf"], axis=0),
        helper.make_node("Cast", ["pf"], ["s"], to=TensorProto.INT64),
        helper.make_node("Add", ["s", "o"], ["e"]),
        helper.make_node("Slice", ["x", "s", "e", "z"], ["y"], name="crop"),
    ]
    graph = helper.make_graph(
        nodes, "crop", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    proto.ir_version = 8
    from robustlab._onnx import onnx_to_torch

    with pytest.raises(UnsupportedOperation, match="'Slice' at node 'crop'.*the model input"):
        onnx_to_torch(onnx.load_model_from_string(proto.SerializeToString()))
