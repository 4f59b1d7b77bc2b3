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
from robustlab.errors import RobustlabError
from robustlab.verify.engine import STRATEGIES, verify_spec
from robustlab.verify.oracle import OnnxOracle
from robustlab.verify.vnnlib import read_vnnlib

VERDICTS = ("holds", "violated", "timeout", "unknown", "error")
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

    def vnncomp(self) -> str:
        """The result file's text in VNN-COMP's format."""
        word = {"holds": "unsat", "violated": "sat"}.get(self.verdict, self.verdict)
        if self.verdict != "violated":
            return word + "\n"
        lines = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.counterexample["x"])]
        lines += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(self.counterexample["y"])]
        return "sat\n(" + "\n ".join(lines) + ")\n"


def load_onnx(path: str | Path):
    """``(LoadedModel, onnx bytes)`` for a plain or gzipped ONNX file (gzip recognised by its
    magic bytes)."""
    from robustlab.model import load_model

    path = Path(path)
    if not path.is_file():
        raise RobustlabError(f"model file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return load_model(path), raw
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
            return load_model(plain), data
        except RobustlabError as e:
            msg = str(e).replace(str(plain), str(path))
            raise type(e)(msg) from None


def verify(
    onnx_path: str | Path,
    vnnlib_path: str | Path,
    *,
    timeout: float = 300.0,
    strategy: str = "auto",
) -> VerifyResult:
    """Verify one VNN-COMP instance (ONNX and VNN-LIB files, plain or gzipped) within
    ``timeout`` seconds, loading included; never raises for a bad instance (verdict ``error``),
    only for bad settings. ``strategy``: ``auto`` (input splitting when at most 16 inputs vary, else ReLU
    splitting for ReLU networks and branching on general nonlinearities otherwise),
    ``input-split``, ``relu-split``, ``nonlinear-split``, or ``bounds`` (no branching)."""
    if strategy not in STRATEGIES:
        raise RobustlabError(f"strategy must be one of {', '.join(STRATEGIES)}; found {strategy!r}")
    if not timeout > 0:
        raise RobustlabError(f"timeout must be positive; found {timeout}")
    start = time.monotonic()
    end = start + timeout
    box: dict = {}
    # the work runs on its own thread so that the answer keeps the timeout even while one
    # operation (a huge matrix product, a conversion) is still running: that thread stops at
    # its next deadline check
    worker = threading.Thread(
        target=_run, args=(onnx_path, vnnlib_path, strategy, start, end, box), daemon=True
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


def _run(onnx_path, vnnlib_path, strategy: str, start: float, end: float, box: dict) -> None:
    stats: dict = {}
    box["stats"] = stats
    used = strategy
    try:
        with deadline.within(end):
            loaded, onnx_bytes = load_onnx(onnx_path)
            shape = loaded.input_shape
            model = loaded.module
            n_in = int(np.prod(shape))
            with torch.no_grad():
                n_out = model(torch.zeros(1, *shape)).numel()
            spec = read_vnnlib(vnnlib_path, n_in, n_out)
            oracle = box["oracle"] = OnnxOracle(onnx_bytes, n_in)
            stats["load_s"] = round(time.monotonic() - start, 3)
            verdict, cex, used, message = verify_spec(
                model, shape, spec, oracle, deadline=end, strategy=strategy, stats=stats
            )
        result = VerifyResult(verdict, time.monotonic() - start, used, cex, message, stats)
    except deadline.DeadlineExceeded:
        result = VerifyResult("timeout", time.monotonic() - start, used, stats=stats)
    except RobustlabError as e:
        result = VerifyResult("error", time.monotonic() - start, used, message=str(e), stats=stats)
    except BaseException as e:  # an internal error: raised again on the caller's thread
        box["raised"] = e
        return
    box["result"] = result
