"""A reader for the VNN-LIB subset used in VNN-COMP 2021-2024: ``declare-const`` of ``X_i`` /
``Y_j``, ``assert`` with ``<=``, ``>=``, ``<``, ``>``, ``and``, ``or`` nesting, and linear terms
(``+``, ``-``, ``*`` by a constant). Malformed input raises an error naming the line."""

from __future__ import annotations

import math
import re
from itertools import product
from pathlib import Path

import torch

from robustlab.errors import RobustlabError
from robustlab.verify.spec import Disjunct, Property, Spec

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VAR = re.compile(r"^([XY])_(\d+)$")

Linear = dict  # variable name -> coefficient; "" -> constant


class _Parser:
    def __init__(self, text: str, name: str) -> None:
        self.name = name
        self.tokens: list[tuple[str, int]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.split(";", 1)[0]
            self.tokens += [(t, lineno) for t in _TOKEN.findall(line)]
        self.pos = 0

    def fail(self, msg: str, line: int | None = None):
        if line is None:
            line = self.tokens[min(self.pos, len(self.tokens) - 1)][1] if self.tokens else 1
        raise RobustlabError(f"{self.name}:{line}: {msg}")

    def sexpr(self):
        """Nested lists of (token, line) leaves."""
        if self.pos >= len(self.tokens):
            self.fail("unexpected end of file: expected an expression (missing ')'?)")
        tok, line = self.tokens[self.pos]
        self.pos += 1
        if tok == ")":
            self.fail("unexpected ')'", line)
        if tok != "(":
            return (tok, line)
        items = []
        while True:
            if self.pos >= len(self.tokens):
                self.fail(f"unexpected end of file: '(' opened on line {line} is never closed")
            if self.tokens[self.pos][0] == ")":
                self.pos += 1
                return items
            items.append(self.sexpr())


def _head(e) -> tuple[str, int]:
    if not isinstance(e, list) or not e or isinstance(e[0], list):
        return ("", e[1] if isinstance(e, tuple) else 0)
    return e[0]


def _line(e) -> int:
    while isinstance(e, list):
        if not e:
            return 0
        e = e[0]
    return e[1]


def _term(p: _Parser, e, declared: set[str]) -> Linear:
    if isinstance(e, tuple):
        tok, line = e
        if tok in declared:
            return {tok: 1.0}
        try:
            return {"": float(tok)}
        except ValueError:
            p.fail(f"expected a number or a declared variable; found '{tok}'", line)
    op, line = _head(e)
    args = [_term(p, a, declared) for a in e[1:]]
    if op == "+":
        return _add(args)
    if op == "-":
        if len(args) == 1:
            return {k: -v for k, v in args[0].items()}
        return _add([args[0]] + [{k: -v for k, v in a.items()} for a in args[1:]])
    if op == "*":
        out = {"": 1.0}
        for a in args:
            if set(a) == {""}:
                out = {k: v * a[""] for k, v in out.items()}
            elif set(out) == {""}:
                out = {k: v * out[""] for k, v in a.items()}
            else:
                p.fail("expected a linear term: '*' of two variables", line)
        return out
    p.fail(f"expected a term (+, -, *, a number or a variable); found '{op}'", line)


def _add(terms: list[Linear]) -> Linear:
    out: Linear = {}
    for t in terms:
        for k, v in t.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _dnf(p: _Parser, e, declared: set[str]) -> list[list[Linear]]:
    """A formula as a list of conjunctions of atoms ``expr <= 0``."""
    op, line = _head(e)
    if op == "and":
        parts = [_dnf(p, a, declared) for a in e[1:]]
        out = []
        for combo in product(*parts):
            out.append([atom for conj in combo for atom in conj])
        if len(out) > 100_000:
            p.fail("the formula's disjunctive normal form is too large", line)
        return out
    if op == "or":
        return [conj for a in e[1:] for conj in _dnf(p, a, declared)]
    if op in ("<=", ">=", "<", ">"):
        if len(e) != 3:
            p.fail(f"expected ({op} a b) with two operands", line)
        a, b = _term(p, e[1], declared), _term(p, e[2], declared)
        if op in (">=", ">"):
            a, b = b, a
        return [[_add([a, {k: -v for k, v in b.items()}])]]
    p.fail(f"expected and, or, <=, >=, < or > in an assertion; found '{op}'", line)


def read_vnnlib(
    path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None
) -> Spec:
    """Parse a VNN-LIB file into a Spec (boxes with their unsafe output regions)."""
    path = Path(path)
    if not path.is_file():
        raise RobustlabError(f"VNN-LIB file not found: {path}")
    p = _Parser(path.read_text(), path.name)
    declared: set[str] = set()
    formula = []
    while p.pos < len(p.tokens):
        e = p.sexpr()
        op, line = _head(e)
        if op == "declare-const":
            if len(e) != 3 or not isinstance(e[1], tuple) or not _VAR.match(e[1][0]):
                p.fail("expected (declare-const X_i Real) or (declare-const Y_j Real)", line)
            declared.add(e[1][0])
        elif op == "assert":
            if len(e) != 2:
                p.fail("expected (assert FORMULA) with one formula", line)
            formula.append(e[1])
        else:
            p.fail(f"expected declare-const or assert; found '{op or e}'", line)
    if not formula:
        p.fail("no assertions")
    nx = 1 + max((int(v[2:]) for v in declared if v[0] == "X"), default=-1)
    ny = 1 + max((int(v[2:]) for v in declared if v[0] == "Y"), default=-1)
    if n_inputs is not None and nx != n_inputs:
        raise RobustlabError(
            f"{path.name}: declares {nx} inputs X_i but the network has {n_inputs}"
        )
    if n_outputs is not None and ny != n_outputs:
        raise RobustlabError(
            f"{path.name}: declares {ny} outputs Y_j but the network has {n_outputs}"
        )
    conjunctions = _dnf(p, [("and", 0), *formula], declared)
    return _to_spec(path.name, conjunctions, nx, ny)


def _to_spec(name: str, conjunctions: list[list[Linear]], nx: int, ny: int) -> Spec:
    boxes: dict[tuple, list[Disjunct]] = {}
    for conj in conjunctions:
        lo, hi = [-math.inf] * nx, [math.inf] * nx
        rows, rhs = [], []
        for atom in conj:  # atom: sum coeff * var + const <= 0
            vars_ = {k: v for k, v in atom.items() if k and v != 0.0}
            const = atom.get("", 0.0)
            kinds = {k[0] for k in vars_}
            if kinds == {"X"}:
                if len(vars_) != 1:
                    raise RobustlabError(
                        f"{name}: input constraints must bound one X_i each; found {atom}"
                    )
                ((var, coef),) = vars_.items()
                i, bound = int(var[2:]), -const / coef
                if coef > 0:
                    hi[i] = min(hi[i], bound)
                else:
                    lo[i] = max(lo[i], bound)
            elif kinds == {"Y"}:
                row = torch.zeros(ny, dtype=torch.float64)
                for k, v in vars_.items():
                    row[int(k[2:])] += v
                rows.append(row)
                rhs.append(-const)
            elif not kinds:
                if const > 0:  # a constant constraint that is false: this conjunction is empty
                    rows = None
                    break
            else:
                raise RobustlabError(f"{name}: a constraint mixes inputs and outputs: {atom}")
        if rows is None or any(a > b for a, b in zip(lo, hi, strict=True)):
            continue
        missing = [i for i in range(nx) if not (math.isfinite(lo[i]) and math.isfinite(hi[i]))]
        if missing:
            raise RobustlabError(f"{name}: inputs {missing} have no lower or upper bound")
        key = tuple(lo) + tuple(hi)
        disjunct = Disjunct(
            torch.stack(rows) if rows else torch.zeros(0, ny, dtype=torch.float64),
            torch.tensor(rhs, dtype=torch.float64),
        )
        boxes.setdefault(key, []).append(disjunct)
    props = tuple(
        Property(
            torch.tensor(k[:nx], dtype=torch.float64),
            torch.tensor(k[nx:], dtype=torch.float64),
            tuple(ds),
        )
        for k, ds in boxes.items()
    )
    return Spec(props, nx, ny)
