"""Complete verification of an ONNX network against a VNN-LIB property: falsification, then
incomplete bounds, then branch and bound until the time runs out.

Every ``violated`` answer carries a counterexample re-checked by onnxruntime; every ``holds``
answer comes from sound bounds (CROWN in float64, with a margin)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustlab.bounds import compute_bounds
from robustlab.bounds.graph import graph_of
from robustlab.errors import RobustlabError
from robustlab.model import load_model
from robustlab.threat import Box
from robustlab.verify import bab
from robustlab.verify.falsify import check_onnx, float32_box, search
from robustlab.verify.relu_split import relu_split
from robustlab.verify.spec import Property, Spec
from robustlab.verify.vnnlib import read_vnnlib

VERDICTS = ("holds", "violated", "timeout", "unknown", "error")
STRATEGIES = ("auto", "input-split", "relu-split", "bounds")
INPUT_SPLIT_MAX_DIM = 16


@dataclass(frozen=True)
class VerifyResult:
    """The answer for one instance; ``counterexample`` holds ``x`` and ``y`` when violated."""

    verdict: str
    seconds: float
    strategy: str = ""
    counterexample: dict | None = None
    message: str = ""
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def vnncomp(self) -> str:
        """The result file's text in VNN-COMP's format."""
        word = {"holds": "unsat", "violated": "sat"}.get(self.verdict, self.verdict)
        if self.verdict != "violated":
            return word + "\n"
        lines = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.counterexample["x"])]
        lines += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(self.counterexample["y"])]
        return "sat\n(" + "\n ".join(lines) + ")\n"


def _onnx_input_shape(onnx_bytes: bytes) -> list[int]:
    import onnx

    proto = onnx.load_model_from_string(onnx_bytes)
    inits = {i.name for i in proto.graph.initializer}
    inp = next(i for i in proto.graph.input if i.name not in inits)
    return [d.dim_value if d.dim_value > 0 else 1 for d in inp.type.tensor_type.shape.dim]


def _root_bounds_hold(model, prop: Property, shape, method: str, margin) -> bool:
    C, d, groups = bab._stack_spec(prop)
    lo, hi = prop.lower.reshape(1, *shape), prop.upper.reshape(1, *shape)
    b = compute_bounds(
        model, Box(lo, hi), method, C=C[None], bound_upper=False, stop_when_positive=False
    )
    return bool(bab.infeasible(b.lower.double(), d, groups, margin).all())


def verify_property(
    model,
    onnx_bytes: bytes,
    prop: Property,
    shape,
    onnx_shape,
    deadline: float,
    strategy: str,
    stats: dict,
) -> tuple[str, dict | None]:
    """Verdict for one input box and its unsafe region."""
    x = search(model, prop, shape)
    if x is not None:
        y = check_onnx(onnx_bytes, prop, x, onnx_shape)
        if y is not None:
            return "violated", {"x": x.float().tolist(), "y": y.tolist()}
    graph = graph_of(model, tuple(shape))
    margin = bab.hold_margin(graph, prop, shape)  # scaled to the network's outputs and inputs
    # ReLU splitting starts with its own alpha-CROWN pass over every row
    for method in ("crown",) if strategy == "relu-split" else ("crown", "alpha-crown"):
        if time.monotonic() > deadline:
            return "timeout", None
        if _root_bounds_hold(model, prop, shape, method, margin):
            stats["proved_by"] = method
            return "holds", None
    if strategy not in ("input-split", "relu-split"):
        return "unknown", None
    st = bab.BabStats()
    if strategy == "relu-split":
        verdict, x = relu_split(
            graph, prop, shape, model, deadline=deadline, stats=st, margin=margin
        )
    else:
        # a portfolio of branching rules, with shares of time: look-ahead over every input
        # (decisive on some properties), and the "smart" rule on the row closest to refuting the
        # weakest disjunct, or on the weakest row
        kw = dict(stats=st, margin=margin)
        searches = [
            bab.search_steps(graph, prop, shape, model, lookahead=len(prop.lower), **kw),
            bab.search_steps(graph, prop, shape, model, lookahead=1, **kw),
        ]
        if any(len(dj.d) > 1 for dj in prop.disjuncts):  # else the two rows are the same
            searches.append(
                bab.search_steps(graph, prop, shape, model, lookahead=1, weakest_first=True, **kw)
            )
        shares = [1.0] + [2.0] * (len(searches) - 1)  # the look-ahead costs k_in times more
        verdict, x = bab.portfolio(searches, deadline, shares)
    stats.update(domains=st.domains, max_queue=st.max_queue)
    if verdict != "violated":
        return verdict, None
    lo32, hi32 = float32_box(prop.lower, prop.upper)
    x32 = torch.minimum(torch.maximum(x.float(), lo32), hi32)
    y = check_onnx(onnx_bytes, prop, x32, onnx_shape)
    if y is not None:
        return "violated", {"x": x32.tolist(), "y": y.tolist()}
    # rounding made the candidate miss: look around it with a focused search
    near = Property(
        torch.maximum(x - 1e-3 * (prop.upper - prop.lower), prop.lower),
        torch.minimum(x + 1e-3 * (prop.upper - prop.lower), prop.upper),
        prop.disjuncts,
    )
    x2 = search(model, near, shape, samples=512)
    y = None if x2 is None else check_onnx(onnx_bytes, prop, x2, onnx_shape)
    if y is not None:
        return "violated", {"x": x2.float().tolist(), "y": y.tolist()}
    return "unknown", None


def verify(
    onnx_path: str | Path,
    vnnlib_path: str | Path,
    *,
    timeout: float = 300.0,
    strategy: str = "auto",
) -> VerifyResult:
    """Verify one VNN-COMP instance; never raises for a bad instance (verdict ``error``), only for
    bad settings. ``strategy``: ``auto`` (input splitting up to 16 inputs, else ReLU splitting),
    ``input-split``, ``relu-split``, or ``bounds`` (no branching)."""
    if strategy not in STRATEGIES:
        raise RobustlabError(f"strategy must be one of {', '.join(STRATEGIES)}; found {strategy!r}")
    if not timeout > 0:
        raise RobustlabError(f"timeout must be positive; found {timeout}")
    start = time.monotonic()
    deadline = start + timeout
    stats: dict = {}
    try:
        loaded = load_model(onnx_path)
        onnx_bytes = Path(onnx_path).read_bytes()
        shape = loaded.input_shape
        n_in = int(np.prod(shape))
        model = loaded.module
        with torch.no_grad():
            n_out = model(torch.zeros(1, *shape)).numel()
        spec: Spec = read_vnnlib(vnnlib_path, n_in, n_out)
        if strategy == "auto":
            strategy = "input-split" if n_in <= INPUT_SPLIT_MAX_DIM else "relu-split"
        onnx_shape = _onnx_input_shape(onnx_bytes)
        if int(np.prod(onnx_shape)) != n_in:
            onnx_shape = [1, *shape]
        verdicts = []
        for prop in spec.properties:
            verdict, cex = verify_property(
                model, onnx_bytes, prop, shape, onnx_shape, deadline, strategy, stats
            )
            if verdict == "violated":
                return VerifyResult(
                    "violated", time.monotonic() - start, strategy, cex, stats=stats
                )
            verdicts.append(verdict)
        final = (
            "holds"
            if all(v == "holds" for v in verdicts)
            else ("timeout" if "timeout" in verdicts else "unknown")
        )
        return VerifyResult(final, time.monotonic() - start, strategy, stats=stats)
    except RobustlabError as e:
        return VerifyResult("error", time.monotonic() - start, strategy, message=str(e))
