"""Every ONNX file of the shared benchmarks through ``load_model``: per family, files loaded /
files, the largest difference from onnxruntime (absolute, and relative to the output scale), and
load seconds (read + convert + onnxruntime check), with onnxruntime's own session creation for the
same file as the peer's reference time.

    python benchmarks/onnx_families.py [--root ../shared/benchmarks] [--only FAMILY] [--errors]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path

import torch

torch.set_num_threads(1)

from robustlab.model import load_model  # noqa: E402


def _family(root: Path, path: Path) -> str:
    rel = path.relative_to(root).parts
    return "/".join(rel[:2]) if rel[0] in ("vnncomp2023", "vnnlib2") else rel[0]


def _ort_seconds(data: bytes) -> float:
    import onnxruntime as ort

    start = time.perf_counter()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "benchmarks")
    )
    parser.add_argument("--only", default="")
    parser.add_argument("--errors", action="store_true", help="print each failure")
    args = parser.parse_args()
    root = Path(args.root)
    files = sorted(p for p in root.rglob("*") if p.name.endswith((".onnx", ".onnx.gz")))
    rows: dict[str, list] = defaultdict(list)
    for path in files:
        family = _family(root, path)
        if args.only and args.only not in family:
            continue
        start = time.perf_counter()
        try:
            m = load_model(path)
            seconds = time.perf_counter() - start
            rows[family].append(
                (
                    True,
                    m.onnx_max_abs_error,
                    m.onnx_max_rel_error,
                    seconds,
                    _ort_seconds(m.onnx_bytes),
                )
            )
        except Exception as e:  # noqa: BLE001 - a table of every outcome
            seconds = time.perf_counter() - start
            rows[family].append((False, None, None, seconds, None))
            if args.errors:
                print(f"{path.relative_to(root)}: {type(e).__name__}: {str(e)[:300]}")
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}")
    head = f"{'family':32} {'loaded':>8} {'max abs':>9} {'max rel':>9} {'load s max':>10} {'ort s max':>9}"
    print(head)
    print("-" * len(head))
    for family, items in rows.items():
        ok = [r for r in items if r[0]]
        abs_err = max((r[1] for r in ok), default=float("nan"))
        rel_err = max((r[2] for r in ok), default=float("nan"))
        load = max(r[3] for r in items)
        ort_s = max((r[4] for r in ok), default=float("nan"))
        print(
            f"{family:32} {len(ok):>3}/{len(items):<4} {abs_err:9.2e} {rel_err:9.2e} "
            f"{load:10.2f} {ort_s:9.2f}"
        )


if __name__ == "__main__":
    main()
