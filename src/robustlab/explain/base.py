"""What every explainer shares: the result type, the registry by name, targets, pass counting and
streaming over (example, step) rows in blocks of ``batch_size``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.inputs import as_module
from robustlab.inputs import frozen as explaining
from robustlab.registry import build, registrar
from robustlab.results import Metric

# a class index, a label per input, or a callable from logits (B, K) to scores (B,)
Target = int | Tensor | Callable[[Tensor], Tensor] | None
Score = Callable[[Tensor, Tensor], Tensor]  # (logits of a block, example index per row) -> (B,)


@dataclass(frozen=True)
class ExplainResult:
    """Attributions for a batch of inputs, with the cost of computing them."""

    method: str
    attributions: Tensor  # (N, *input shape), or (N, grid, grid) for sobol
    n_forward: int  # per-example forward passes through the model
    n_backward: int  # per-example backward passes
    seconds: float
    delta: Tensor | None = None  # integrated gradients: sum(attr) - (f(x) - f(baseline))
    classes: Tensor | None = field(default=None, repr=False)  # the class explained per input

    @property
    def signed(self) -> bool:
        """Whether the method's attributions have a sign (its class says ``signed = True``)."""
        return bool(getattr(REGISTRY.get(self.method), "signed", False))

    def metrics(self) -> list[Metric]:
        """None: an explanation has no accuracy; its cost is in ``to_dict``."""
        return []

    def to_dict(self) -> dict:
        d = {
            "method": self.method,
            "signed": self.signed,
            "attributions": self.attributions.detach().cpu().double().tolist(),
            "n_forward": self.n_forward,
            "n_backward": self.n_backward,
            "seconds": self.seconds,
        }
        if self.delta is not None:
            d["delta"] = self.delta.detach().cpu().double().tolist()
        if self.classes is not None:
            d["classes"] = self.classes.tolist()
        return d


class Explainer(Protocol):
    """Attributions of ``target`` for inputs ``x`` (a batch) of ``model``."""

    def __call__(self, model: nn.Module, x: Tensor, target: Target = None) -> ExplainResult: ...


REGISTRY: dict[str, type] = {}


register = registrar(REGISTRY)


def get_explainer(name: str, **kwargs) -> Explainer:
    """An explainer by registry name, e.g. ``get_explainer("integrated-gradients", n_steps=200)``."""
    return build(REGISTRY, name, "explanation method", **kwargs)


def explain(model: nn.Module, x: Tensor, method: str = "saliency", target: Target = None, **kw):
    """Attributions by method name; keyword arguments go to the explainer. ``model``: what
    ``load_model`` returns, an ``nn.Module`` or a path."""
    return get_explainer(method, **kw)(as_module(model), x, target)


def check_positive(**values: int | float) -> None:
    for name, v in values.items():
        if not v >= 1:
            raise RobustlabError(f"{name} must be a positive integer; found {v!r}")


def check_inputs(x: Tensor) -> None:
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        found = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise RobustlabError(f"expected a float batch of inputs (N, ...); found {found}")


class Passes:
    """A model called in blocks, counting per-example forward and backward passes (the fields of
    ``attacks.base.Counted``, which counts by hooks where an attack calls the model itself)."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.n_forward, self.n_backward = model, 0, 0

    def logits(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if out.dim() != 2:
            raise RobustlabError(
                f"expected the model to output logits (N, classes); found {tuple(out.shape)}"
            )
        self.n_forward += int(x.shape[0])
        return out

    def scores(self, x: Tensor, score: Score, rows: Tensor) -> Tensor:
        """``score`` of the logits, without gradients."""
        with torch.no_grad():
            return score(self.logits(x), rows)

    def gradient(self, x: Tensor, score: Score, rows: Tensor) -> Tensor:
        """The gradient of ``score`` w.r.t. each row of ``x`` (one forward, one backward pass)."""
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            s = score(self.logits(leaf.clone()), rows)  # a clone: in-place first layers are fine
            (g,) = torch.autograd.grad(s.sum(), leaf)
        self.n_backward += int(x.shape[0])
        return g


def _check_scores(s: Tensor, n: int) -> Tensor:
    if not isinstance(s, Tensor) or s.shape != (n,):
        found = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise RobustlabError(f"a target callable must map logits (B, K) to (B,); found {found}")
    return s


def resolve_target(
    target: Target, passes: Passes, x: Tensor, batch_size: int
) -> tuple[Score, Tensor | None]:
    """The score of each row and the class explained per input (None for a callable target).

    ``None`` explains the predicted class (one forward pass per input)."""
    n = x.shape[0]
    if callable(target) and not isinstance(target, Tensor):
        return (lambda logits, rows: _check_scores(target(logits), len(rows))), None
    if target is None:
        with torch.no_grad():
            classes = torch.cat(
                [passes.logits(x[i : i + batch_size]).argmax(1) for i in range(0, n, batch_size)]
            )
    elif isinstance(target, int) and not isinstance(target, bool):
        classes = torch.full((n,), target, dtype=torch.long, device=x.device)
    elif isinstance(target, Tensor) and not target.is_floating_point():
        classes = target.to(x.device, torch.long).reshape(-1)
        if classes.numel() == 1:
            classes = classes.expand(n)
        if classes.shape != (n,):
            raise RobustlabError(
                f"expected one target label per input ({n}); found {tuple(target.shape)}"
            )
    else:
        raise RobustlabError(
            "target must be a class index, an integer label tensor, a callable on the logits, "
            f"or None; found {type(target).__name__}"
        )
    with torch.no_grad():
        k = passes.model(x[:1]).shape[-1]
    if len(classes) and not (0 <= int(classes.min()) and int(classes.max()) < k):
        raise RobustlabError(
            f"target classes must lie in [0, {k - 1}]; found {int(classes.min())}..{int(classes.max())}"
        )
    classes = classes.clone()
    return (lambda logits, rows: logits.gather(1, classes[rows, None]).squeeze(1)), classes


def blocks(n_rows: int, batch_size: int) -> Iterator[Tensor]:
    """Row indices 0..n_rows-1 in consecutive blocks of at most ``batch_size``."""
    for i in range(0, n_rows, batch_size):
        yield torch.arange(i, min(i + batch_size, n_rows))


def example_noise(seed: int, examples: Tensor, samples: Tensor, shape, like: Tensor) -> Tensor:
    """Standard normal noise for rows (example, sample) of the shape of one input: each row drawn
    from its own generator seeded by (seed, example, sample), so the noise does not depend on how
    rows are grouped into blocks. On the CPU, then moved to ``like``'s device and dtype."""
    out = torch.empty((len(examples), *shape), dtype=like.dtype)
    for r, (e, k) in enumerate(zip(examples.tolist(), samples.tolist(), strict=True)):
        key = ((seed * 0x9E3779B1 + e) * 0x85EBCA77 + k) % (2**63 - 1)
        out[r] = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(key))
    return out.to(like.device)


def shard_offset(explainer) -> int:
    """The whole data's index of an explainer's first input: its field ``shard`` is (that index,
    the whole data's size) when it explains one shard of the data (``explain.sharded``), so that
    its noise is drawn as in one run over the whole data; 0 otherwise."""
    shard = getattr(explainer, "shard", None)
    return 0 if shard is None else shard[0]


def baseline_like(baseline: float | Tensor, x: Tensor) -> Tensor:
    """A baseline per input: a number, one input's shape, or the batch's shape."""
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    if b.dim() == 0 or b.shape == x.shape[1:]:
        return b.expand_as(x)
    if b.shape == x.shape:
        return b
    raise RobustlabError(
        f"baseline must be a number or of shape {tuple(x.shape[1:])} or {tuple(x.shape)}; "
        f"found {tuple(b.shape)}"
    )


def run(
    name: str, model: nn.Module, x: Tensor, target: Target, batch_size: int, body
) -> ExplainResult:
    """Validate, set up counting and the target, call ``body(passes, score)`` -> (attr, delta)."""
    model = as_module(model)  # what load_model returns, a module or a path
    check_inputs(x)
    check_positive(batch_size=batch_size)
    start = time.perf_counter()
    passes = Passes(model)
    with explaining(model):
        score, classes = resolve_target(target, passes, x.detach(), batch_size)
        attr, delta = body(passes, score)
    return ExplainResult(
        name,
        attr.detach(),
        passes.n_forward,
        passes.n_backward,
        time.perf_counter() - start,
        delta,
        classes,
    )
