"""Training-time certificates (FullCert, Lorenz et al. 2024, arXiv:2406.11522): interval bounds
propagated through the training of a small MLP when every training feature may be moved by at
most ``delta`` (poisoning), giving an interval per parameter after each SGD step; a test point's
prediction is certified when every parameter vector of the final box predicts the same class.

The certified procedure is fixed: the model's initial weights, plain SGD (no momentum) with a
fixed learning rate on the mean cross-entropy, batches in the order of a seeded permutation per
epoch, all in float64. Every interval operation is rounded outward and widened by the rounding of
any float64 evaluation inside it (``train/intervals.py``), so retraining in float64 on any
perturbed training set stays in the boxes, step by step. The model is trained in place on the
clean data (the nominal run, one point of the boxes) and keeps those weights in its own dtype
(the final box is widened to contain them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch
from torch import Tensor, fx, nn

from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.train.intervals import Interval, matmul, relu_backward, softmax

Layer = tuple[str, nn.Module | None]  # ("flatten" | "linear" | "relu", module)


def mlp_layers(model: nn.Module) -> list[Layer]:
    """The model as a chain of Flatten, Linear and ReLU layers (FullCert's setting)."""
    gm = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    layers: list[Layer] = []
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        m = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(m, nn.Linear):
            layers.append(("linear", m))
        elif isinstance(m, nn.ReLU) or node.target in (torch.relu, nn.functional.relu):
            layers.append(("relu", None))
        elif isinstance(m, nn.Flatten) or node.target is torch.flatten:
            layers.append(("flatten", None))
        else:
            what = type(m).__name__ if m is not None else getattr(node.target, "__name__", node)
            raise RobustlabError(
                f"certify_training expects an MLP of Linear and ReLU layers (FullCert); found "
                f"{what} at '{node.name}'"
            )
    if not layers or layers[-1][0] != "linear":
        raise RobustlabError("certify_training expects an MLP whose last layer is Linear")
    return layers


@dataclass(frozen=True)
class TrainingCertificate:
    """Which test predictions no poisoning of the training data within ``delta`` can change."""

    delta: float
    epochs: int
    lr: float
    batch_size: int
    seed: int
    n_train: int
    n: int
    clean_accuracy: float  # of the nominal model (trained on the clean data)
    certified_share: float  # predictions certified for every parameter vector in the final box
    certified_accuracy: float  # certified and correct
    max_width: float  # the widest parameter interval at the end
    seconds: float
    log: list[dict] = field(default_factory=list)
    certified: list[bool] = field(repr=False, default_factory=list)
    predictions: list[int] = field(repr=False, default_factory=list)
    box: list[Interval] = field(repr=False, default_factory=list)  # final (W, b) boxes

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "box"}


def _params(layers: list[Layer]) -> list[Tensor]:
    return [t for kind, m in layers if kind == "linear" for t in (m.weight, m.bias)]


def _forward(layers, params, x):
    """Interval forward pass: the pre-activations of every Linear layer and the inputs to it."""
    h = Interval(x.lo.flatten(1), x.hi.flatten(1))
    ins, pres, i = [], [], 0
    for kind, _ in layers:
        if kind == "linear":
            w, b = params[i], params[i + 1]
            i += 2
            ins.append(h)
            z = matmul(h, w.t())
            h = z + Interval(b.lo.expand_as(z.lo), b.hi.expand_as(z.hi))
            pres.append(h)
        elif kind == "relu":
            h = h.relu()
    return ins, pres, h


def interval_step(layers, params: list[Interval], x: Interval, y: Tensor, lr: float) -> list:
    """One SGD step on the mean cross-entropy for every parameter vector in ``params`` and every
    batch in ``x``: the new parameter boxes."""
    ins, pres, logits = _forward(layers, params, x)
    p = softmax(logits)
    onehot = nn.functional.one_hot(y, p.lo.shape[1]).to(torch.float64)
    g = (p - Interval.point(onehot)).scale(1.0 / len(y))  # d loss / d logits
    grads: list[Interval] = [None] * len(params)  # type: ignore[list-item]
    k = len(ins) - 1
    relus = _relu_after(layers)
    for i in range(k, -1, -1):
        w = params[2 * i]
        grads[2 * i] = matmul(g.t(), ins[i])
        grads[2 * i + 1] = g.sum(0)
        if i > 0:
            g = matmul(g, w)
            if relus[i - 1]:
                g = relu_backward(pres[i - 1], g)
    return [(q - d.scale(lr)).sane() for q, d in zip(params, grads, strict=True)]


def _relu_after(layers: list[Layer]) -> list[bool]:
    """Per Linear layer: whether a ReLU follows it."""
    out, linear = [], False
    for kind, _ in layers:
        if kind == "linear":
            out.append(False)
            linear = True
        elif kind == "relu" and linear:
            out[-1] = True
    return out


def certified_predictions(layers, params: list[Interval], x: Tensor, pred: Tensor) -> Tensor:
    """Whether ``pred`` is the strict top class at ``x`` for every parameter vector in the box:
    lower bounds of ``(w_c - w_j) h + b_c - b_j`` with the last layer's rows subtracted first."""
    ins, _, _ = _forward(layers, params, Interval.point(x))
    h = ins[-1]
    w, b = params[-2], params[-1]
    diff_w = Interval(w.lo[pred][:, None, :], w.hi[pred][:, None, :]) - Interval(w.hi, w.lo)
    diff_b = Interval(b.lo[pred][:, None], b.hi[pred][:, None]) - Interval(b.hi, b.lo)
    hm, hr = h.mid_rad()
    dm, dr = diff_w.mid_rad()
    n = hm.shape[1]
    center = torch.einsum("nkd,nd->nk", dm, hm)
    radius = torch.einsum("nkd,nd->nk", dm.abs(), hr) + torch.einsum(
        "nkd,nd->nk", dr, hm.abs() + hr
    )
    slack = (n + 6) * 2.0**-52 * torch.einsum("nkd,nd->nk", dm.abs() + dr, hm.abs() + hr)
    lower = center - radius * (1 + 1e-12) - slack + diff_b.lo
    lower = lower - 2.0**-49 * (center.abs() + radius + slack + diff_b.lo.abs())  # roundings
    own = nn.functional.one_hot(pred, lower.shape[1]).bool()
    return ((lower > 0) | own).all(1)


def _check(delta: float, epochs: int, lr: float, batch_size: int) -> None:
    if not (delta >= 0 and delta < float("inf")):
        raise RobustlabError(f"delta must be finite and >= 0; found {delta}")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise RobustlabError(
            f"expected epochs >= 1, batch_size >= 1 and lr > 0; found {epochs}, {batch_size}, {lr}"
        )


def point_forward(layers: list[Layer], params: list[Tensor], x: Tensor) -> Tensor:
    """The MLP's logits with the parameters ``params`` (W, b per Linear layer)."""
    h, i = x.flatten(1), 0
    for kind, _ in layers:
        if kind == "linear":
            h = h @ params[i].T + params[i + 1]
            i += 2
        elif kind == "relu":
            h = torch.relu(h)
    return h


def sgd_epoch(layers, params: list[Tensor], x: Tensor, y: Tensor, order: Tensor, lr: float,
              batch_size: int, on_batch: Callable | None = None) -> tuple[list[Tensor], float]:  # fmt: skip
    """One epoch of the certified procedure in float64 (torch autograd, plain SGD on the mean
    cross-entropy): the new parameters and the mean loss. ``on_batch(idx)`` sees each batch."""
    total = 0.0
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ps = [p.detach().requires_grad_(True) for p in params]
        loss = nn.functional.cross_entropy(point_forward(layers, ps, x[idx]), y[idx])
        grads = torch.autograd.grad(loss, ps)
        params = [(p - lr * g).detach() for p, g in zip(ps, grads, strict=True)]
        total += float(loss.detach()) * len(idx)
        if on_batch:
            on_batch(idx)
    return params, total / max(1, len(order))


def retrain(model: nn.Module, x: Tensor, y: Tensor, *, epochs: int, lr: float, batch_size: int,
            seed: int = 0) -> list[Tensor]:  # fmt: skip
    """The certified procedure from ``model``'s weights on the training data ``(x, y)`` (e.g.
    a poisoned copy): the final float64 parameters (W, b per Linear layer)."""
    layers = mlp_layers(model)
    params = [p.detach().double() for p in _params(layers)]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        params, _ = sgd_epoch(layers, params, x.double(), y, order, lr, batch_size)
    return params


def certify_training(
    model: nn.Module,
    data: Dataset,
    test: Dataset,
    delta: float,
    *,
    epochs: int = 5,
    lr: float = 0.1,
    batch_size: int = 32,
    seed: int = 0,
    eval_n: int = 256,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainingCertificate:
    """Train ``model`` (an MLP) in place by the certified procedure on ``data`` and bound every
    run on data moved by at most ``delta`` per feature (FullCert); certify ``test``'s
    predictions. After each epoch the log gets the nominal loss and accuracy and the certified
    share on up to ``eval_n`` test points (passed to ``on_epoch`` as produced)."""
    _check(delta, epochs, lr, batch_size)
    if len(data) == 0:
        raise RobustlabError(f"training data '{data.name}' is empty")
    start = time.perf_counter()
    layers = mlp_layers(model)
    params = [p.detach().double() for p in _params(layers)]
    boxes = [Interval.point(p) for p in params]
    x, y = data.x.double(), data.y
    check = test.subset(eval_n)
    gen = torch.Generator().manual_seed(seed)
    log = []

    def bound_batch(idx: Tensor) -> None:
        nonlocal boxes
        boxes = interval_step(layers, boxes, Interval.around(x[idx], delta), y[idx], lr)

    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(y), generator=gen)
        params, loss = sgd_epoch(layers, params, x, y, order, lr, batch_size, bound_batch)
        pred = point_forward(layers, params, check.x.double()).argmax(1)
        cert = certified_predictions(layers, boxes, check.x.double(), pred)
        entry = {
            "method": "standard",  # the certified procedure: standard training by SGD
            "epoch": epoch + 1,
            "delta": delta,
            "loss": loss,
            "clean_accuracy": float((pred == check.y).double().mean()),
            "certified_share": float(cert.double().mean()),
            "max_width": max(float(b.width.max()) for b in boxes),
            "mean_width": float(torch.cat([b.width.flatten() for b in boxes]).mean()),
            "seconds": time.perf_counter() - t0,
        }
        log.append(entry)
        if on_epoch:
            on_epoch(entry)
    with torch.no_grad():
        for p, new in zip(_params(layers), params, strict=True):
            p.copy_(new.to(p.dtype))
    boxes = [b.hull(p.detach()) for b, p in zip(boxes, _params(layers), strict=True)]
    pred = point_forward(layers, params, test.x.double()).argmax(1)
    cert = certified_predictions(layers, boxes, test.x.double(), pred)
    correct = pred == test.y
    return TrainingCertificate(
        delta=delta, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, n_train=len(data),
        n=len(test), clean_accuracy=float(correct.double().mean()),
        certified_share=float(cert.double().mean()),
        certified_accuracy=float((cert & correct).double().mean()),
        max_width=max(float(b.width.max()) for b in boxes),
        seconds=time.perf_counter() - start, log=log, certified=cert.tolist(),
        predictions=pred.tolist(), box=boxes,
    )  # fmt: skip
