"""A VNN-LIB 2.0 query turned into the verifier's :class:`Spec` over the product of its networks.

The inputs of all networks, in declared order, form one flat vector ``x`` (``X[i, j]``
row-major, as VNN-LIB 1.0's flat ``X_k``); equalities between two inputs that fix one from the
other (``X2[0] == X1[0]``, with float32-exact coefficients) define it, so the specification's
boxes range over the remaining *free* inputs ``z`` only (``x = M z + m``); every other input
constraint over several variables becomes a row over the product network's outputs followed by
``x`` itself (exact, never dropped), and box bounds it implies are added. ``<`` is read as
``<=`` and ``!=`` as ``<`` or ``>`` (both sound for ``holds``); every counterexample is checked
against every assertion of the query exactly (:mod:`robustlab.verify.relational`). A
polynomial assertion's products of variables become extra outputs of the product network
(bounded by the bilinear rule, McCormick planes), so it is linear over those. A hidden node (an
intermediate ONNX tensor) is one more output of its network (:mod:`robustlab.verify.wiring`
exposes it), after the network's declared outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robustlab.errors import RobustlabError
from robustlab.verify.spec import Spec
from robustlab.verify.vnnlib import _product, _to_spec
from robustlab.verify.vnnlib2 import Query, Unsupported

_OPS = {
    "LessEqual": "<=",
    "LessThan": "<",
    "GreaterEqual": ">=",
    "GreaterThan": ">",
    "Equal": "==",
    "NotEqual": "!=",
}


Poly = dict  # tuple of variable keys (a monomial) -> coefficient; () -> constant


def _poly(e, index: dict) -> Poly:
    """An arithmetic expression as a polynomial over flat variable keys."""
    kind = type(e).__name__
    if kind == "Var":
        return {(index[e.name] + _flat(e),): 1.0}
    if kind in ("Float", "Int", "IntExpr"):
        return {(): float(e.value)}
    if kind == "Literal":
        return {(): float(e.lexeme)}
    if kind == "Negate":
        return {k: -v for k, v in _poly(e.expr, index).items()}
    if kind == "Plus":
        return _sum([_poly(a, index) for a in e.args])
    if kind == "Minus":
        rest = [{k: -v for k, v in _poly(a, index).items()} for a in e.rest]
        return _sum([_poly(e.head, index)] + rest)
    if kind == "Multiply":
        out: Poly = {(): 1.0}
        for a in e.args:
            p = _poly(a, index)
            out = _sum(
                [
                    {tuple(sorted(k1 + k2)): v1 * v2}
                    for k1, v1 in out.items()
                    for k2, v2 in p.items()
                ]
            )
        return out
    raise Unsupported(f"the arithmetic expression {kind} is not supported")


def _flat(v) -> int:
    """The row-major position of ``X[i, j]`` in its variable."""
    pos = 0
    for i, s in zip(v.indices, v.shape, strict=True):
        pos = pos * int(s) + int(i)
    return pos


def _sum(ps: list[Poly]) -> Poly:
    out: Poly = {}
    for p in ps:
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + v
    return out


@dataclass(frozen=True)
class Product:
    """A query turned into a Spec over the free inputs ``z`` of the product of its networks:
    ``x = M z + m`` gives every network's inputs (flat, in declared order); the product network's
    outputs are every network's outputs, then ``x`` itself when ``passthrough``, then each
    product of variables that an assertion uses."""

    query: Query
    spec: Spec
    src: np.ndarray  # (n_x,), int64: the free input each input is computed from
    scale: np.ndarray  # (n_x,), float64: x_i = scale_i z_{src_i} + m_i (float32-exact)
    m: np.ndarray  # (n_x,)
    passthrough: bool
    # per product of variables in an assertion (an extra output after ``x``): the columns of
    # its factors among the outputs and ``x`` (bounded by the bilinear rule)
    products: tuple[tuple[int, ...], ...] = ()

    @property
    def n_free(self) -> int:
        return self.spec.n_inputs

    def M(self, rows: slice = slice(None)) -> np.ndarray:
        """The rows ``rows`` of ``M`` (dense: for a product network's input maps)."""
        src, scale = self.src[rows], self.scale[rows]
        out = np.zeros((len(src), self.n_free))
        out[np.arange(len(src)), src] = scale
        return out

    def inputs(self, z: np.ndarray) -> np.ndarray:
        """Every network's inputs ``x = M z + m`` (float64) at the free inputs ``z``."""
        return self.scale * np.asarray(z, dtype=np.float64)[self.src] + self.m

    @property
    def identity(self) -> bool:
        """Whether ``x = z`` (no input defined by another, no input row, no product)."""
        return (
            len(self.src) == self.n_free
            and not self.passthrough
            and not self.products
            and np.array_equal(self.src, np.arange(len(self.src)))
            and (self.scale == 1.0).all()
            and not self.m.any()
        )


def _exact32(v: float) -> bool:
    return math.isfinite(v) and float(np.float32(v)) == v


def to_product(query: Query) -> Product:
    """The query as a Spec over its product network's free inputs (see the module's text)."""
    for n in query.networks:
        other = n.equal_to or n.isomorphic_to
        if other:
            ref = next(r for r in query.networks if r.name == other)
            if [v.shape for v in ref.inputs] != [v.shape for v in n.inputs] or [
                v.shape for v in ref.outputs
            ] != [v.shape for v in n.outputs]:
                raise RobustlabError(
                    f"{query.name}: network {n.name} is related to {other} but its inputs or "
                    "outputs have other shapes"
                )
    index, n_x = {}, 0
    for v in query.inputs:
        index[v.name], n_x = n_x, n_x + v.numel
    n_y = 0
    for v in query.results:  # outputs and hidden nodes: their keys follow the inputs'
        index[v.name], n_y = n_x + n_y, n_y + v.numel
    if n_x == 0:
        raise RobustlabError(f"{query.name}: the query declares no input")
    # every assertion in disjunctive normal form of atoms (poly, op, line)
    clauses = []
    for a in query.assertions:
        line = _line(a)
        conj = []
        for c in a.expr.to_dnf():
            alts = [[]]
            for cmp in c:
                op = _OPS.get(type(cmp).__name__)
                if op is None:
                    raise Unsupported(f"line {line}: {type(cmp).__name__} is not supported")
                p = _sum([_poly(cmp.lhs, index), {k: -v for k, v in _poly(cmp.rhs, index).items()}])
                if op == "!=":
                    alts = [x + [(p, "<", line)] for x in alts] + [
                        x + [(p, ">", line)] for x in alts
                    ]
                else:
                    alts = [x + [(p, op, line)] for x in alts]
            conj += alts
        clauses.append(conj)
    # definitions x_v = s x_u + c from equalities over two inputs that hold everywhere
    define: dict[int, tuple[int, float, float]] = {}
    used = set()
    for ci, conj in enumerate(clauses):
        if len(conj) != 1:
            continue
        for ai, (p, op, _) in enumerate(conj[0]):
            lin = {k[0]: v for k, v in p.items() if len(k) == 1 and v != 0.0}
            nonlinear = any(len(k) > 1 and v != 0.0 for k, v in p.items())
            if op != "==" or nonlinear or len(lin) != 2 or any(k >= n_x for k in lin):
                continue
            (u, a), (v, b) = sorted(lin.items())
            s, c = -a / b, -p.get((), 0.0) / b
            if (
                v in define
                or any(v == d[0] for d in define.values())
                or not (_exact32(s) and _exact32(c) and s * b == -a and c * b == -p.get((), 0.0))
            ):
                continue
            while u in define:  # u itself defined: x_v = s (s2 w + c2) + c
                w, s2, c2 = define[u]
                s, c, u = s * s2, s * c2 + c, w
                if not (_exact32(s) and _exact32(c)):
                    break
            else:
                if u != v:
                    define[v] = (u, s, c)
                    used.add((ci, ai))
    free = [i for i in range(n_x) if i not in define]
    zpos = {i: k for k, i in enumerate(free)}
    src, scale, m = np.arange(n_x), np.ones(n_x), np.zeros(n_x)
    src[free] = np.arange(len(free))
    for i, (u, s, c) in define.items():
        src[i], scale[i], m[i] = zpos[u], s, c
    passthrough = False
    monomials: dict[tuple, int] = {}  # a product of variables -> its extra output

    def atom(p: Poly, op: str, line: int) -> list:
        nonlocal passthrough
        const = p.get((), 0.0)
        lin = {k if len(k) > 1 else k[0]: v for k, v in p.items() if k and v != 0.0}
        if op in (">=", ">"):
            const, lin = -const, {k: -v for k, v in lin.items()}
        if not lin:
            if op == "==":
                return [("c", const == 0.0, line)]
            return [("c", const <= 0.0, line)]
        if op == "==":
            return atom(p, "<=", line) + atom(p, ">=", line)
        if any(not math.isfinite(v) for v in lin.values()) or not math.isfinite(const):
            raise RobustlabError(f"{query.name}:{line}: expected finite coefficients")
        if len(lin) == 1:
            ((i, a),) = lin.items()
            if isinstance(i, int) and i < n_x and i not in define:
                return [("x", zpos[i], a > 0, -const / a, line)]
        rows = {}
        for i, a in lin.items():
            if isinstance(i, tuple):  # a product: an extra output of the product network
                passthrough |= any(f < n_x for f in i)
                key = ("m", monomials.setdefault(i, len(monomials)))
                rows[key] = rows.get(key, 0.0) + a
            elif i >= n_x:
                rows[i - n_x] = rows.get(i - n_x, 0.0) + a
            else:
                passthrough = True
                rows[n_y + i] = rows.get(n_y + i, 0.0) + a
        return [("y", rows, -const, line)]

    base, branches = [], []
    for ci, conj in enumerate(clauses):
        atoms = [
            [
                x
                for ai, (p, op, line) in enumerate(c)
                if (ci, ai) not in used
                for x in atom(p, op, line)
            ]
            for c in conj
        ]
        atoms = [c + _contradiction(c) for c in atoms]
        if len(atoms) == 1:
            base += atoms[0]
        else:
            branches.append(atoms)
    n_base = n_y + (n_x if passthrough else 0)
    for a in base + [a for b in branches for c in b for a in c]:
        if a[0] == "y":  # products' columns follow the outputs and the inputs passed through
            for key in [k for k in a[1] if isinstance(k, tuple)]:
                a[1][n_base + key[1]] = a[1].pop(key)
    base += _implied_bounds(base, src, scale, m, len(free), n_y, n_base)
    # contradictions across conjunctions: the rows that hold everywhere against each other and
    # against each alternative, and the alternatives of different disjunctions once joined
    base += _contradiction(base)
    branches = [[c + _contradiction(base + c) for c in b] for b in branches]
    shim = _Shim(query.name)
    conjunctions = _product(shim, branches, 1)
    if len(branches) > 1:
        conjunctions = [c + _contradiction(c) for c in conjunctions]
    spec = _to_spec(shim, base, conjunctions, len(free), n_base + len(monomials))
    factors = tuple(
        tuple(f - n_x if f >= n_x else n_y + f for f in mono)
        for mono in sorted(monomials, key=monomials.get)
    )
    return Product(query, spec, src, scale, m, passthrough, factors)


def _contradiction(conj: list) -> list:
    """``[("c", False, line)]`` when two rows of a conjunction are opposite and exclude each
    other (``a.y <= d1`` and ``-a.y <= d2`` with ``d1 < -d2``: as in an equivalence band
    written ``Y_g > Y_f + e and Y_g < Y_f - e``), or when its bounds on one input cross, so
    that the conjunction is known empty."""
    lo: dict[int, float] = {}
    hi: dict[int, float] = {}
    for a in conj:
        if a[0] == "x":
            bound = hi if a[2] else lo
            bound[a[1]] = (
                min(hi.get(a[1], math.inf), a[3]) if a[2] else max(lo.get(a[1], -math.inf), a[3])
            )
            if a[1] in lo and a[1] in hi and lo[a[1]] > hi[a[1]]:
                return [("c", False, a[4])]
    rows: dict[frozenset, float] = {}
    for a in conj:
        if a[0] == "y":
            key = frozenset(a[1].items())
            rows[key] = min(rows.get(key, math.inf), a[2])
    for a in conj:
        if a[0] == "y":
            neg = frozenset((c, -v) for c, v in a[1].items())
            if neg in rows and a[2] < -rows[neg]:
                return [("c", False, a[3])]
    return []


def _implied_bounds(base: list, src, scale, m, n_z: int, n_y: int, n_base: int) -> list:
    """Box bounds on free inputs implied by the input rows that hold everywhere (``X2[0] >=
    X[0]`` with ``X[0] >= 0.6`` gives ``X2[0] >= 0.6``), each widened by a relative 1e-9 (more
    than float64's rounding of a short sum): the input set is unchanged, only its box is
    found."""
    lo, hi = np.full(n_z, -np.inf), np.full(n_z, np.inf)
    for a in base:
        if a[0] == "x":
            _, k, upper, v, _ = a
            if upper:
                hi[k] = min(hi[k], v)
            else:
                lo[k] = max(lo[k], v)
    rows = []
    for a in base:
        if a[0] == "y" and all(n_y <= c < n_base for c in a[1]):
            b, const = np.zeros(n_z), a[2]
            for c, v in a[1].items():
                b[src[c - n_y]] += v * scale[c - n_y]
                const -= v * m[c - n_y]
            rows.append((b, const, a[3]))
    out = []
    for _ in range(3):  # a few passes reach chains of two or three rows
        for b, d, line in rows:
            for k in np.nonzero(b)[0]:
                others = np.delete(b, k)
                olo, ohi = np.delete(lo, k), np.delete(hi, k)
                with np.errstate(invalid="ignore"):
                    least = np.where(others > 0, others * olo, others * ohi)
                rest = least[others != 0].sum()
                if not np.isfinite(rest):
                    continue
                v = (d - rest) / b[k]
                v += (abs(v) * 1e-9 + 1e-300) * (1 if b[k] > 0 else -1)
                if b[k] > 0 and v < hi[k]:
                    hi[k] = v
                    out.append(("x", int(k), True, float(v), line))
                elif b[k] < 0 and v > lo[k]:
                    lo[k] = v
                    out.append(("x", int(k), False, float(v), line))
    return out


def _line(a) -> int:
    """The line of an assertion (its first variable's), for messages."""
    stack = [a]
    while stack:
        e = stack.pop()
        if type(e).__name__ == "Var":
            return int(e.line)
        stack.extend(reversed(e.children()))
    return 0


class _Shim:
    """What vnnlib._to_spec needs of its parser: a name and ``fail``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, msg: str, line: int | None = None):
        raise RobustlabError(f"{self.name}:{line or 1}: {msg}".replace("X_", "input "))
