"""VNN-LIB 2.0: the reader against the 1.0 files of the same properties, the standard's syntax
files, malformed queries, relational queries (equal-to, isomorphic-to) with re-checked
counterexamples, and VNN-COMP 2026's counterexample format."""

import gzip
import math
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from robustlab._onnx import torch_to_onnx
from robustlab.errors import RobustlabError
from robustlab.verify import verify
from robustlab.verify.product import to_product
from robustlab.verify.relational import holds
from robustlab.verify.vnnlib import read_text, read_vnnlib
from robustlab.verify.vnnlib2 import Unsupported, from_v1, is_vnnlib2, parse, read_query

from ..conftest import SHARED

V2 = SHARED / "benchmarks" / "vnnlib2"
needs_v2 = pytest.mark.skipif(not V2.is_dir(), reason="shared VNN-LIB 2.0 benchmarks missing")
_SPEC = ("lower", "upper", "C", "d", "row_disjunct", "disjunct_region")


def _pairs(bench: str) -> list[tuple[Path, Path]]:
    out = []
    for v2 in sorted((V2 / bench / "vnnlib" / "v2").glob("*.gz")):
        out.append((V2 / bench / "vnnlib" / "v1" / v2.name.replace(".v2.", "."), v2))
    return out


@needs_v2
@pytest.mark.parametrize(
    "bench", ["acasxu_2023", pytest.param("dist_shift_2023", marks=pytest.mark.slow)]
)
def test_v2_files_give_the_v1_spec(bench):
    pairs = _pairs(bench)
    assert pairs
    for v1, v2 in pairs:
        s1, p = read_vnnlib(v1), to_product(read_query(v2))
        assert p.identity and not p.passthrough
        for a in _SPEC:
            assert torch.equal(getattr(s1, a), getattr(p.spec, a)), (v2.name, a)


@needs_v2
def test_acc_v2_files_are_read_as_their_v1_query():
    # the collection's ACC conversions declare shape [0] and then each element with SMT's
    # declare-fun: not valid 2.0, read with a warning as the shapes the elements imply
    pairs = _pairs("ACC")
    assert pairs
    for v1, v2 in pairs:
        with pytest.warns(UserWarning, match="declare-fun"):
            p2 = to_product(read_query(v2))
        p1 = to_product(from_v1(*read_text(v1, "VNN-LIB")))
        assert p1.passthrough == p2.passthrough
        for a in _SPEC:
            assert torch.equal(getattr(p1.spec, a), getattr(p2.spec, a)), (v2.name, a)
        for a in ("src", "scale", "m"):
            assert np.array_equal(getattr(p1, a), getattr(p2, a)), (v2.name, a)


def test_element_declarations_without_a_shape_zero_are_left_to_the_parser(tmp_path):
    body = (
        "(vnnlib-version <2.0>)\n(declare-network n (declare-input X Real [2]) "
        "(declare-output Y Real [1]))\n(declare-fun X[0] () Real)\n(assert (<= Y[0] 0.0))\n"
    )
    path = tmp_path / "q.vnnlib"
    path.write_text(body)
    with pytest.raises(RobustlabError) as e:
        read_query(path)
    assert "\n" not in str(e.value)


@needs_v2
def test_syntax_files_parse_or_name_the_construct():
    seen = {}
    for f in sorted((V2 / "syntax").glob("*.gz")):
        try:
            q = read_query(f)
        except RobustlabError as e:
            assert "\n" not in str(e)
            seen[f.name] = str(e)
            continue
        seen[f.name] = q
        try:
            to_product(q)
        except (Unsupported, RobustlabError) as e:
            assert "\n" not in str(e)
    assert "initialized" in seen["initialized.vnnlib.gz"]  # VNN-LIB 2.1: vnnlib 1.0.2 refuses
    multi = seen["multiple_networks.vnnlib.gz"]
    assert [(n.name, n.equal_to, n.isomorphic_to) for n in multi.networks] == [
        ("AcasXu", "", ""),
        ("AcasYu", "AcasXu", ""),
        ("AcasZu", "", "AcasXu"),
    ]
    hidden = to_product(seen["intermediate_nodes.vnnlib.gz"])  # N: outputs after Y
    assert [v.name for v in hidden.query.results] == ["Y", "N"]
    assert hidden.spec.n_outputs == 5 + 3 * hidden.passthrough


@needs_v2
@pytest.mark.parametrize(
    "net,prop,expected",
    [
        pytest.param("1_1", "prop_1", "holds", marks=pytest.mark.slow),
        ("2_1", "prop_2", "violated"),
    ],
)
def test_acasxu_verdicts_agree(net, prop, expected):
    onnx_path = V2 / "acasxu_2023" / "onnx" / f"ACASXU_run2a_{net}_batch_2000.onnx.gz"
    r1 = verify(onnx_path, V2 / "acasxu_2023/vnnlib/v1" / f"{prop}.vnnlib.gz", timeout=60)
    r2 = verify(onnx_path, V2 / "acasxu_2023/vnnlib/v2" / f"{prop}.v2.vnnlib.gz", timeout=60)
    assert r1.verdict == r2.verdict == expected
    if expected == "violated":
        values = _check_2026(r2.vnncomp(), V2 / "acasxu_2023/vnnlib/v2" / f"{prop}.v2.vnnlib.gz")
        assert values["X"].shape == (5,) and values["Y"].shape == (5,)


_HEADER = re.compile(r"^(\S+)\s+(\S+)\s+\[([0-9,\s]*)\]$")


def _check_2026(text: str, query_path, models=None) -> dict:
    """Read a result file as VNN-COMP 2026's scoring does (header ``NAME TYPE [dims]`` then
    one value a line per declared variable) and check it: each network re-run with
    onnxruntime at the inputs, every assertion evaluated at the replayed outputs."""
    q = read_query(query_path)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    assert lines.pop(0) == "sat"
    values, pos = {}, 0
    for net in q.networks:
        for v in net.inputs + net.outputs:
            name, dtype, dims = _HEADER.fullmatch(lines[pos]).groups()
            shape = [int(s) for s in dims.split(",")] if dims.strip() else []
            assert (name, dtype, shape) == (v.name, v.dtype, list(v.shape))
            n = math.prod(shape)
            values[name] = np.array([float(s) for s in lines[pos + 1 : pos + 1 + n]]).reshape(shape)
            pos += 1 + n
    assert pos == len(lines)
    for net in q.networks:
        path = (models or {}).get(net.equal_to or net.name)
        if path is None:
            continue
        raw = Path(path).read_bytes()
        sess = ort.InferenceSession(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        inp = sess.get_inputs()[0]
        dims = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        x = values[net.inputs[0].name].astype(np.float32).reshape(dims)
        out = np.asarray(sess.run(None, {inp.name: x})[0]).reshape(net.outputs[0].shape)
        values[net.inputs[0].name] = x.reshape(net.inputs[0].shape)
        values[net.outputs[0].name] = out
    assert holds(q, values)
    return values


# --- relational queries ----------------------------------------------------------------------

_ACAS_BOX = [(0.6, 0.62), (-0.02, 0.02), (-0.02, 0.02), (0.45, 0.5), (-0.5, -0.45)]


@needs_v2
@pytest.mark.slow
def test_monotonicity_equal_to_on_acasxu(tmp_path):
    """Moving the intruder farther (X2[0] >= X[0], all else equal) must not raise the
    clear-of-conflict score by more than 0.05: verified, or falsified with a checked
    counterexample."""
    onnx_path = V2 / "acasxu_2023/onnx/ACASXU_run2a_1_1_batch_2000.onnx.gz"
    box = "\n".join(
        f"(assert (>= X[{i}] {lo}))\n(assert (<= X[{i}] {hi}))"
        for i, (lo, hi) in enumerate(_ACAS_BOX)
    )
    same = "\n".join(f"(assert (== X2[{i}] X[{i}]))" for i in range(1, 5))
    q = f"""(vnnlib-version <2.0>)
(declare-network f (declare-input X Real [5]) (declare-output Y Real [5]))
(declare-network g (equal-to f) (declare-input X2 Real [5]) (declare-output Y2 Real [5]))
{box}
{same}
(assert (>= X2[0] X[0]))
(assert (<= X2[0] {_ACAS_BOX[0][1]}))
(assert (>= (- Y2[0] Y[0]) THRESHOLD))
"""
    for threshold in (0.05, 0.0):  # the second is reached at X2 = X
        (tmp_path / "mono.vnnlib").write_text(q.replace("THRESHOLD", str(threshold)))
        p = to_product(read_query(tmp_path / "mono.vnnlib"))
        assert p.M().shape == (10, 6) and p.passthrough  # X2[1:] defined by X[1:]; X2[0] free
        assert p.spec.lower[0, 5] >= _ACAS_BOX[0][0] - 1e-8  # implied by X2[0] >= X[0]
        r = verify(onnx_path, tmp_path / "mono.vnnlib", timeout=60)
        assert r.verdict in ("holds", "violated"), r
        assert threshold > 0 or r.verdict == "violated"
        if r.verdict == "violated":
            v = _check_2026(r.vnncomp(), tmp_path / "mono.vnnlib", {"f": onnx_path})
            assert (v["X2"][1:] == v["X"][1:]).all() and v["X2"][0] >= v["X"][0]


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 2))


def _isomorphic(tmp_path, noise: float, threshold: float | None = None):
    """f and a copy g with weights moved by ``noise``; unsafe when their first outputs differ
    by ``threshold`` (default: half the largest difference seen on 20000 samples)."""
    f = _mlp(0)
    g = _mlp(0)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for p in g.parameters():
            p.add_(noise * torch.randn(p.shape, generator=gen))
    onnx.save(torch_to_onnx(f, (3,)), tmp_path / "f.onnx")
    onnx.save(torch_to_onnx(g, (3,)), tmp_path / "g.onnx")
    box = "\n".join(f"(assert (>= X[{i}] -1.0))\n(assert (<= X[{i}] 1.0))" for i in range(3))
    same = "\n".join(f"(assert (== Z[{i}] X[{i}]))" for i in range(3))
    q = f"""(vnnlib-version <2.0>)
(declare-network f (declare-input X Real [3]) (declare-output Y Real [2]))
(declare-network g (isomorphic-to f) (declare-input Z Real [3]) (declare-output W Real [2]))
{box}
{same}
(assert (or (>= (- W[0] Y[0]) THRESHOLD) (<= (- W[0] Y[0]) (- THRESHOLD))))
"""
    xs = torch.rand(20000, 3, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        gap = (g(xs)[:, 0] - f(xs)[:, 0]).abs().max().item()
    (tmp_path / "iso.vnnlib").write_text(q.replace("THRESHOLD", repr(threshold or gap / 2)))
    return tmp_path / "f.onnx", tmp_path / "g.onnx", tmp_path / "iso.vnnlib", gap


@pytest.mark.parametrize("noise", [0.05, 0.2])
def test_isomorphic_copy_with_perturbed_weights_is_falsified(tmp_path, noise):
    f, g, q, gap = _isomorphic(tmp_path, noise)
    r = verify(f, q, timeout=30, networks={"g": g})
    assert r.verdict == "violated", r
    v = _check_2026(r.vnncomp(), q, {"f": f, "g": g})
    assert (v["Z"] == v["X"]).all() and abs(v["W"][0] - v["Y"][0]) >= gap / 2
    assert set(r.counterexample["variables"]) == {"X", "Y", "Z", "W"}


def test_isomorphic_copy_below_threshold_holds(tmp_path):
    f, g, q, gap = _isomorphic(tmp_path, 0.01, threshold=1.0)
    assert gap < 0.5
    assert verify(f, q, timeout=30, networks={"g": g}).verdict == "holds"


# --- malformed and unsupported queries -------------------------------------------------------

_HEAD = "(vnnlib-version <2.0>)\n(declare-network f (declare-input X Real [2]) (declare-output Y Real [1]))\n"
_BOX = "(assert (>= X[0] 0.0))\n(assert (<= X[0] 1.0))\n(assert (>= X[1] 0.0))\n(assert (<= X[1] 1.0))\n"


@pytest.mark.parametrize(
    "body,word",
    [
        (_BOX + "(assert (<= X[2] 1.0))", "X"),  # index out of range
        (_BOX + "(assert (<= X Y[0]))", "X"),  # a tensor where a number is expected
        (_BOX + "(assert (<= Q[0] 1.0))", "Q"),  # undeclared variable
        (_BOX + "(assert (<= Y[0] 1.0)", "("),  # unbalanced
    ],
)
def test_malformed_queries_are_one_line_errors(tmp_path, monkeypatch, capsys, body, word):
    from ..conftest import run_cli

    (tmp_path / "bad.vnnlib").write_text(_HEAD + body)
    with pytest.raises(RobustlabError) as e:
        read_query(tmp_path / "bad.vnnlib")
    assert "\n" not in str(e.value) and "bad.vnnlib:" in str(e.value)
    onnx.save(torch_to_onnx(nn.Sequential(nn.Linear(2, 1)), (2,)), tmp_path / "m.onnx")
    code, out, err = run_cli(
        monkeypatch, capsys, "verify", tmp_path / "m.onnx", tmp_path / "bad.vnnlib"
    )
    assert code == 2 and out.strip().splitlines()[-1] == "error"  # the verdict is the last line
    assert len(err.strip().splitlines()) == 1


def test_undeclared_network_is_one_line(tmp_path):
    text = (
        _HEAD
        + "(declare-network g (equal-to h) (declare-input Z Real [2]) (declare-output W Real [1]))\n"
        + _BOX
    )
    with pytest.raises(RobustlabError) as e:
        parse(text, "q.vnnlib")
    assert "\n" not in str(e.value) and "q.vnnlib:" in str(e.value)


def test_format_is_detected_from_the_text_gz_or_not(tmp_path):
    net = nn.Sequential(nn.Linear(2, 1))
    onnx.save(torch_to_onnx(net, (2,)), tmp_path / "m.onnx")
    text = _HEAD + _BOX + "(assert (>= Y[0] 100.0))"
    assert is_vnnlib2(text) and not is_vnnlib2("(declare-const X_0 Real)")
    (tmp_path / "a.vnnlib").write_text(text)
    (tmp_path / "b.txt").write_bytes(gzip.compress(text.encode()))
    bound = net[0].weight.abs().sum().item() + net[0].bias.abs().item()
    for name in ("a.vnnlib", "b.txt"):
        r = verify(tmp_path / "m.onnx", tmp_path / name, timeout=20)
        assert r.verdict == ("holds" if bound < 100 else "violated")


def _poly_instance(tmp_path, assertion: str):
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    onnx.save(torch_to_onnx(net, (2,)), tmp_path / "m.onnx")
    (tmp_path / "p.vnnlib").write_text(_HEAD + _BOX + assertion)
    xs = torch.rand(20000, 2)
    with torch.no_grad():
        y = net(xs)[:, 0]
    return tmp_path / "m.onnx", tmp_path / "p.vnnlib", xs, y


def test_polynomial_assertions_bilinear(tmp_path):
    """Products of variables are extra outputs bounded by the bilinear rule: an unreachable
    square holds, a reachable product of an input and an output is falsified and checked."""
    m, q, xs, y = _poly_instance(tmp_path, "(assert (>= (* Y[0] Y[0]) 100.0))")
    assert (y * y).max() < 100
    assert to_product(read_query(q)).products == ((0, 0),)
    assert verify(m, q, timeout=20).verdict == "holds"
    top = float((xs[:, 0] * y).max())
    target = float(f"{top - 0.1 * abs(top):.9f}")  # reached (VNN-LIB numbers: no exponent)
    m, q, xs, y = _poly_instance(tmp_path, f"(assert (>= (* X[0] Y[0]) {target:.9f}))")
    r = verify(m, q, timeout=20)
    assert r.verdict == "violated", r
    v = _check_2026(r.vnncomp(), q, {"f": m})
    assert v["X"][0] * v["Y"][0] >= target


def test_v1_input_rows_go_through_the_v2_path(tmp_path):
    """A 1.0 property whose input constraint spans two inputs (as ACC's) is read as the same
    query in 2.0 and verified; the result file stays in 1.0's format."""
    net = nn.Sequential(nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[0].bias.zero_()
    onnx.save(torch_to_onnx(net, (2,)), tmp_path / "m.onnx")
    head = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
    box = "(assert (>= X_0 0.0))\n(assert (<= X_0 1.0))\n(assert (>= X_1 0.0))\n(assert (<= X_1 1.0))\n"
    row = "(assert (<= (- X_0 X_1) -0.5))\n"  # y = x0 - x1 <= -0.5 on the whole input set
    (tmp_path / "holds.vnnlib").write_text(head + box + row + "(assert (>= Y_0 -0.4))")
    (tmp_path / "sat.vnnlib").write_text(head + box + row + "(assert (>= Y_0 -0.6))")
    assert verify(tmp_path / "m.onnx", tmp_path / "holds.vnnlib", timeout=20).verdict == "holds"
    r = verify(tmp_path / "m.onnx", tmp_path / "sat.vnnlib", timeout=20)
    assert r.verdict == "violated" and r.vnncomp().startswith("sat\n((X_0 ")
    x0, x1 = r.counterexample["x"]
    assert x0 - x1 <= -0.5 and r.counterexample["y"][0] >= -0.6


@pytest.mark.parametrize("seed", range(6))
def test_relational_verdicts_agree_with_sampling(tmp_path, seed):
    """Random pairs of small networks and relational queries: a 'holds' is never contradicted
    by 4000 samples of the input set, a 'violated' replays."""
    gen = torch.Generator().manual_seed(seed)
    f, g = _mlp(seed), _mlp(seed + 100)
    onnx.save(torch_to_onnx(f, (3,)), tmp_path / "f.onnx")
    onnx.save(torch_to_onnx(g, (3,)), tmp_path / "g.onnx")
    lo = (torch.rand(3, generator=gen) - 0.5).tolist()
    box = "\n".join(
        f"(assert (>= X[{i}] {v:.4f}))\n(assert (<= X[{i}] {v + 0.5:.4f}))"
        for i, v in enumerate(lo)
    )
    same = "\n".join(f"(assert (== Z[{i}] X[{i}]))" for i in (1, 2))
    xs = torch.rand(4000, 3, generator=gen) * 0.5 + torch.tensor(lo)
    zs = xs.clone()
    zs[:, 0] = xs[:, 0] + 0.2 * torch.rand(4000, generator=gen)  # Z[0] in [X[0], X[0] + 0.2]
    zs = zs.float().double()
    with torch.no_grad():
        gap = (g(zs.float())[:, 1] - f(xs.float())[:, 1]).double()
    threshold = float(gap.max()) + (0.3 if seed % 2 else -0.05)
    q = f"""(vnnlib-version <2.0>)
(declare-network f (declare-input X Real [3]) (declare-output Y Real [2]))
(declare-network g (isomorphic-to f) (declare-input Z Real [3]) (declare-output W Real [2]))
{box}
{same}
(assert (>= Z[0] X[0]))
(assert (<= (- Z[0] X[0]) 0.2))
(assert (>= (- W[1] Y[1]) {threshold:.6f}))
"""
    (tmp_path / "q.vnnlib").write_text(q)
    r = verify(
        tmp_path / "f.onnx", tmp_path / "q.vnnlib", timeout=20, networks={"g": tmp_path / "g.onnx"}
    )
    if r.verdict == "holds":
        assert gap.max() < threshold
    elif r.verdict == "violated":
        _check_2026(
            r.vnncomp(), tmp_path / "q.vnnlib", {"f": tmp_path / "f.onnx", "g": tmp_path / "g.onnx"}
        )
    if gap.max() >= threshold + 1e-6:
        assert r.verdict != "holds"
    # the margin 0.05 below the sampled maximum is found; 0.3 above it is proved
    assert r.verdict == ("holds" if seed % 2 else "violated"), r


def test_cli_network_option_and_2026_result_file(tmp_path, monkeypatch, capsys):
    from ..conftest import run_cli

    f, g, q, gap = _isomorphic(tmp_path, 0.2)
    out = tmp_path / "result.txt"
    code, stdout, _ = run_cli(
        monkeypatch, capsys, "verify", f, q, "--timeout", "30", "--network", f"g={g}", "--out", out
    )
    assert code in (0, None) and stdout.strip().splitlines()[-1] == "violated"
    _check_2026(out.read_text(), q, {"f": f, "g": g})
    code, stdout, err = run_cli(monkeypatch, capsys, "verify", f, q, "--network", "g")
    assert code == 2 and "NAME=PATH" in err and len(err.strip().splitlines()) == 1
    code, stdout, err = run_cli(monkeypatch, capsys, "verify", f, q)  # g's file missing
    assert code == 2 and "--network g=PATH" in err


def test_benchmark_runner_reads_2026_network_lists(tmp_path):
    """instances.csv rows as VNN-COMP 2026 writes them: a quoted list of (network, path) pairs,
    paths without .gz where only the gzipped file exists."""
    from robustlab.verify.runner import read_instances, run_benchmark

    f, g, q, gap = _isomorphic(tmp_path, 0.2)
    (tmp_path / "g.onnx.gz").write_bytes(gzip.compress(g.read_bytes()))
    g.unlink()
    pairs = "[('f', 'f.onnx'), ('g', 'g.onnx')]"
    (tmp_path / "instances.csv").write_text(f'"{pairs}",{q.name},30\n')
    (inst,) = read_instances(tmp_path / "instances.csv")
    onnx_path, networks = inst.models()
    assert onnx_path == str(f) and networks == {"f": str(f), "g": str(tmp_path / "g.onnx.gz")}
    rows = run_benchmark(
        tmp_path / "instances.csv", db=tmp_path / "r.sqlite", out_csv=tmp_path / "r.csv"
    )
    assert [r["result"] for r in rows] == ["violated"]
    (tmp_path / "bad.csv").write_text(f"\"[('f', \",{q.name},30\n")
    with pytest.raises(RobustlabError, match="network, path"):
        read_instances(tmp_path / "bad.csv")


def test_an_empty_band_holds_without_search(tmp_path):
    """isomorphic_acasxu_2026 writes its band as Y_g > Y_f + e AND Y_g < Y_f - e: an empty
    conjunction, which holds whatever the networks (found from the two rows, not by search)."""
    f, g, q, gap = _isomorphic(tmp_path, 0.5)
    text = q.read_text().rsplit("(assert (or", 1)[0]
    q.write_text(text + "(assert (and (> W[0] (+ Y[0] 0.05)) (< W[0] (- Y[0] 0.05))))\n")
    p = to_product(read_query(q))
    assert len(p.spec.disjunct_region) == 0
    assert verify(f, q, timeout=20, networks={"g": g}).verdict == "holds"
