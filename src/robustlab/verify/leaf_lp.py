"""The triangle (Planet) LP relaxation of a ReLU chain on one small input box, solved by HiGHS
and made rigorous by weak duality (Ehlers 2017, "Formal verification of piece-wise linear
feed-forward neural networks"; the safe bound of Neumaier & Shcherbina 2004, "Safe bounds in
linear and mixed-integer programming"): a leaf check for input splitting.

Given the box's intermediate bounds (CROWN's), the LP decides whether a conjunction of output
rows ``C_r y <= d_r`` can hold anywhere in the relaxation: it minimises ``t`` subject to
``C_r y - d_r <= t`` for every row. The solver's answer is a float guess and is never trusted:
its dual vector ``w`` (any ``w``, with the inequalities' entries ``>= 0``) gives the Lagrangian
``w^T (G v - h)``, a linear function of the LP's variables ``v``, which is ``<= sum_r w_r
(C_r y - d_r)`` wherever the constraints hold; its minimum over the variables' bounds (the box,
and each ReLU's output interval), evaluated in float64 less a rounding margin far above float64's
error, is a valid lower bound whatever the solver did. Positive, with ``w`` on the rows
summing to more than 0, means no point of the box reaches the conjunction."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog
from torch import Tensor

from robustlab.bounds.graph import BoundGraph
from robustlab.bounds.ops.activation import ReLU
from robustlab.bounds.ops.linear import Affine, Linear, Reshape
from robustlab.deadline import check

try:  # scipy's HiGHS bindings (not a public module): linprog without its per-call checks
    from scipy.optimize._highspy import _core
except ImportError:
    _core = None

# relative rounding margin of the verified bound: float64 sums of a few thousand terms err by
# under 1e-12 of the sum of their magnitudes (gamma_n = n u / (1 - n u), u = 2^-53)
ROUNDING = 1e-10


@dataclass(frozen=True)
class Chain:
    """A ReLU network as affine maps between ReLUs: ``x' = x * scale + shift`` for each
    ``(scale, shift)`` of ``inputs`` in turn (elementwise, on the flattened input), then ``z_k =
    W_k a_{k-1} + b_k`` with ``a_0 = x'`` and ``a_k = relu(z_k)``, the last ``z`` the output.
    ``nodes[k]``: the graph node of ``z_k`` (whose bounds the LP takes)."""

    inputs: tuple[tuple[np.ndarray, np.ndarray], ...]
    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    nodes: tuple[int, ...]


def relu_chain(graph: BoundGraph) -> Chain | None:
    """The graph as a :class:`Chain`, or None when it is not one (elementwise affine maps and
    reshapes of the input, then Linear layers each followed by a plain ReLU but the last)."""
    nodes = graph.nodes
    n_in = math.prod(nodes[0].shape)
    inputs, weights, biases, zs = [], [], [], []
    expect_linear = True
    for j in range(1, len(nodes)):
        node = nodes[j]
        if node.inputs != (j - 1,):
            return None
        op = node.op
        if not weights and isinstance(op, Reshape):
            continue
        if not weights and isinstance(op, Affine):
            shape = nodes[j - 1].shape
            scale = np.broadcast_to(_np(op.scale), shape).reshape(-1).copy()
            inputs.append((scale, np.broadcast_to(_np(op.shift), shape).reshape(-1).copy()))
            continue
        if expect_linear and isinstance(op, Linear) and op.weight.dim() == 2:
            weights.append(op.weight.detach().double().numpy())
            b = op.bias
            biases.append(np.zeros(op.weight.shape[0]) if b is None else _np(b).reshape(-1))
            zs.append(j)
            expect_linear = False
        elif not expect_linear and type(op) is ReLU and op.slope == 0.0:
            expect_linear = True
        else:
            return None
    if expect_linear or not weights:
        return None
    if weights[0].shape[1] != n_in:
        return None
    return Chain(tuple(inputs), tuple(weights), tuple(biases), tuple(zs))


def _np(v) -> np.ndarray:
    return v.detach().double().numpy() if isinstance(v, Tensor) else np.asarray(v, np.float64)


def _outward(lo: np.ndarray, hi: np.ndarray, inputs) -> tuple[np.ndarray, np.ndarray]:
    """The box of the chain's input maps ``x * scale + shift`` over ``[lo, hi]``, each map's
    image widened by the rounding of one product and one sum (``2 u (|x scale| + |shift|)``,
    u = 2^-53, doubled, plus the smallest subnormal)."""
    for scale, shift in inputs:
        pa, pb = lo * scale, hi * scale
        a, b = pa + shift, pb + shift
        err = (np.maximum(np.abs(pa), np.abs(pb)) + np.abs(shift)) * 2.0**-51 + 5e-324
        lo, hi = np.minimum(a, b) - err, np.maximum(a, b) + err
    return lo, hi


@dataclass(frozen=True)
class _LP:
    """``G v <= h`` (rows ``n_ineq`` on are equalities ``G v = h``) with bounds ``lo <= v <=
    hi``; the first ``n_rows`` rows are the property's (each ``C_r y - d_r`` without ``t``).
    ``Gabs``, ``habs``: bounds on the magnitudes the rows were computed from (their rounding is
    within ``err`` of them). Per unstable ReLU: its output's variable ``var``, its
    pre-activation ``z = Z v + zb``, the row of its chord ``chord`` and the triangle's height
    ``gap`` (what splitting it removes)."""

    G: np.ndarray
    h: np.ndarray
    Gabs: np.ndarray
    habs: np.ndarray
    err: float
    n_ineq: int
    lo: np.ndarray
    hi: np.ndarray
    n_rows: int
    var: np.ndarray
    Z: np.ndarray
    Zabs: np.ndarray
    zb: np.ndarray
    zbabs: np.ndarray
    chord: np.ndarray
    gap: np.ndarray


def _build(chain: Chain, lo, hi, bounds: list, C: np.ndarray, d: np.ndarray) -> _LP:
    """The triangle relaxation on one box (``bounds``: (l, u) of each hidden ``z_k``) and the
    rows ``C y - d``, in the variables that remain: the inputs and the outputs of the unstable
    ReLUs. Every other neuron is an affine function of earlier variables (``P v + q``,
    composed through the layers, with ``|W| |P|`` kept beside it: the rounding of the
    composition is within ``err`` times that); an active one keeps its bounds as two rows."""
    xlo, xhi = _outward(lo, hi, chain.inputs)
    n0 = len(xlo)
    unst = [(l < 0) & (u > 0) for l, u in bounds]
    nv = n0 + int(sum(m.sum() for m in unst))
    vlo, vhi = np.zeros(nv), np.zeros(nv)
    vlo[:n0], vhi[:n0] = xlo, xhi
    P = np.zeros((n0, nv))
    P[:, :n0] = np.eye(n0)
    q, Pabs, qabs = np.zeros(n0), P.copy(), np.zeros(n0)
    lines, side, var, Z, Zabs, zb, zbabs, gap = [], [], [], [], [], [], [], []
    j = n0
    for k, (l, u) in enumerate(bounds):
        W, b = chain.weights[k], chain.biases[k]
        Wa = np.abs(W)
        Pz, qz, Pza, qza = W @ P, W @ q + b, Wa @ Pabs, Wa @ qabs + np.abs(b)
        act, i = l >= 0, unst[k].nonzero()[0]
        # an active ReLU's bounds: l <= z <= u (as in the LP over every neuron)
        side += [(Pz[act], l[act] - qz[act], -1.0), (Pz[act], u[act] - qz[act], 1.0)]
        side[-2:] = [(m, r, s_, Pza[act], qza[act]) for m, r, s_ in side[-2:]]
        new = np.arange(j, j + len(i))
        vhi[new] = u[i]
        e = np.zeros((len(i), nv))
        e[np.arange(len(i)), new] = 1.0
        # a >= z: z - a <= 0; a <= ua z + ub (the chord through (l, 0) and (u, u), intercept
        # refitted to the rounded slope as in ReLU.relax): a - ua z <= ua qz + ub
        ua = u[i] / (u[i] - l[i])
        ub = np.maximum(-ua * l[i], u[i] - ua * u[i])
        lines.append((Pz[i] - e, -qz[i], Pza[i] + e, qza[i]))
        lines.append(
            (
                e - ua[:, None] * Pz[i],
                ua * qz[i] + ub,
                e + ua[:, None] * Pza[i],
                ua * qza[i] + np.abs(ub),
            )
        )
        var.append(new)
        Z.append(Pz[i])
        Zabs.append(Pza[i])
        zb.append(qz[i])
        zbabs.append(qza[i])
        gap.append(ub)
        # the layer's output: active z, inactive 0, unstable its variable
        keep = act[:, None]
        P, Pabs = np.where(keep, Pz, 0.0), np.where(keep, Pza, 0.0)
        q, qabs = np.where(act, qz, 0.0), np.where(act, qza, 0.0)
        P[i], Pabs[i], q[i], qabs[i] = e, e, 0.0, 0.0
        j += len(i)
    W, b = chain.weights[-1], chain.biases[-1]
    CW = C @ W
    rows = (
        CW @ P,
        d - C @ b - CW @ q,
        np.abs(C) @ (np.abs(W) @ Pabs),
        np.abs(d) + np.abs(C) @ (np.abs(b) + np.abs(W) @ qabs),
    )
    # l <= z becomes -P v <= q - l; z <= u becomes P v <= u - q
    stable = [(s_ * m, s_ * r, ma, ra + np.abs(r)) for m, r, s_, ma, ra in side]
    parts = [rows] + lines[0::2] + lines[1::2] + stable
    G = np.concatenate([p_[0] for p_ in parts])
    h = np.concatenate([p_[1] for p_ in parts])
    Gabs = np.concatenate([p_[2] for p_ in parts])
    habs = np.concatenate([np.abs(p_[1]) + p_[3] for p_ in parts])
    n_unst = j - n0
    chord = len(d) + n_unst + np.arange(n_unst)
    fanin = max(w.shape[1] for w in chain.weights) + 2
    err = max(ROUNDING, 4.0 * len(chain.weights) * fanin * 2.0**-53)
    cat = np.concatenate
    empty = np.zeros((0, nv))
    return _LP(
        G,
        h,
        Gabs,
        habs,
        err,
        len(G),
        vlo,
        vhi,
        len(d),
        cat(var) if var else np.zeros(0, int),
        cat(Z) if Z else empty,
        cat(Zabs) if Zabs else empty,
        cat(zb) if zb else np.zeros(0),
        cat(zbabs) if zbabs else np.zeros(0),
        chord,
        cat(gap) if gap else np.zeros(0),
    )


def _branch(lp: _LP, splits: tuple) -> _LP:
    """``lp`` on one branch of ReLU splits ((unstable index, +1 active / -1 inactive), ...):
    each adds its sign condition ``-s z <= 0`` as a row relaxed by ``t`` like the property's
    (so a branch with no point in the relaxation is refuted too), and the ReLU's exact value
    (``a = z``, or ``a`` = 0 through its bounds), valid on the branch."""
    if not splits:
        return lp
    idx = np.array([j for j, _ in splits])
    sgn = np.array([s for _, s in splits], dtype=np.float64)
    vlo, vhi = lp.lo.copy(), lp.hi.copy()
    off = idx[sgn < 0]
    vlo[lp.var[off]] = vhi[lp.var[off]] = 0.0
    on = idx[sgn > 0]
    eq = lp.Z[on].copy()
    eq[np.arange(len(on)), lp.var[on]] -= 1.0  # z - a = 0
    eqa = lp.Zabs[on].copy()
    eqa[np.arange(len(on)), lp.var[on]] += 1.0
    r, ni = lp.n_rows, lp.n_ineq
    cat = np.concatenate
    G = cat([lp.G[:r], -sgn[:, None] * lp.Z[idx], lp.G[r:], eq])
    h = cat([lp.h[:r], sgn * lp.zb[idx], lp.h[r:], -lp.zb[on]])
    Gabs = cat([lp.Gabs[:r], lp.Zabs[idx], lp.Gabs[r:], eqa])
    habs = cat([lp.habs[:r], lp.zbabs[idx], lp.habs[r:], lp.zbabs[on]])
    k = len(idx)
    return _LP(
        G,
        h,
        Gabs,
        habs,
        lp.err,
        ni + k,
        vlo,
        vhi,
        r + k,
        lp.var,
        lp.Z,
        lp.Zabs,
        lp.zb,
        lp.zbabs,
        lp.chord + k,
        lp.gap,
    )


def verified_bound(lp: _LP, w: np.ndarray) -> float:
    """A rigorous lower bound, for every ``v`` within the bounds that meets the constraints, of
    ``sum_r w_r (C_r y - d_r)`` (the rows' part of ``w``): the minimum of the Lagrangian ``w^T (G
    v - h)`` over the bounds, less the rounding margin (``err`` times the magnitudes the rows
    and this sum come from). ``w``'s inequality entries are clipped at 0 (any such ``w`` gives
    a valid bound)."""
    w = w.copy()
    w[: lp.n_ineq] = np.maximum(w[: lp.n_ineq], 0.0)
    g = lp.G.T @ w
    val = np.minimum(g * lp.lo, g * lp.hi).sum() - w @ lp.h
    vmax = np.maximum(np.abs(lp.lo), np.abs(lp.hi))
    mag = np.abs(w) @ (lp.Gabs @ vmax + lp.habs)
    return float(val - lp.err * (mag + abs(val)))


def _solve(lp: _LP):
    """HiGHS on ``min t`` subject to ``lp``'s first ``n_rows`` rows ``<= t``: ``(t, w)`` with
    ``w`` the dual vector of ``lp``'s rows (>= 0 on inequalities), or None when it fails. HiGHS
    is called directly where scipy's build exposes it (:class:`_Highs`), else through
    ``linprog``."""
    n_ineq, nv = lp.n_ineq, len(lp.lo)
    t_col = np.zeros((len(lp.G), 1))
    t_col[: lp.n_rows] = -1.0  # C_r y - d_r - t <= 0
    cost = np.zeros(nv + 1)
    cost[-1] = 1.0
    A = np.concatenate([lp.G, t_col], 1)
    highs = _direct_highs()
    if highs is not None:
        return highs.solve(cost, A, lp.h, n_ineq, lp.lo, lp.hi)
    has_eq = len(A) > n_ineq
    res = linprog(
        cost,
        A_ub=A[:n_ineq],
        b_ub=lp.h[:n_ineq],
        A_eq=A[n_ineq:] if has_eq else None,
        b_eq=lp.h[n_ineq:] if has_eq else None,
        bounds=np.stack([lp.lo, lp.hi], 1).tolist() + [(None, None)],
        method="highs-ds",
        options={"presolve": False},  # 3.3 ms against 5.1 on ACAS Xu's leaves (presolve pays
        # nothing on some 50 variables)
    )
    if res.status != 0:
        return None
    w = -np.concatenate([res.ineqlin.marginals, res.eqlin.marginals if has_eq else []])
    return res.fun, w


class _Highs:
    """One HiGHS instance (scipy's bindings, ``scipy.optimize._highspy._core``) with the options
    ``linprog(method="highs-ds", options={"presolve": False})`` sets, passed once: the dual
    simplex without presolve. Per LP only the model is passed (``linprog`` spent 2/3 of an ACAS
    Xu leaf's 2.4 ms checking its options and converting its inputs)."""

    def __init__(self, core) -> None:
        self.core = core
        self.highs = core._Highs()
        opts = core.HighsOptions()
        opts.presolve = "off"
        opts.solver = "simplex"
        opts.simplex_strategy = 1  # dual (kSimplexStrategyDual)
        opts.output_flag = False
        opts.log_to_console = False
        if self.highs.passOptions(opts) == core.HighsStatus.kError:
            raise RuntimeError("HiGHS refused its options")
        self.inf = core.kHighsInf

    def solve(self, cost, A, h, n_ineq: int, lo, hi):
        """``min cost @ v`` subject to ``A[:n_ineq] v <= h[:n_ineq]``, ``A[n_ineq:] v = h[n_ineq:]``
        and ``lo <= v <= hi`` for all but the last variable (free): ``(value, w)`` with ``w``
        the rows' duals as ``-linprog``'s marginals, or None unless optimal."""
        core, inf = self.core, self.inf
        m, n = A.shape
        At = np.ascontiguousarray(A.T)
        cols, rows = np.nonzero(At)
        lp = core.HighsLp()
        lp.num_col_, lp.num_row_ = n, m
        lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = n, m
        lp.a_matrix_.format_ = core.MatrixFormat.kColwise
        lp.col_cost_ = cost
        lp.col_lower_ = np.append(lo, -inf)
        lp.col_upper_ = np.append(hi, inf)
        row_lo = h.copy()
        row_lo[:n_ineq] = -inf
        lp.row_lower_ = row_lo
        lp.row_upper_ = h.copy()
        lp.a_matrix_.start_ = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=n))])
        lp.a_matrix_.index_ = rows
        lp.a_matrix_.value_ = At[cols, rows]
        highs = self.highs
        if highs.passModel(lp) == core.HighsStatus.kError:
            return None
        if highs.run() == core.HighsStatus.kError:
            return None
        if highs.getModelStatus() != core.HighsModelStatus.kOptimal:
            return None
        sol = highs.getSolution()
        return highs.getInfo().objective_function_value, -np.array(sol.row_dual)


def _direct_highs() -> _Highs | None:
    """This thread's :class:`_Highs` where scipy's HiGHS bindings load, else None (``linprog``
    then). One per thread: a verification abandoned at its timeout may still be solving."""
    if _core is None:
        return None
    if not hasattr(_LOCAL, "highs"):
        try:
            _LOCAL.highs = _Highs(_core)
        except (AttributeError, RuntimeError, TypeError):
            _LOCAL.highs = None
    return _LOCAL.highs


_LOCAL = threading.local()


def refute(
    chain: Chain,
    lo: Tensor,
    hi: Tensor,
    bounds: list,
    C: Tensor,
    d: Tensor,
    max_lps: int = 1,
) -> bool:
    """Whether the conjunction ``C y <= d`` (``d`` with its margin added by the caller) is
    proven unreachable on the box ``[lo, hi]`` (flat, float64) whose hidden pre-activations lie
    within ``bounds`` ((l, u) per hidden layer): each LP's bound is its dual's, verified
    (:func:`verified_bound`); where it is not positive, the ReLU whose chord weighs most (dual
    times the triangle's height) is split and both branches must be refuted, up to
    ``max_lps`` LPs in all. False when the solver fails or the LPs run out."""
    base = _build(
        chain,
        lo.double().numpy(),
        hi.double().numpy(),
        [(b[0].double().numpy(), b[1].double().numpy()) for b in bounds],
        C.double().numpy(),
        d.double().numpy(),
    )
    stack: list[tuple] = [()]
    lps = 0
    while stack:
        if lps >= max_lps:
            return False
        lps += 1
        splits = stack.pop()
        lp = _branch(base, splits)
        sol = _solve(lp)
        if sol is None:
            return False
        t, w = sol
        if t > 0 and verified_bound(lp, w) > 0:
            continue
        score = np.maximum(w[lp.chord], 0.0) * lp.gap
        score[[j for j, _ in splits]] = -1.0
        if len(score) == 0 or score.max() <= 0 or lps + 2 > max_lps:
            return False
        j = int(score.argmax())
        stack += [splits + ((j, -1),), splits + ((j, 1),)]
    return True


@dataclass
class LeafCheck:
    """Input splitting's LP leaf check (:func:`refute`) with its share of the time: after each
    step, the children still open get the LP, those closest to proven first, until the LP's
    time reaches ``share`` times the bound passes' time, times the fraction of the last
    ``memory`` or so boxes it closed; each box's LPs stop at ``max_lps``.
    ``C`` and ``d``: the property's stacked rows; ``groups``: each disjunct's rows."""

    chain: Chain
    C: Tensor
    d: Tensor
    groups: list
    share: float = 1.0
    max_lps: int = 7
    budget: float = 0.0
    spent: float = 0.0
    calls: int = 0
    tried: int = 0  # boxes
    closed: int = 0
    rate: float = 0.5  # the fraction of recent boxes closed (a running mean over ``memory``)
    memory: float = 32.0

    def bounds(self, packed: Tensor) -> list:
        """(l, u) per hidden layer from one box's packed bounds (``bab.pack_bounds``)."""
        out, k = [], 0
        for b in self.chain.biases[:-1]:
            out.append((packed[0, k : k + len(b)], packed[1, k : k + len(b)]))
            k += len(b)
        return out

    def close(self, lo, hi, packed, open_, slack, margin, elapsed: float) -> Tensor:
        """``open_`` (N, disjuncts) with the disjuncts the LP refutes (by ``margin`` (N, rows),
        ``bab.hold_margin``'s) closed, on boxes taken in order of their weakest open disjunct's
        ``slack`` (N, disjuncts), best first, while the LP's time stays within ``share`` times
        the passes' time (``elapsed`` added to it)."""
        # the share, scaled by the fraction of recent boxes the LP closed (1/2 before any):
        # where it closes little its time goes back to splitting (ACAS Xu 4_9 / prop_1: 4.4 s
        # of CPU without the LP, 19.5 s with a fixed share of 4); recent, not all: the boxes
        # change (3_3 / prop_2: 5% closed of the wide early boxes had starved it when nearly
        # every open box was one LP from proven)
        self.budget += self.share * self.rate * elapsed
        worst = torch.where(open_, slack, torch.inf).amin(1)
        order = torch.argsort(worst, descending=True).tolist()
        open_ = open_.clone()
        for i in order:
            if self.spent >= self.budget:
                break
            check()  # the verifier's deadline, between boxes
            t0 = time.process_time()
            for k in open_[i].nonzero().squeeze(1).tolist():
                g = self.groups[k]
                self.calls += 1
                b, dg = self.bounds(packed[i]), self.d[g] + margin[i, g]
                if not refute(self.chain, lo[i], hi[i], b, self.C[g], dg, self.max_lps):
                    break
                open_[i, k] = False
            done = not open_[i].any()
            self.tried += 1
            self.closed += int(done)
            self.rate += (done - self.rate) / self.memory
            self.spent += time.process_time() - t0
        return open_
