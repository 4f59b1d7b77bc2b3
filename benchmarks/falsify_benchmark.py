"""ACAS Xu's violated properties (issue 17): the sample search (``falsify.sample_search``) beside
the APGD attack it replaces for few inputs (``falsify.attack``), in this process, interleaved,
each given ``--seconds`` of CPU at most and several seeds: CPU seconds to the first violation
(re-checked by a float64 forward pass here; the verifier re-checks with onnxruntime), or "-".

    python benchmarks/falsify_benchmark.py [--seconds 2] [--seeds 3] [NET/PROP ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import torch

from robustlab.verify.falsify import attack, sample_search
from robustlab.verify.verifier import load_onnx
from robustlab.verify.vnnlib import read_vnnlib

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "acasxu"


def _checked(model, spec, found) -> bool:
    r, x = found
    with torch.no_grad():
        y = model.double()(x.double()[None])
    model.float()
    return float(spec.property(r).violation(y)) <= 0


def _sample(model, spec, seconds: float, seed: int) -> float | None:
    t0 = time.process_time()
    for item in sample_search(model, spec, torch.arange(len(spec)), (5,), seed=seed):
        if item is not None and _checked(model, spec, item):
            return time.process_time() - t0
        if time.process_time() - t0 > seconds:
            return None
    return None


def _apgd(model, spec, seconds: float, seed: int) -> float | None:
    t0 = time.process_time()
    regions = torch.arange(len(spec))
    found = attack(model, spec, regions, (5,), seconds=seconds, rounds=10**6, seed=seed)
    return time.process_time() - t0 if found and _checked(model, spec, found) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help="NET/PROP, e.g. 1_5/2 (default: every violated)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--root", type=Path, default=ROOT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = args.cases
    if not cases:
        with (args.root / "expected.csv").open() as f:
            rows = [r for r in csv.DictReader(f) if r["expected"] == "violated"]
        cases = [f"{r['onnx'][13:16]}/{r['vnnlib'][5:-7]}" for r in rows]
    fmt = lambda t: "-" if t is None else f"{t:.3f}"  # noqa: E731
    print(f"{'case':<8}{'sample search s':>28}{'APGD attack s':>28}{'load':>6}")
    for case in cases:
        net, prop = case.split("/")
        model = load_onnx(args.root / f"ACASXU_run2a_{net}_batch_2000.onnx")[0].module
        spec = read_vnnlib(args.root / f"prop_{prop}.vnnlib", 5, 5)
        ours, theirs = [], []
        for seed in range(args.seeds):
            ours.append(_sample(model, spec, args.seconds, seed))
            theirs.append(_apgd(model, spec, args.seconds, seed))
        load = os.getloadavg()[0]
        a, b = " ".join(map(fmt, ours)), " ".join(map(fmt, theirs))
        print(f"{case:<8}{a:>28}{b:>28}{load:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
