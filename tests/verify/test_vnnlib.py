import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.verify.vnnlib import read_vnnlib

from ..conftest import SHARED

HEAD = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"


def write(tmp_path, body: str):
    p = tmp_path / "p.vnnlib"
    p.write_text(HEAD + body)
    return p


def test_boxes_and_dnf(tmp_path):
    spec = read_vnnlib(
        write(
            tmp_path,
            """
; a comment
(assert (<= X_0 1.5))
(assert (>= X_0 -0.5))
(assert (or (and (<= X_1 1) (>= X_1 0)) (and (<= X_1 3) (>= X_1 2))))
(assert (or (and (<= Y_0 Y_1)) (and (>= (+ Y_0 (* 2 Y_1)) 3) (< Y_1 -1e-3))))
""",
        )
    )
    assert spec.n_inputs == 2 and spec.n_outputs == 2 and len(spec.properties) == 2
    p = spec.properties[0]
    assert p.lower.tolist() == [-0.5, 0.0] and p.upper.tolist() == [1.5, 1.0]
    assert len(p.disjuncts) == 2
    d0, d1 = p.disjuncts
    assert d0.C.tolist() == [[1.0, -1.0]] and d0.d.tolist() == [0.0]
    assert d1.C.tolist() == [[-1.0, -2.0], [0.0, 1.0]] and d1.d.tolist() == [-3.0, -1e-3]
    # violation <= 0 exactly when the unsafe region is reached
    assert p.violation(torch.tensor([[0.0, 1.0]])).item() <= 0
    assert p.violation(torch.tensor([[2.0, 1.0]])).item() > 0


@pytest.mark.parametrize(
    "body,message",
    [
        ("(assert (<= X_0 1)", "never closed"),
        ("(assert (<= X_0 1)))", "unexpected ')'"),
        ("(assert (<= X_0 Z_3))\n", "expected a number or a declared variable; found 'Z_3'"),
        (
            "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n"
            "(assert (<= (* Y_0 Y_1) 1))",
            "two variables",
        ),
        ("(check-sat)", "expected declare-const or assert"),
        (
            "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= Y_0 1))",
            "inputs [1] have no lower or upper bound",
        ),
        (
            "(assert (<= (+ X_0 Y_0) 1))\n(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))",
            "mixes inputs and outputs",
        ),
    ],
)
def test_malformed_files_name_line_and_expectation(tmp_path, body, message):
    with pytest.raises(
        RobustlabError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")
    ):
        read_vnnlib(write(tmp_path, body))


def test_error_names_the_line(tmp_path):
    with pytest.raises(RobustlabError, match=r"p.vnnlib:6:"):
        read_vnnlib(write(tmp_path, "(assert (<= X_0 1))\n(assert (foo X_1 1))\n"))


@pytest.mark.skipif(not (SHARED / "benchmarks").exists(), reason="shared benchmarks not present")
def test_reads_every_shared_property():
    files = sorted((SHARED / "benchmarks").rglob("*.vnnlib"))
    assert len(files) > 20
    for f in files:
        spec = read_vnnlib(f)
        assert spec.properties and all(p.disjuncts for p in spec.properties)
        assert all((p.lower <= p.upper).all() for p in spec.properties)
