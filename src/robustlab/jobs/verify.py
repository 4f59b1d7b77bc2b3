"""The ``robustlab verify`` and ``verify-benchmark`` jobs: one instance (its VNN-COMP result
file and its run-history entry), and a benchmark's inputs checked before any work."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

from robustlab.bounds import heap
from robustlab.errors import RobustlabError
from robustlab.paths import cannot_write, output_file
from robustlab.verify.runner import read_expected, read_instances
from robustlab.verify.verifier import VerifyResult, verify


def parse_networks(network: list[str]) -> dict[str, str]:
    """``NAME=PATH`` items: the ONNX file of each network a VNN-LIB 2.0 query names."""
    bad = next((n for n in network if "=" not in n or not n.split("=", 1)[0]), None)
    if bad is not None:
        raise RobustlabError(f"network: expected NAME=PATH; found {bad!r}", param="network")
    return dict(n.split("=", 1) for n in network)


def verify_job(
    onnx_file: Path | str,
    vnnlib_file: Path | str,
    *,
    timeout: float = 300.0,
    strategy: str = "auto",
    networks: dict[str, str] | None = None,
    out: Path | str | None = None,
) -> VerifyResult:
    """Verify one instance; ``out``: the result in VNN-COMP's format (folders created). The
    process keeps freed memory for reuse from here on (``bounds.heap``: a command's process)."""
    heap.keep_freed_memory()
    result = verify(onnx_file, vnnlib_file, timeout=timeout, strategy=strategy, networks=networks)
    if out is not None:
        try:
            output_file(out).write_text(result.vnncomp())
        except OSError as e:
            raise cannot_write(out, e) from None
    return result


def history_entry(result: VerifyResult, onnx_file: Path, vnnlib_file: Path, out) -> dict:
    """A verify run's fields in the run history: the verdict (settings), seconds and 0 / 1 per
    verdict (``VerifyResult.metrics``)."""
    return {
        "model": Path(onnx_file).name,
        "model_hash": hashlib.sha256(Path(onnx_file).read_bytes()).hexdigest(),
        "data": Path(vnnlib_file).name,
        "settings": {
            "verdict": result.verdict,
            "strategy": result.strategy,
            "vnnlib": str(vnnlib_file),
            "summary": result.summary(),
        },
        "metrics": {m.name: m.value for m in result.metrics()},
        "report": None if out is None else str(Path(out).resolve()),
    }


def check_instances(instances: Path, timeout_scale: float = 1.0) -> None:
    """Before any work: the instances file is text and its rows are instances."""
    try:
        read_instances(instances, timeout_scale)
    except RobustlabError:
        raise
    except (ValueError, csv.Error) as e:  # undecodable bytes, NUL bytes
        raise RobustlabError(
            f"{instances}: expected a text CSV of rows onnx,vnnlib,timeout ({e})"
        ) from None


def expected_answers(path: Path) -> dict:
    """``expected``: a readable CSV with the expected columns, or one line."""
    if not Path(path).is_file():
        raise RobustlabError(f"expected file not found: {path}", param="expected")
    try:
        return read_expected(path)
    except (OSError, ValueError, KeyError) as e:  # also undecodable bytes, missing columns
        raise RobustlabError(
            f"expected {path}: expected a CSV with columns onnx,vnnlib,timeout_s,expected ({e!r})",
            param="expected",
        ) from None
