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


def test_gzipped_files_are_read_by_their_magic_bytes(tmp_path):
    import gzip

    body = HEAD + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n"
    body += "(assert (>= X_1 0))\n(assert (<= Y_0 Y_1))\n"
    plain = read_vnnlib(write(tmp_path, body[len(HEAD) :]))
    for name in ("p.vnnlib.gz", "p-gzipped-without-suffix.vnnlib"):
        (tmp_path / name).write_bytes(gzip.compress(body.encode()))
        spec = read_vnnlib(tmp_path / name)
        assert torch.equal(spec.lower, plain.lower) and torch.equal(spec.C, plain.C)


def test_binary_garbage_is_one_line_naming_the_line(tmp_path):
    p = tmp_path / "garbage.vnnlib"
    p.write_bytes(b"(declare-const X_0 Real)\n\x89PNG\xff\xfe\x00\x01binary")
    with pytest.raises(RobustlabError, match=r"^garbage.vnnlib:2: expected a text file") as e:
        read_vnnlib(p)
    assert "\n" not in str(e.value)
    p.write_bytes(b"\x00\x01\x02 nul bytes")
    with pytest.raises(RobustlabError, match=r"garbage.vnnlib:1: .*control character 0x00"):
        read_vnnlib(p)
    p.write_bytes(b"\x1f\x8b\x08 truncated gzip")
    with pytest.raises(RobustlabError, match=r"not a valid gzip file"):
        read_vnnlib(p)


BOX = "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n"


@pytest.mark.parametrize(
    "body,line,var",
    [
        ("(assert (<= X_0 0.5))\n(assert (>= X_0 0.7))\n", 6, "X_0"),  # HEAD has 4 lines
        (BOX + "(assert (<= Y_0 0))\n(assert (>= X_1 2))\n", 10, "X_1"),
        (
            "(assert (<= X_1 1))\n(assert (>= X_1 0))\n(assert (or (and (>= X_0 0) (<= X_0 1) "
            "(<= Y_0 0))\n(and (>= X_0 3) (<= X_0 2) (<= Y_1 0))))\n",
            8,
            "X_0",
        ),
    ],
)
def test_empty_box_is_an_error_naming_variable_and_line(tmp_path, body, line, var):
    with pytest.raises(RobustlabError, match=rf"p.vnnlib:{line}: {var} has lower bound .* above"):
        read_vnnlib(write(tmp_path, body + "(assert (<= Y_0 0))\n"))


def test_zero_width_box_is_fine(tmp_path):
    body = (
        "(assert (<= X_0 0.3))\n(assert (>= X_0 0.3))\n(assert (<= X_1 1))\n(assert (>= X_1 1))\n"
    )
    spec = read_vnnlib(write(tmp_path, body + "(assert (<= Y_0 0))\n"))
    assert spec.lower.tolist() == spec.upper.tolist() == [[0.3, 1.0]]


@pytest.mark.parametrize(
    "body,message",
    [
        ("(" * 5000 + ")" * 5000, "nested at most 200 deep"),
        (BOX + "(assert (<= Y_0 nan))", "expected a finite decimal number; found 'nan'"),
        (BOX + "(assert (<= Y_0 1e999))", "expected a finite decimal number; found '1e999'"),
        (BOX + "(assert (<= (* 1e200 1e200 Y_0) 1))", "overflow"),
        (BOX + "(assert (<= (+ X_0 X_1) 1))", "bound one X_i each"),
        (BOX + "(assert (<= () 1))", "expected a term"),
        (BOX + "(assert)", "one formula"),
        ("(declare-const X_0 Int)", "expected \\(declare-const X_i Real\\)"),
        ("", "expected at least one assert"),
    ],
)
def test_malformed_input_gets_one_line(tmp_path, body, message):
    with pytest.raises(RobustlabError, match=message) as e:
        read_vnnlib(write(tmp_path, body))
    assert "\n" not in str(e.value)


def test_declare_fun_as_in_smt_lib(tmp_path):
    p = tmp_path / "f.vnnlib"
    p.write_text(
        "(declare-fun X_0 () Real)\n(declare-fun Y_0 () Real)\n"
        "(assert (<= (* -1.0 X_0) 0.0))\n(assert (<= X_0 50.0))\n(assert (or (<= Y_0 0) (>= Y_0 1)))"
    )
    spec = read_vnnlib(p)
    assert spec.lower.tolist() == [[0.0]] and spec.upper.tolist() == [[50.0]]
    assert len(spec.properties[0].disjuncts) == 2


def _many_pairs(tmp_path, n: int):
    """``(assert (or (and box_k out_k) ...))`` with n distinct boxes, X_1 bounded once."""
    parts = [
        f"(and (>= X_0 {k / n!r}) (<= X_0 {(k + 1) / n!r}) (>= Y_{k % 2} {k!r}))" for k in range(n)
    ]
    text = HEAD + "(assert (>= X_1 -1))\n(assert (<= X_1 1))\n(assert (or\n"
    text += "\n".join(parts) + "\n))\n"
    p = tmp_path / "many.vnnlib"
    p.write_text(text)
    return p


def test_a_disjunction_of_many_box_constraint_pairs_is_batched(tmp_path):
    n = 20_000
    spec = read_vnnlib(_many_pairs(tmp_path, n))
    assert len(spec) == n and spec.lower.shape == (n, 2) and spec.C.shape == (n, 2)
    assert spec.d.shape == (n,) and len(spec.disjunct_region) == n
    k = 12_345
    assert spec.lower[k].tolist() == [k / n, -1.0] and spec.upper[k].tolist() == [(k + 1) / n, 1.0]
    p = spec.property(k)
    assert p.disjuncts[0].C.tolist() == [[0.0, -1.0]] and p.disjuncts[0].d.tolist() == [-k]
    # batched violation agrees with the per-property one
    y = torch.tensor([[0.0, float(k)], [0.0, k - 1.0]])
    regions = torch.tensor([k, k])
    assert torch.equal(spec.violation(y, regions), p.violation(y))
