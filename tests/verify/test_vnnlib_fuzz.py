"""Property-based tests of the VNN-LIB reader (hypothesis): random formulas read into a Spec with
the same meaning as the formula itself, and mutated or random files end in one RobustlabError
line (``verify``: the verdict ``error``), never another exception or a hang.

Profiles: ``ci`` (seeded, a few hundred cases, well under a minute) by default; ``long`` with
``ROBUSTLAB_FUZZ=long``."""

import gzip
import os
import time

import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.verify.vnnlib import read_vnnlib

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402

settings.register_profile(
    "vnnlib-ci",
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "vnnlib-long",
    max_examples=5000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = "vnnlib-long" if os.environ.get("ROBUSTLAB_FUZZ") == "long" else "vnnlib-ci"

small = st.integers(-4, 4).map(float)


@st.composite
def y_atom(draw, ny):
    """``(op lhs rhs)`` over outputs with small integer coefficients (exact arithmetic)."""
    op = draw(st.sampled_from(["<=", ">=", "<", ">"]))
    js = draw(st.lists(st.integers(0, ny - 1), min_size=1, max_size=3))
    coefs = [draw(st.sampled_from([-3, -2, -1, 1, 2, 3])) for _ in js]
    terms = [f"(* {c} Y_{j})" if c != 1 else f"Y_{j}" for c, j in zip(coefs, js, strict=True)]
    lhs = terms[0] if len(terms) == 1 else "(+ " + " ".join(terms) + ")"
    rhs = draw(small)
    return ("y", op, list(zip(coefs, js, strict=True)), rhs, f"({op} {lhs} {rhs!r})")


@st.composite
def x_atom(draw, nx):
    i = draw(st.integers(0, nx - 1))
    upper = draw(st.booleans())
    v = draw(small)
    text = (
        f"(<= X_{i} {v!r})"
        if upper
        else draw(st.sampled_from([f"(>= X_{i} {v!r})", f"(<= (- X_{i}) {-v!r})"]))
    )
    return ("x", i, upper, v, text)


@st.composite
def formula(draw, nx, ny, depth=0):
    """A tree of and / or over atoms: ("and"|"or", children) or an atom."""
    if depth >= 2 or draw(st.integers(0, 2)) == 0:
        return draw(st.one_of(y_atom(ny), y_atom(ny), x_atom(nx)))
    kind = draw(st.sampled_from(["and", "or"]))
    kids = draw(st.lists(formula(nx, ny, depth + 1), min_size=1, max_size=3))
    return (kind, kids)


def _text(f) -> str:
    if f[0] in ("and", "or"):
        return f"({f[0]} " + " ".join(_text(k) for k in f[1]) + ")"
    return f[-1]


def _holds(f, x, y) -> bool:
    """The formula at the point (x, y); strict comparisons read as non-strict, as the reader."""
    if f[0] == "and":
        return all(_holds(k, x, y) for k in f[1])
    if f[0] == "or":
        return any(_holds(k, x, y) for k in f[1])
    if f[0] == "x":
        _, i, upper, v, _ = f
        return x[i] <= v if upper else x[i] >= v
    _, op, terms, rhs, _ = f
    lhs = sum(c * y[j] for c, j in terms)
    return lhs <= rhs if op in ("<=", "<") else lhs >= rhs


@st.composite
def instance(draw):
    nx, ny = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    box = []
    for i in range(nx):
        lo = draw(small)
        hi = lo + draw(st.integers(0, 3))  # zero width included
        box += [("x", i, False, float(lo), f"(>= X_{i} {float(lo)!r})")]
        box += [("x", i, True, float(hi), f"(<= X_{i} {float(hi)!r})")]
    asserts = box + draw(st.lists(formula(nx, ny), min_size=1, max_size=3))
    return nx, ny, asserts


def _write(tmp_path, nx, ny, asserts, gz=False) -> str:
    head = [f"(declare-const X_{i} Real)" for i in range(nx)]
    head += [f"(declare-const Y_{j} Real)" for j in range(ny)]
    text = "\n".join(head + [f"(assert {_text(a)})" for a in asserts]) + "\n"
    p = tmp_path / ("f.vnnlib.gz" if gz else "f.vnnlib")
    p.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return p


@settings(settings.get_profile(PROFILE))
@given(instance(), st.booleans(), st.randoms(use_true_random=False))
def test_random_formulas_keep_their_meaning(tmp_path_factory, inst, gz, rnd):
    nx, ny, asserts = inst
    path = _write(tmp_path_factory.mktemp("f"), nx, ny, asserts, gz)
    try:
        spec = read_vnnlib(path)
    except RobustlabError as e:
        # only an empty box (some conjunction bounds an input from both sides inconsistently)
        assert "above its upper bound" in str(e), str(e)
        event("an empty box: error")
        return
    event(f"read: {len(spec)} regions")
    assert spec.n_inputs == nx and spec.n_outputs == ny
    assert (spec.lower <= spec.upper).all()
    grid = [float(v) for v in range(-5, 6)]
    for _ in range(60):
        x = [rnd.choice(grid) for _ in range(nx)]
        y = [rnd.choice(grid) for _ in range(ny)]
        truth = all(_holds(a, x, y) for a in asserts)
        xt = torch.tensor(x, dtype=torch.float64)
        inside = ((spec.lower <= xt) & (xt <= spec.upper)).all(1).nonzero().squeeze(1)
        if len(inside):
            yt = torch.tensor([y] * len(inside), dtype=torch.float64)
            read = bool((spec.violation(yt, inside) <= 0).any())
        else:
            read = False
        assert read == truth, (x, y, [_text(a) for a in asserts])


VALID = (
    "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
    "(declare-const Y_1 Real)\n; a comment\n(assert (<= X_0 1.5))\n(assert (>= X_0 -0.5))\n"
    "(assert (or (and (<= X_1 1) (>= X_1 0)) (and (<= X_1 3) (>= X_1 2))))\n"
    "(assert (or (and (<= Y_0 Y_1)) (and (>= (+ Y_0 (* 2 Y_1)) 3) (< Y_1 -1e-3))))\n"
)


@st.composite
def mutated(draw):
    data = bytearray(VALID.encode())
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[pos:pos] = draw(
                st.one_of(
                    st.binary(min_size=1, max_size=6),
                    st.sampled_from([b"(", b")", b" X_9 ", b" Y_7 ", b"nan", b"(or", b"1e400"]),
                )
            )
        elif kind == "replace" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            data = data[:pos]
        elif kind == "duplicate":
            data += data[pos : pos + 40]
    return bytes(data)


def _one_line_or_spec(path):
    try:
        spec = read_vnnlib(path)
    except RobustlabError as e:
        msg = str(e)
        assert msg and "\n" not in msg and "Traceback" not in msg
        return None
    assert (spec.lower <= spec.upper).all() and torch.isfinite(spec.lower).all()
    return spec


@settings(settings.get_profile(PROFILE))
@given(st.one_of(mutated(), st.binary(max_size=300)), st.booleans())
def test_mutated_and_random_files_are_one_line_errors(tmp_path_factory, data, gz):
    p = tmp_path_factory.mktemp("m") / "m.vnnlib"
    p.write_bytes(gzip.compress(data) if gz else data)
    start = time.monotonic()
    event("read" if _one_line_or_spec(p) is not None else "one-line error")
    assert time.monotonic() - start < 10


def test_verify_gives_the_error_verdict_on_garbage(tmp_path, monkeypatch, capsys):
    import onnx
    from torch import nn

    from robustlab._onnx import torch_to_onnx

    from ..conftest import run_cli

    onnx.save(torch_to_onnx(nn.Sequential(nn.Linear(2, 2)), (2,)), tmp_path / "n.onnx")
    (tmp_path / "g.vnnlib").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    code, out, err = run_cli(
        monkeypatch, capsys, "verify", tmp_path / "n.onnx", tmp_path / "g.vnnlib", "--timeout", "5"
    )
    assert code == 2 and out.strip() == "error"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "g.vnnlib:1: expected a text file" in lines[0], err
