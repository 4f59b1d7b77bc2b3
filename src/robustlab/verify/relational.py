"""Relational properties (VNN-LIB 2.0 queries over several networks, e.g. monotonicity with
``equal-to`` or equivalence with ``isomorphic-to``) as one network: the product network runs
every network side by side on its own slice of one flat input, so falsification, bounds and
branch and bound apply unchanged.

The product's input is the query's free inputs ``z``; ``x = M z + m`` (float32-exact
coefficients) gives each network's inputs; its outputs are every network's outputs, flat and in
declared order (each network's hidden nodes after its outputs), then ``x`` itself when the query
has input constraints over several variables. Inputs and outputs meet their ONNX tensors by
declared name, or by position (:mod:`robustlab.verify.wiring`). :class:`QueryOracle` re-checks a candidate with onnxruntime on each network and accepts it only
when every assertion of the query holds at the values the networks receive and return
(evaluated as the competition's scoring evaluates them, tolerance 0)."""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.verify.oracle import OnnxOracle
from robustlab.verify.product import Product
from robustlab.verify.vnnlib2 import Query
from robustlab.verify.wiring import Wiring, load_bytes, wire


class ProductNet(nn.Module):
    """Networks side by side: network ``i`` gets ``x_i = M_i z + m_i`` (a Linear layer, its
    rows in the order of the ONNX inputs) reshaped to its input shape; its outputs are flattened
    and joined, and, when its wiring is not the identity, put in declared order by a 0/1 Linear
    layer; then ``x`` when ``passthrough``, then the ``products`` (each a tuple of columns of the
    former, multiplied)."""

    def __init__(self, nets, shapes, product: Product, wirings: list[Wiring] | None = None) -> None:
        super().__init__()
        self.products = [tuple(int(c) for c in p) for p in product.products]
        m = product.m
        self.nets = nn.ModuleList(nets)
        self.shapes = [tuple(s) for s in shapes]
        self.maps = nn.ModuleList()
        self.picks = nn.ModuleDict()  # by network position, where the wiring is no identity
        k = 0
        for i, s in enumerate(self.shapes):
            n = math.prod(s)
            w = wirings[i] if wirings else None
            feed = w.feed if w is not None else np.arange(n)
            self.maps.append(_linear(product.M(slice(k, k + n))[feed], m[k : k + n][feed]))
            if w is not None and not w.identity:
                self.picks[str(i)] = _linear(w.pick_matrix(), np.zeros(len(w.pick)))
            k += n
        self.passmap = _linear(product.M(), m) if product.passthrough else None

    def forward(self, z: Tensor) -> Tensor:
        z = z.reshape(z.shape[0], -1)
        outs = []
        for i, (net, lin, s) in enumerate(zip(self.nets, self.maps, self.shapes, strict=True)):
            out = net(lin(z).reshape(z.shape[0], *s)).reshape(z.shape[0], -1)
            outs.append(self.picks[str(i)](out) if str(i) in self.picks else out)
        if self.passmap is not None:
            outs.append(self.passmap(z))
        y = torch.cat(outs, 1)
        if not self.products:
            return y
        extra = []
        for cols in self.products:  # products of two (or more) values: the bilinear rule
            t = y[:, cols[0] : cols[0] + 1]
            for c in cols[1:]:
                t = t * y[:, c : c + 1]
            extra.append(t)
        return torch.cat([y, *extra], 1)


def _linear(M: np.ndarray, m: np.ndarray) -> nn.Linear:
    lin = nn.Linear(M.shape[1], M.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(M))
        lin.bias.copy_(torch.from_numpy(m))
    lin.requires_grad_(False)
    return lin


class QueryOracle:
    """onnxruntime on each network at ``x = M z + m``; ``__call__`` returns the product's
    outputs (float64), all NaN when some assertion of the query fails there (so that
    :func:`robustlab.verify.oracle.confirm` rejects the candidate)."""

    def __init__(
        self,
        product: Product,
        oracles: dict[str, OnnxOracle],
        wirings: dict[str, Wiring] | None = None,
    ) -> None:
        self.product = product
        self.oracles = oracles  # by network name
        self.wirings = wirings or {}  # by network name; identity where missing
        self.busy = False

    def fed(self, z: Tensor) -> Tensor:
        """``z`` as float32 values (every network's inputs are float32 functions of it)."""
        return z.detach().reshape(-1).float().double()

    def assignment(self, z) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every declared variable's value (inputs as fed, outputs as returned, each in its
        declared shape) and the product's outputs (float64) at ``z``."""
        p = self.product
        zz = np.asarray(torch.as_tensor(z).double().reshape(-1).numpy())
        x = p.inputs(zz)
        values, ys, xs, k = {}, [], [], 0
        for net in p.query.networks:
            n_in = sum(v.numel for v in net.inputs)
            n_res = sum(v.numel for v in net.outputs + net.hidden)
            w = self.wirings.get(net.name) or Wiring(np.arange(n_in), np.arange(n_res), n_res)
            oracle = self.oracles[net.name]
            feeds = oracle.inputs(torch.from_numpy(x[k : k + n_in][w.feed]))
            k += n_in
            fed = np.concatenate([np.asarray(f).reshape(-1) for f in feeds.values()])
            flat_in = np.empty_like(fed)
            flat_in[w.feed] = fed  # back in declared order
            xs.append(flat_in.astype(np.float64))
            j = 0
            for v in net.inputs:
                values[v.name] = flat_in[j : j + v.numel].reshape(v.shape)
                j += v.numel
            outs = oracle._sess().run(None, feeds)
            flat_out = np.concatenate([np.asarray(o).reshape(-1) for o in outs])
            if flat_out.size != w.n_out:
                raise RobustlabError(
                    f"network {net.name} returns {flat_out.size} numbers; the query declares "
                    f"{w.n_out}"
                )
            flat_out = flat_out[w.pick]
            j = 0
            for v in net.outputs + net.hidden:
                values[v.name] = flat_out[j : j + v.numel].reshape(v.shape)
                j += v.numel
            ys.append(flat_out.astype(np.float64))
        y = np.concatenate(ys + (xs if p.passthrough else []))
        extra = [math.prod(float(y[c]) for c in cols) for cols in p.products]
        return values, np.concatenate([y, np.asarray(extra, dtype=np.float64)])

    def __call__(self, z: Tensor) -> np.ndarray:
        self.busy = True
        try:
            values, y = self.assignment(z)
        finally:
            self.busy = False
        if not holds(self.product.query, values):
            return np.full_like(y, np.nan)
        return y


def holds(query: Query, values: dict[str, np.ndarray]) -> bool:
    """Whether every assertion holds at ``values`` (the scoring's evaluation: the values' own
    dtypes, tolerance 0)."""
    return all(_bool(a.expr, values) for a in query.assertions)


def _bool(e, values) -> bool:
    kind = type(e).__name__
    if kind == "And":
        return all(_bool(a, values) for a in e.args)
    if kind == "Or":
        return any(_bool(a, values) for a in e.args)
    lhs, rhs = _arith(e.lhs, values), _arith(e.rhs, values)
    return bool(
        {
            "LessEqual": lambda: lhs <= rhs,
            "LessThan": lambda: lhs < rhs,
            "GreaterEqual": lambda: lhs >= rhs,
            "GreaterThan": lambda: lhs > rhs,
            "Equal": lambda: lhs == rhs,
            "NotEqual": lambda: lhs != rhs,
        }[kind]()
    )


def _arith(e, values):
    kind = type(e).__name__
    if kind == "Var":
        return values[e.name][tuple(e.indices)]
    if kind in ("Float", "Int", "IntExpr"):
        return e.value
    if kind == "Literal":
        return float(e.lexeme)
    if kind == "Negate":
        return -_arith(e.expr, values)
    if kind == "Plus":
        return sum(_arith(a, values) for a in e.args)
    if kind == "Minus":
        return _arith(e.head, values) - sum(_arith(a, values) for a in e.rest)
    if kind == "Multiply":
        return math.prod(_arith(a, values) for a in e.args)
    raise RobustlabError(f"unsupported arithmetic expression {kind}")


def build(product: Product, loaded: dict, onnx_bytes: dict) -> tuple[nn.Module, tuple, QueryOracle]:
    """``(model, input shape, oracle)`` for a query: the first loaded network itself when the
    query is one network on its own inputs, else the product network over ``z``.
    ``loaded`` / ``onnx_bytes``: by network name (each ``equal-to`` network maps to its
    reference's)."""
    q = product.query
    oracles, modules, shapes, wirings = {}, [], [], {}
    for net in q.networks:
        ref = net.equal_to or net.name
        n_in = sum(v.numel for v in net.inputs)
        lm = loaded[ref]
        n_model = int(np.prod(lm.input_shape))
        if n_model != n_in:
            raise RobustlabError(
                f"{q.name}: network {net.name} declares {n_in} input numbers; its model takes "
                f"{n_model}"
            )
        wirings[net.name], raw = wire(q.name, net, onnx_bytes[ref])
        if raw is not onnx_bytes[ref]:  # hidden nodes exposed: the copy's converted module
            lm = load_bytes(raw)
        oracles[net.name] = OnnxOracle(raw, n_in)
        modules.append(lm.module if not modules else copy.deepcopy(lm.module))
        shapes.append(tuple(lm.input_shape))
    oracle = QueryOracle(product, oracles, wirings)
    plain = all(w.identity for w in wirings.values())
    if len(q.networks) == 1 and product.identity and plain:
        return modules[0], shapes[0], oracle
    net = ProductNet(modules, shapes, product, [wirings[n.name] for n in q.networks])
    return net.eval(), (product.n_free,), oracle


def counterexample_text(query: Query, values: dict[str, np.ndarray]) -> str:
    """The result file for a ``sat`` 2.0 query in VNN-COMP 2026's format (VNN-LIB 2.0's
    textual assignment): per declared variable, in declared order, ``NAME TYPE [d1,d2]`` then
    its values one a line (row-major)."""
    lines = ["sat"]
    for net in query.networks:
        for v in net.inputs + net.outputs:
            lines.append(f"{v.name} {v.dtype} [{','.join(str(s) for s in v.shape)}]")
            lines += [repr(float(x)) for x in np.asarray(values[v.name]).reshape(-1)]
    return "\n".join(lines) + "\n"
