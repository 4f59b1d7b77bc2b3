import csv

import onnx
import pytest
import torch
from torch import nn

from robustlab._onnx import torch_to_onnx
from robustlab.errors import RobustlabError
from robustlab.verify import verify

from ..conftest import SHARED

BENCH = SHARED / "benchmarks"
needs_shared = pytest.mark.skipif(not BENCH.exists(), reason="shared benchmarks not present")


def _expected(folder: str) -> list[dict]:
    with (BENCH / folder / "expected.csv").open() as f:
        return list(csv.DictReader(f))


@needs_shared
@pytest.mark.parametrize(
    "row", _expected("test") if BENCH.exists() else [], ids=lambda r: r["onnx"]
)
def test_shared_test_instances(row):
    r = verify(BENCH / "test" / row["onnx"], BENCH / "test" / row["vnnlib"], timeout=60)
    assert r.verdict == row["expected"]
    if r.verdict == "violated":
        assert r.counterexample and len(r.counterexample["x"]) == 5
        assert r.vnncomp().startswith("sat\n((X_0 ")


ACAS_FAST = [  # (network, property, expected): quick ones, violated and holds
    ("1_1", "prop_4", "holds"),
    ("2_2", "prop_3", "holds"),
    ("4_5", "prop_4", "holds"),
    ("1_1", "prop_10", "holds"),
    ("1_9", "prop_1", "holds"),
    ("2_1", "prop_2", "violated"),
    ("4_1", "prop_2", "violated"),
    ("1_7", "prop_3", "violated"),
    ("1_8", "prop_4", "violated"),
    ("2_9", "prop_8", "violated"),
]


@needs_shared
@pytest.mark.parametrize("net,prop,expected", ACAS_FAST)
def test_acasxu_subset(net, prop, expected):
    r = verify(
        BENCH / "acasxu" / f"ACASXU_run2a_{net}_batch_2000.onnx",
        BENCH / "acasxu" / f"{prop}.vnnlib",
        timeout=60,
    )
    if expected == "violated":
        assert r.verdict == "violated"
    else:
        assert r.verdict in ("holds", "timeout", "unknown")  # never 'violated' where it holds
        assert r.verdict == "holds", f"not solved within the test budget: {r}"


def _bump_net(center, width: float, peak: float, hidden_gradient: bool) -> nn.Module:
    """Output ``peak - ||x - c||_1 / width`` (optionally behind a ReLU, so that gradients vanish
    outside the bump): above 0.5 only in a tiny region around ``c`` when ``peak > 0.5``."""
    n = len(center)
    first = nn.Linear(n, 2 * n)
    w = torch.zeros(2 * n, n)
    for i in range(n):
        w[2 * i, i], w[2 * i + 1, i] = 1.0, -1.0
    first.weight.data = w
    first.bias.data = torch.tensor([v for c in center for v in (-c, c)], dtype=torch.float32)
    second = nn.Linear(2 * n, 1)
    second.weight.data = torch.full((1, 2 * n), -1.0 / width)
    second.bias.data = torch.tensor([peak])
    layers = [first, nn.ReLU(), second]
    if hidden_gradient:
        layers += [nn.ReLU()]
    return nn.Sequential(*layers)


def _bump_instance(tmp_path, n, seed, width, peak, hidden):
    g = torch.Generator().manual_seed(seed)
    center = (torch.rand(n, generator=g) * 0.8 + 0.1).tolist()
    net = _bump_net(center, width, peak, hidden)
    onnx.save(torch_to_onnx(net, (n,)), tmp_path / "bump.onnx")
    lines = [f"(declare-const X_{i} Real)" for i in range(n)] + ["(declare-const Y_0 Real)"]
    lines += [f"(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))" for i in range(n)]
    lines += ["(assert (>= Y_0 0.5))"]
    (tmp_path / "bump.vnnlib").write_text("\n".join(lines))
    return tmp_path / "bump.onnx", tmp_path / "bump.vnnlib"


@pytest.mark.parametrize(
    "n,width,hidden", [(2, 1e-3, False), (2, 1e-3, True), (3, 1e-2, True), (5, 0.05, True)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_planted_counterexample_is_never_called_holds(tmp_path, n, width, hidden, seed):
    onnx_path, spec = _bump_instance(tmp_path, n, seed, width, 1.0, hidden)
    r = verify(onnx_path, spec, timeout=20)
    assert r.verdict != "holds"
    if r.verdict == "violated":  # the counterexample really is one
        x = torch.tensor(r.counterexample["x"])
        assert (x >= 0).all() and (x <= 1).all() and r.counterexample["y"][0] >= 0.5


@pytest.mark.parametrize("n", [2, 3])
def test_bump_below_threshold_holds(tmp_path, n):
    onnx_path, spec = _bump_instance(tmp_path, n, 3, 1e-2, 0.49, True)
    assert verify(onnx_path, spec, timeout=30).verdict == "holds"


def test_bad_instance_is_an_error_verdict(tmp_path):
    (tmp_path / "x.vnnlib").write_text("(declare-const X_0 Real)")
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")
    r = verify(tmp_path / "bad.onnx", tmp_path / "x.vnnlib", timeout=5)
    assert r.verdict == "error" and "not a valid ONNX model" in r.message
    assert r.summary().startswith("error in ")


def test_missing_file_raises(tmp_path):
    (tmp_path / "x.vnnlib").write_text("(declare-const X_0 Real)")
    with pytest.raises(RobustlabError, match="model file not found"):
        verify(tmp_path / "missing.onnx", tmp_path / "x.vnnlib", timeout=5)
    with pytest.raises(RobustlabError, match="property file not found"):
        verify(tmp_path / "x.vnnlib", tmp_path / "missing.vnnlib", timeout=5)
    with pytest.raises(RobustlabError, match="did you mean 'relu-split'"):
        verify(tmp_path / "x.vnnlib", tmp_path / "x.vnnlib", strategy="relu-splt")
