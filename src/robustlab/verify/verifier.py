"""Complete verification of an ONNX network against a VNN-LIB property: falsification, then
incomplete bounds on every region at once, then branch and bound per region until the time runs
out.

Every ``violated`` answer carries a counterexample re-checked by onnxruntime inside the box;
every ``holds`` answer comes from sound bounds (CROWN in float64, with a margin). The timeout
covers everything, loading and conversion included: bound passes and optimisation loops check
the deadline (``robustlab.deadline``), so a verdict arrives within the timeout plus the time of
the step that was running (well under 2 s) and of the final onnxruntime re-check."""

from __future__ import annotations

import atexit
import gzip
import tempfile
import threading
import time
import weakref
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustlab import deadline
from robustlab.errors import RobustlabError, canonical, unknown
from robustlab.model import load_model
from robustlab.results import Metric
from robustlab.verify.cases import case_nodes, verify_cases
from robustlab.verify.engine import STRATEGIES, verify_spec
from robustlab.verify.oracle import OnnxOracle
from robustlab.verify.product import to_product
from robustlab.verify.relational import build, counterexample_text
from robustlab.verify.vnnlib import read_text, read_vnnlib
from robustlab.verify.vnnlib2 import Unsupported, from_v1, is_vnnlib2, read_query

VERDICTS = ("holds", "violated", "timeout", "unknown", "error")
# the 1.0 reader's refusals of constraints beyond boxes, which the 2.0 path reads instead
_V1_BEYOND_BOXES = ("that bound one X_i each", "mixes inputs and outputs")
RECHECK_S = 1.5  # past the timeout, for the onnxruntime re-check of a counterexample found in time

__all__ = ["STRATEGIES", "VERDICTS", "VerifyResult", "load_onnx", "verify", "verify_spec"]


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

    def metrics(self) -> list[Metric]:
        """The seconds taken, and 0 / 1 for each of the verdicts holds, violated and timeout."""
        return [Metric("seconds", self.seconds, False),
                *(Metric(v, float(self.verdict == v), v == "holds")
                  for v in ("holds", "violated", "timeout"))]  # fmt: skip

    def summary(self) -> str:
        """One line: the verdict, the time, the strategy, what proved it or the counterexample."""
        parts = [f"{self.verdict} in {self.seconds:.2f} s", f"strategy {self.strategy or '-'}"]
        st = self.stats
        if st.get("proved_by"):
            parts.append(f"proved by {st['proved_by']}")
        if st.get("open_regions") is not None and self.verdict not in ("holds", "violated"):
            parts.append(f"{st['open_regions']} of {st.get('regions', '?')} regions open")
        if self.counterexample:
            x, y = self.counterexample["x"], self.counterexample["y"]
            parts.append(f"counterexample of {len(x)} inputs, outputs {_short(y)}")
        if self.message:
            parts.append(" ".join(self.message.split())[:200])
        return "; ".join(parts)

    def vnncomp(self) -> str:
        """The result file's text in VNN-COMP's format."""
        word = {"holds": "unsat", "violated": "sat"}.get(self.verdict, self.verdict)
        if self.verdict != "violated":
            return word + "\n"
        if "vnnlib2" in self.counterexample:  # a VNN-LIB 2.0 query: VNN-COMP 2026's format
            return self.counterexample["vnnlib2"]
        lines = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.counterexample["x"])]
        lines += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(self.counterexample["y"])]
        return "sat\n(" + "\n ".join(lines) + ")\n"


def _short(values, k: int = 4) -> str:
    v = [f"{float(a):.4g}" for a in list(values)[:k]]
    return "[" + ", ".join(v) + (", ...]" if len(values) > k else "]")


def load_onnx(path: str | Path):
    """``(LoadedModel, onnx bytes)`` for a plain or gzipped ONNX file (gzip recognised by its
    magic bytes). The bytes are what onnxruntime runs: the loader's (a float64 network whose
    initializers mix float32 and float64 is widened to one type, which onnxruntime requires)."""

    path = Path(path)
    if not path.is_file():
        raise RobustlabError(f"model file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        m = load_model(path)
        return m, m.onnx_bytes or raw
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise RobustlabError(f"{path}: not a valid gzip file ({e})") from None
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    if not name.endswith(".onnx"):
        name += ".onnx"
    with tempfile.TemporaryDirectory(prefix="robustlab-") as tmp:
        plain = Path(tmp) / name
        plain.write_bytes(data)
        try:
            m = load_model(plain)
            return m, m.onnx_bytes or data
        except RobustlabError as e:
            msg = str(e).replace(str(plain), str(path))
            raise type(e)(msg) from None


def verify(
    onnx_path: str | Path,
    vnnlib_path: str | Path,
    *,
    timeout: float = 300.0,
    strategy: str = "auto",
    networks: dict | None = None,
) -> VerifyResult:
    """Verify one VNN-COMP instance (ONNX and VNN-LIB files, plain or gzipped) within
    ``timeout`` seconds, loading included. Raises ``RobustlabError`` for bad settings and missing
    files, like the rest of the API; a file that cannot be read as a network or a property is
    verdict ``error`` (its reason in ``message``). ``strategy``: ``auto`` (input splitting when at most 16 inputs vary, else ReLU
    splitting for ReLU networks and branching on general nonlinearities otherwise),
    ``input-split``, ``relu-split``, ``nonlinear-split``, or ``bounds`` (no branching).
    The property may be VNN-LIB 1.0 or 2.0 (detected from its text); ``networks`` maps the
    names of a 2.0 query's further networks (``isomorphic-to``) to their ONNX files."""
    strategy = canonical(strategy, STRATEGIES)  # relu_split: relu-split
    if strategy not in STRATEGIES:
        raise unknown("strategy", strategy, STRATEGIES)
    if not timeout > 0:
        raise RobustlabError(f"timeout must be positive; found {timeout}")
    for what, path in (("model", onnx_path), ("property", vnnlib_path)):
        if not Path(path).is_file():
            raise RobustlabError(f"{what} file not found: {path}")
    start = time.monotonic()
    end = start + timeout
    box: dict = {}
    # the work runs on its own thread so that the answer keeps the timeout even while one
    # operation (a huge matrix product, a conversion) is still running: that thread stops at
    # its next deadline check
    worker = threading.Thread(
        target=_run,
        args=(onnx_path, vnnlib_path, strategy, start, end, box, networks or {}),
        daemon=True,
    )
    worker.start()
    worker.join(max(0.0, end - time.monotonic()))
    if worker.is_alive() and getattr(box.get("oracle"), "busy", False):
        worker.join(RECHECK_S)  # a counterexample found in time is being re-checked
    if worker.is_alive():
        _ABANDONED.add(worker)
        stats = dict(box.get("stats", {}), abandoned=True)
        used = stats.get("strategy", strategy)
        return VerifyResult("timeout", time.monotonic() - start, used, stats=stats)
    if "raised" in box:
        raise box["raised"]
    return box["result"]


_ABANDONED: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _join_abandoned() -> None:
    """Before the interpreter exits, let abandoned work reach its next deadline check (a thread
    still inside a native operation at exit would abort the process)."""
    for t in list(_ABANDONED):
        t.join(60)


def _run(onnx_path, vnnlib_path, strategy, start, end, box: dict, networks: dict) -> None:
    stats: dict = {}
    box["stats"] = stats
    used = strategy
    try:
        with deadline.within(end):
            text, name = read_text(vnnlib_path, "VNN-LIB")
            query = read_query(vnnlib_path) if is_vnnlib2(text) else None
            first = None
            if query is None:
                loaded, onnx_bytes = first = load_onnx(onnx_path)
                shape = loaded.input_shape
                model = loaded.module
                n_in = int(np.prod(shape))
                with torch.no_grad():
                    n_out = model(torch.zeros(1, *shape)).numel()
                try:
                    spec = read_vnnlib(vnnlib_path, n_in, n_out)
                except RobustlabError as e:
                    if not any(w in str(e) for w in _V1_BEYOND_BOXES):
                        raise
                    query = from_v1(text, name)  # input rows: the 2.0 path reads them
            if query is not None:
                run = (strategy, start, end, box, stats)
                verdict, cex, used, message = _run2(
                    onnx_path, query, networks, run, first=first, v1=first is not None
                )
            else:
                oracle = box["oracle"] = OnnxOracle(onnx_bytes, n_in)
                stats["load_s"] = round(time.monotonic() - start, 3)
                run_spec = verify_cases if case_nodes(model) else verify_spec
                verdict, cex, used, message = run_spec(
                    model, shape, spec, oracle, deadline=end, strategy=strategy, stats=stats
                )
        result = VerifyResult(verdict, time.monotonic() - start, used, cex, message, stats)
    except deadline.DeadlineExceeded:
        result = VerifyResult("timeout", time.monotonic() - start, used, stats=stats)
    except Unsupported as e:  # a valid query with a construct that is not relaxed
        result = VerifyResult("unknown", time.monotonic() - start, used, message=str(e))
    except RobustlabError as e:
        result = VerifyResult("error", time.monotonic() - start, used, message=str(e), stats=stats)
    except BaseException as e:  # an internal error: raised again on the caller's thread
        box["raised"] = e
        return
    box["result"] = result


def _run2(onnx_path, query, networks, run, *, first=None, v1=False):
    """A VNN-LIB 2.0 query: its networks loaded (the positional ONNX file for the first
    network, ``first`` when it was loaded already; ``networks`` by name for the others),
    verified on their product; ``run``: (strategy, start, deadline, box, stats); ``v1``: the
    query came from a 1.0 file (its result file stays in 1.0's format)."""
    strategy, start, end, box, stats = run

    product = to_product(query)
    paths = {}
    for net in query.networks:
        if net.equal_to:
            continue
        path = networks.get(net.name, onnx_path if not paths else None)
        if path is None:
            raise RobustlabError(
                f"{query.name}: no ONNX file for network {net.name}: give networks="
                f"{{{net.name!r}: PATH}} (command line: --network {net.name}=PATH)"
            )
        paths[net.name] = path
    extra = set(networks) - {n.name for n in query.networks}
    if extra:
        raise RobustlabError(f"{query.name}: declares no network {sorted(extra)[0]}")
    loaded, raw = {}, {}
    for name, path in paths.items():
        same = first is not None and path == onnx_path
        loaded[name], raw[name] = first if same else load_onnx(path)
        with torch.no_grad():
            lm = loaded[name]
            n_out = lm.module(torch.zeros(1, *lm.input_shape)).numel()
        net = next(n for n in query.networks if n.name == name)
        declared = sum(v.numel for v in net.outputs)
        if n_out != declared:
            raise RobustlabError(
                f"{query.name}: network {name} declares {declared} output numbers; its model "
                f"returns {n_out}"
            )
    model, shape, oracle = build(product, loaded, raw)
    box["oracle"] = oracle
    stats["load_s"] = round(time.monotonic() - start, 3)
    stats["networks"] = len(query.networks)
    verdict, cex, used, message = verify_spec(
        model, shape, product.spec, oracle, deadline=end, strategy=strategy, stats=stats
    )
    if cex is not None:  # every network's inputs and outputs, flat, in declared order
        values, _ = oracle.assignment(torch.tensor(cex["x"], dtype=torch.float64))
        flat = {k: np.asarray(v, dtype=np.float64).reshape(-1).tolist() for k, v in values.items()}
        cex = {
            "x": [a for v in query.inputs for a in flat[v.name]],
            "y": [a for v in query.outputs for a in flat[v.name]],
            "variables": flat,
        }
        if not v1:  # a 2.0 query's result file: VNN-COMP 2026's format
            cex["vnnlib2"] = counterexample_text(query, values)
    return verdict, cex, used, message
