"""A reader for the VNN-LIB subset used in VNN-COMP 2021-2024: ``declare-const`` of ``X_i`` /
``Y_j``, ``assert`` with ``<=``, ``>=``, ``<``, ``>``, ``and``, ``or`` nesting, and linear terms
(``+``, ``-``, ``*`` by a constant); plain or gzipped (detected by its magic bytes).

Reading takes time linear in the file's size: assertions without ``or`` are applied once to a
shared box, and a disjunction of (box, output constraint) pairs, as in ``(assert (or (and box...
out...) ...))``, becomes one region per distinct box without multiplying anything out (only
several independent disjunctions multiply, and that product is capped). Malformed input raises
a RobustlabError naming the file, the line and what was expected; an empty box (a lower bound
above an upper bound) is an error naming the variable and the line; a zero-width box is fine.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from itertools import product
from pathlib import Path

import numpy as np
import torch

from robustlab.errors import RobustlabError
from robustlab.verify.spec import Spec

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VAR = re.compile(r"^([XY])_(\d+)$")
MAX_DEPTH = 200  # nesting of parentheses (real files nest 3-5 deep)
MAX_DNF_ATOMS = 5_000_000  # atoms after multiplying out independent disjunctions

Linear = dict  # variable name -> coefficient; "" -> constant


def read_text(path: str | Path, what: str) -> tuple[str, str]:
    """The text of a plain or gzipped file (gzip recognised by its magic bytes), and its name
    for messages; binary content is a RobustlabError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise RobustlabError(f"{what} file not found: {path}")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise RobustlabError(f"{path.name}: not a valid gzip file ({e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise RobustlabError(
            f"{path.name}:{line}: expected a text file; found byte 0x{data[e.start]:02x}, "
            "which is not UTF-8 text"
        ) from None
    bad = next((c for c in text if c < " " and c not in "\t\n\r\f\v"), None)
    if bad is not None:
        line = text.count("\n", 0, text.index(bad)) + 1
        raise RobustlabError(
            f"{path.name}:{line}: expected a text file; found the control character "
            f"0x{ord(bad):02x}"
        )
    return text, path.name


def _show(tok: str) -> str:
    """A token as it may appear in a one-line message."""
    tok = "".join(c if c.isprintable() else "?" for c in tok)
    return tok if len(tok) <= 40 else tok[:37] + "..."


class _Parser:
    def __init__(self, text: str, name: str) -> None:
        self.name = name
        self.tokens: list[tuple[str, int]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if ";" in line:
                line = line.split(";", 1)[0]
            self.tokens += [(t, lineno) for t in _TOKEN.findall(line)]
        self.pos = 0

    def fail(self, msg: str, line: int | None = None):
        if line is None:
            line = self.tokens[min(self.pos, len(self.tokens) - 1)][1] if self.tokens else 1
        raise RobustlabError(f"{self.name}:{line}: {msg}")

    def sexpr(self):
        """The next expression: nested lists of (token, line) leaves (iterative, depth-capped)."""
        if self.pos >= len(self.tokens):
            self.fail("unexpected end of file: expected an expression (missing ')'?)")
        tok, line = self.tokens[self.pos]
        self.pos += 1
        if tok == ")":
            self.fail("unexpected ')'", line)
        if tok != "(":
            return (tok, line)
        stack: list[tuple[list, int]] = [([], line)]
        while True:
            if self.pos >= len(self.tokens):
                self.fail(
                    f"unexpected end of file: '(' opened on line {stack[-1][1]} is never closed"
                )
            tok, line = self.tokens[self.pos]
            self.pos += 1
            if tok == "(":
                if len(stack) >= MAX_DEPTH:
                    self.fail(f"expected expressions nested at most {MAX_DEPTH} deep", line)
                stack.append(([], line))
            elif tok == ")":
                done, _ = stack.pop()
                if not stack:
                    return done
                stack[-1][0].append(done)
            else:
                stack[-1][0].append((tok, line))


def _head(e) -> tuple[str, int]:
    if not isinstance(e, list) or not e or isinstance(e[0], list):
        return ("", _line(e))
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
            v = float(tok)
        except ValueError:
            p.fail(f"expected a number or a declared variable; found '{_show(tok)}'", line)
        if not math.isfinite(v) or "_" in tok:
            p.fail(f"expected a finite decimal number; found '{_show(tok)}'", line)
        return {"": v}
    op, line = _head(e)
    if not op:
        p.fail("expected a term (+, -, *, a number or a variable); found '('", _line(e))
    args = [_term(p, a, declared) for a in e[1:]]
    if op == "+" and args:
        return _add(args)
    if op == "-" and args:
        if len(args) == 1:
            return {k: -v for k, v in args[0].items()}
        return _add([args[0]] + [{k: -v for k, v in a.items()} for a in args[1:]])
    if op == "*" and args:
        out = {"": 1.0}
        for a in args:
            if set(a) == {""}:
                out = {k: v * a[""] for k, v in out.items()}
            elif set(out) == {""}:
                out = {k: v * out[""] for k, v in a.items()}
            else:
                p.fail("expected a linear term: '*' of two variables", line)
        return out
    p.fail(f"expected a term (+, -, *, a number or a variable); found '{_show(op)}'", line)


def _add(terms: list[Linear]) -> Linear:
    out: Linear = {}
    for t in terms:
        for k, v in t.items():
            out[k] = out.get(k, 0.0) + v
    return out


def _atom(p: _Parser, e, declared: set[str]):
    """``(op a b)`` as ``("x", i, is_upper, value, line)`` (a bound on one input), ``("y",
    {j: coef}, rhs, line)`` (``sum coef Y_j <= rhs``) or ``("c", holds, line)`` (no variable)."""
    op, line = _head(e)
    if len(e) != 3:
        p.fail(f"expected ({op} a b) with two operands", line)
    a, b = _term(p, e[1], declared), _term(p, e[2], declared)
    if op in (">=", ">"):
        a, b = b, a
    expr = _add([a, {k: -v for k, v in b.items()}])  # expr <= 0
    const = expr.pop("", 0.0)
    coefs = {k: v for k, v in expr.items() if v != 0.0}
    if any(not math.isfinite(v) for v in coefs.values()) or not math.isfinite(const):
        p.fail("expected finite coefficients (the constraint's numbers overflow)", line)
    kinds = {k[0] for k in coefs}
    if not kinds:
        return ("c", const <= 0, line)
    if kinds == {"Y"}:
        return ("y", {int(k[2:]): v for k, v in coefs.items()}, -const, line)
    if kinds == {"X"} and len(coefs) == 1:
        ((var, coef),) = coefs.items()
        return ("x", int(var[2:]), coef > 0, -const / coef, line)
    if kinds == {"X"}:
        p.fail(
            "expected input constraints that bound one X_i each (a box); found one over "
            f"{len(coefs)} inputs",
            line,
        )
    p.fail("expected constraints on inputs or on outputs; this one mixes inputs and outputs", line)


def _dnf(p: _Parser, e, declared: set[str]) -> list[list]:
    """A formula as a list of conjunctions of atoms."""
    op, line = _head(e)
    if op == "and":
        parts = [_dnf(p, a, declared) for a in e[1:]]
        return _product(p, parts, line)
    if op == "or":
        return [conj for a in e[1:] for conj in _dnf(p, a, declared)]
    if op in ("<=", ">=", "<", ">"):
        return [[_atom(p, e, declared)]]
    p.fail(f"expected and, or, <=, >=, < or > in an assertion; found '{_show(op or '(')}'", line)


def _product(p: _Parser, parts: list[list[list]], line: int) -> list[list]:
    """Every choice of one conjunction per part, joined; refused when the result would hold
    more than MAX_DNF_ATOMS atoms."""
    size = math.prod(len(q) for q in parts)
    atoms = sum(sum(len(c) for c in q) * (size // len(q)) for q in parts if q)
    if atoms > MAX_DNF_ATOMS:
        p.fail(
            f"the formula's disjunctive normal form is too large ({size} conjunctions, "
            f"{atoms} constraints; at most {MAX_DNF_ATOMS})",
            line,
        )
    if len(parts) == 1:
        return parts[0]
    return [[atom for conj in combo for atom in conj] for combo in product(*parts)]


def _conjuncts(e) -> list:
    """The operands of nested top-level ``and``s."""
    out, stack = [], [e]
    while stack:
        f = stack.pop()
        if _head(f)[0] == "and":
            stack.extend(reversed(f[1:]))
        else:
            out.append(f)
    return out


def read_vnnlib(
    path: str | Path, n_inputs: int | None = None, n_outputs: int | None = None
) -> Spec:
    """Parse a VNN-LIB file (plain or gzipped) into a Spec."""
    text, name = read_text(path, "VNN-LIB")
    p = _Parser(text, name)
    declared: set[str] = set()
    formula = []
    while p.pos < len(p.tokens):
        e = p.sexpr()
        op, line = _head(e)
        if op in ("declare-const", "declare-fun"):
            fun = op == "declare-fun"  # SMT-LIB's (declare-fun X_0 () Real)
            if (
                len(e) != 3 + fun
                or not isinstance(e[1], tuple)
                or not _VAR.match(e[1][0])
                or (fun and e[2] != [])
                or not isinstance(e[-1], tuple)
                or e[-1][0] != "Real"
            ):
                p.fail("expected (declare-const X_i Real) or (declare-const Y_j Real)", line)
            declared.add(e[1][0])
        elif op == "assert":
            if len(e) != 2:
                p.fail("expected (assert FORMULA) with one formula", line)
            formula.append(e[1])
        else:
            found = op or (e[0] if isinstance(e, tuple) else "(")
            p.fail(f"expected declare-const or assert; found '{_show(found)}'")
    if not formula:
        p.fail("expected at least one assert; found none")
    nx = 1 + max((int(v[2:]) for v in declared if v[0] == "X"), default=-1)
    ny = 1 + max((int(v[2:]) for v in declared if v[0] == "Y"), default=-1)
    if n_inputs is not None and nx != n_inputs:
        raise RobustlabError(f"{name}: declares {nx} inputs X_i but the network has {n_inputs}")
    if n_outputs is not None and ny != n_outputs:
        raise RobustlabError(f"{name}: declares {ny} outputs Y_j but the network has {n_outputs}")
    base: list = []  # atoms that hold in every conjunction
    branches: list[list[list]] = []  # independent disjunctions
    for f in (c for g in formula for c in _conjuncts(g)):
        conj = _dnf(p, f, declared)
        if len(conj) == 1:
            base += conj[0]
        else:
            branches.append(conj)
    conjunctions = _product(p, branches, 1)
    return _to_spec(p, base, conjunctions, nx, ny)


class _Box:
    """Lower / upper bounds with the line that set each (for messages)."""

    def __init__(self, nx: int) -> None:
        self.lo, self.hi = np.full(nx, -np.inf), np.full(nx, np.inf)
        self.lo_line, self.hi_line = np.zeros(nx, np.int64), np.zeros(nx, np.int64)

    def apply(self, atoms) -> None:
        for _, i, upper, v, line in atoms:
            if upper and v < self.hi[i]:
                self.hi[i], self.hi_line[i] = v, line
            elif not upper and v > self.lo[i]:
                self.lo[i], self.lo_line[i] = v, line

    def copy(self) -> _Box:
        b = _Box(0)
        b.lo, b.hi, b.lo_line, b.hi_line = (
            self.lo.copy(),
            self.hi.copy(),
            self.lo_line.copy(),
            self.hi_line.copy(),
        )
        return b

    def check(self, p: _Parser) -> None:
        empty = np.nonzero(self.lo > self.hi)[0]
        if len(empty):
            i = int(empty[0])
            p.fail(
                f"X_{i} has lower bound {self.lo[i]!r} above its upper bound {self.hi[i]!r} "
                "(an empty box)",
                int(max(self.lo_line[i], self.hi_line[i])),
            )
        missing = np.nonzero(~(np.isfinite(self.lo) & np.isfinite(self.hi)))[0]
        if len(missing):
            shown = missing[:10].tolist()
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise RobustlabError(f"{p.name}: inputs {shown}{more} have no lower or upper bound")


def _to_spec(p: _Parser, base: list, conjunctions: list[list], nx: int, ny: int) -> Spec:
    base_box = _Box(nx)
    base_rows = []
    for a in base:
        if a[0] == "c" and not a[1]:
            conjunctions = []  # a false constant: the unsafe region is empty
        elif a[0] == "y":
            base_rows.append(a)
    base_box.apply(a for a in base if a[0] == "x")
    regions: dict[tuple, int] = {}
    boxes: list[_Box] = []
    disjunct_region, rows, row_disjunct = [], [], []
    for conj in conjunctions:
        if any(a[0] == "c" and not a[1] for a in conj):
            continue  # this conjunction is empty
        own = [a for a in conj if a[0] == "x"]
        key = tuple(sorted((a[1], a[2], a[3]) for a in own))
        r = regions.get(key)
        if r is None:
            box = base_box
            if own:
                box = base_box.copy()
                box.apply(own)
            box.check(p)
            r = regions[key] = len(boxes)
            boxes.append(box)
        k = len(disjunct_region)
        disjunct_region.append(r)
        for a in base_rows + [a for a in conj if a[0] == "y"]:
            rows.append(a)
            row_disjunct.append(k)
    if not boxes:  # nothing can be unsafe: one box, no disjunct
        base_box.check(p)
        boxes.append(base_box)
    order = sorted(range(len(disjunct_region)), key=lambda k: disjunct_region[k])
    rank = {k: n for n, k in enumerate(order)}
    C = np.zeros((len(rows), ny))
    d = np.zeros(len(rows))
    by_row = sorted(range(len(rows)), key=lambda i: rank[row_disjunct[i]])
    for n, i in enumerate(by_row):
        _, coefs, rhs, line = rows[i]
        for j, v in coefs.items():
            C[n, j] += v
        d[n] = rhs
    return Spec(
        torch.from_numpy(np.stack([b.lo for b in boxes])),
        torch.from_numpy(np.stack([b.hi for b in boxes])),
        torch.from_numpy(C),
        torch.from_numpy(d),
        torch.tensor([rank[row_disjunct[i]] for i in by_row], dtype=torch.long),
        torch.tensor([disjunct_region[k] for k in order], dtype=torch.long),
        nx,
        ny,
    )
