"""Proof features: the neurons of a layer that a robustness certificate rests on.

Banerjee and Singh, "Interpreting Robustness Proofs of Deep Neural Networks" (ICLR 2024,
arXiv:2301.13225, ProFIt): a proof computed by a bound propagation bounds each neuron n of a
layer by [l_n, u_n]; with an affine head after the layer (y = W z + b), the certificate for
specification rows C is the bound beta_r + sum_n min(a_rn l_n, a_rn u_n) > 0 with a = C W and
beta = C b. A neuron's term is its contribution; projecting a set of neurons out drops their
terms. The proof features are the fewest neurons whose terms alone keep every row positive
(greedy: add the neuron that raises the worst row most, then drop any that is not needed).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from robustlab.bounds import compute_bounds
from robustlab.errors import RobustlabError
from robustlab.explain.layers import traced
from robustlab.results import Metric
from robustlab.threat import LpBall

RELU_FUNCTIONS = (F.relu, torch.relu)


@dataclass(frozen=True)
class ProofFeatures:
    """The proof features of one certified point (flat neuron indices of ``layer``)."""

    layer: str
    label: int
    eps: float
    features: tuple[int, ...]  # in the order they were chosen (most useful first)
    n_neurons: int
    bound: Tensor  # (rows,) the layer's certificate with every neuron
    kept_bound: Tensor  # (rows,) only the proof features' terms
    removed_bound: Tensor  # (rows,) every term but the proof features'
    lower: Tensor  # (k,) the features' bounds [l_n, u_n]
    upper: Tensor
    pictures: Tensor  # (k, *input shape) input gradients of the features at the point

    @property
    def certified(self) -> bool:
        return bool((self.bound > 0).all())

    @property
    def preserved(self) -> bool:
        """Keeping only the proof features keeps the certificate."""
        return bool((self.kept_bound > 0).all())

    @property
    def broken(self) -> bool:
        """Projecting the proof features out breaks the certificate."""
        return bool((self.removed_bound <= 0).any())

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "label": self.label,
            "eps": self.eps,
            "features": list(self.features),
            "n_neurons": self.n_neurons,
            "certified": self.certified,
            "preserved": self.preserved,
            "broken": self.broken,
            "bound": float(self.bound.min()),
            "kept_bound": float(self.kept_bound.min()),
            "removed_bound": float(self.removed_bound.min()),
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "pictures": self.pictures.tolist(),
        }

    def metrics(self) -> list[Metric]:
        return [Metric("proof_features", float(len(self.features)), False)]


def _is_relu(gm: fx.GraphModule, n: fx.Node) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(n.target), nn.ReLU)
    return n.op == "call_function" and n.target in RELU_FUNCTIONS


def _layer(gm: fx.GraphModule, layer: str | None) -> fx.Node:
    nodes = list(gm.graph.nodes)
    if layer is None:
        relus = [n for n in nodes if _is_relu(gm, n)]
        if not relus:
            raise RobustlabError("proof features need a ReLU layer; found none in the model")
        return relus[-1]
    found = [n for n in nodes if n.name == layer or (n.op == "call_module" and n.target == layer)]
    if len(found) != 1:
        known = ", ".join(n.name for n in nodes if _is_relu(gm, n))
        raise RobustlabError(f"no single layer '{layer}' in the model; ReLU layers: {known}")
    return found[0]


def _body(gm: fx.GraphModule, node: fx.Node) -> fx.GraphModule:
    """The model cut after ``node`` (its output is the body's output)."""
    g, env = fx.Graph(), {}
    for n in gm.graph.nodes:
        env[n] = g.node_copy(n, lambda a: env[a])
        if n is node:
            break
    g.output(env[node])
    return fx.GraphModule(gm, g)


def _head(gm, node, x: Tensor, C: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """At ``x`` (1, ...): the layer's value z, a = d(C y)/dz (rows, *z shape), beta = C y - a z."""
    split = _Leaf(gm, node)
    rows = len(C)
    with torch.enable_grad():
        y = split.run(x.expand(rows, *x.shape[1:]))
        s = (y.reshape(rows, -1) * C).sum(1)
        (a,) = torch.autograd.grad(s.sum(), split.activation)
    z = split.activation.detach()[0]
    beta = s.detach() - (a.flatten(1) * z.flatten()).sum(1)
    return z, a, beta


class _Leaf(fx.Interpreter):
    """Runs the graph with the chosen node's output a fresh leaf (any shape)."""

    def __init__(self, gm: fx.GraphModule, node: fx.Node) -> None:
        super().__init__(gm)
        self.node, self.activation = node, None

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        if n is self.node:
            self.activation = out.detach().requires_grad_(True)
            return self.activation.clone()
        return out


def _prune(beta: Tensor, t: Tensor) -> list[int]:
    """Few neurons (greedy) whose terms t (rows, n) alone keep beta + sum > 0 in every row and
    without which the other terms do not: first the fewest that keep it (add the neuron that
    raises the worst row most, then drop any not needed), then, while the others' terms still
    certify, the neuron whose term the others' worst row loses most (keeping the first
    property); a certificate that rests on no neuron (beta alone) gives none."""
    chosen: list[int] = []
    cur = beta.clone()
    free = torch.ones(t.shape[1], dtype=torch.bool)
    while not (cur > 0).all():
        gain = (cur[:, None] + t).amin(0)
        gain[~free] = -torch.inf
        n = int(gain.argmax())
        if not free[n]:  # pragma: no cover - certified points always reach > 0
            break
        chosen.append(n)
        free[n] = False
        cur = cur + t[:, n]
    for n in sorted(chosen, key=lambda k: float(t[:, k].amin())):  # drop what is not needed
        rest = [k for k in chosen if k != n]
        if (beta + t[:, rest].sum(1) > 0).all():
            chosen = rest
    if not chosen:
        return chosen
    while True:
        inside = torch.zeros(t.shape[1], dtype=torch.bool)
        inside[chosen] = True
        others = beta + t[:, ~inside].sum(1)
        if not (others > 0).all():
            return chosen
        kept = beta + t[:, inside].sum(1)
        ok = ((kept[:, None] + t) > 0).all(0) & ~inside
        if not ok.any():
            return chosen
        loss = (others[:, None] - t).amin(0)
        loss[~ok] = torch.inf
        chosen.append(int(loss.argmin()))


def proof_features(
    model: nn.Module,
    x: Tensor,
    label: int,
    eps: float,
    *,
    layer: str | None = None,
    method: str = "crown",
    lower: float = 0.0,
    upper: float = 1.0,
) -> ProofFeatures:
    """The proof features of the Linf robustness certificate of ``model`` at one input ``x``
    (one input, no batch dimension) with label ``label`` at radius ``eps``: the bounds of
    ``layer``'s neurons (default the last ReLU) by ``method`` (robustlab.bounds.compute_bounds),
    the affine head after it (a model whose head is not affine is refused), in float64 on a
    copy."""

    gm = copy.deepcopy(traced(model, "proof features")).double().eval()
    node = _layer(gm, layer)
    x0 = x.detach().double()[None]
    with torch.no_grad():
        k = gm(x0).reshape(1, -1).shape[1]
    if not 0 <= label < k:
        raise RobustlabError(f"label must lie in [0, {k - 1}]; found {label}")
    C = torch.zeros(k - 1, k, dtype=torch.float64)
    others = [j for j in range(k) if j != label]
    C[:, label] = 1
    C[torch.arange(k - 1), others] = -1
    z, a, beta = _head(gm, node, x0, C)
    threat = LpBall("inf", eps, lower, upper)
    flip = torch.rand(x0.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    corner = torch.where(flip, (x0 - eps).clamp(lower, upper), (x0 + eps).clamp(lower, upper))
    _, a2, beta2 = _head(gm, node, corner, C)
    scale = a.abs().amax() + beta.abs().amax()
    tol = 1e-9 * float(scale)
    if not (torch.allclose(a, a2, atol=tol) and torch.allclose(beta, beta2, atol=tol)):
        raise RobustlabError(
            f"proof features need an affine head after layer '{node.name}' (linear layers, "
            "flatten); the model computes a nonlinear function of it"
        )
    body = _body(gm, node)
    # the bound graph is built in the model's own dtype; bounds are computed in float64
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    b = compute_bounds(copy.deepcopy(body).to(dtype), (threat, x0.to(dtype)), method)
    lo, hi = b.lower.reshape(-1).double(), b.upper.reshape(-1).double()
    af = a.flatten(1)
    t = torch.minimum(af * lo, af * hi)  # (rows, n): each neuron's term of the bound
    bound = beta + t.sum(1)
    chosen = _prune(beta, t) if (bound > 0).all() else []
    keep = torch.zeros(t.shape[1], dtype=torch.bool)
    keep[chosen] = True
    pictures = torch.zeros((len(chosen), *x0.shape[1:]), dtype=x.dtype)
    if chosen:
        with torch.enable_grad():
            leaf = x0.expand(len(chosen), *x0.shape[1:]).clone().requires_grad_(True)
            zs = body(leaf).reshape(len(chosen), -1)
            sel = zs.gather(1, torch.tensor(chosen)[:, None]).sum()
            (g,) = torch.autograd.grad(sel, leaf)
        pictures = g.to(x.dtype)
    return ProofFeatures(
        node.name,
        label,
        eps,
        tuple(chosen),
        t.shape[1],
        bound,
        beta + t[:, keep].sum(1),
        beta + t[:, ~keep].sum(1),
        lo[torch.tensor(chosen, dtype=torch.long)],
        hi[torch.tensor(chosen, dtype=torch.long)],
        pictures,
    )
