"""Robustness against sparsity on digits (issue 20's acceptance): a dense PGD-AT zoo CNN at Linf
eps, then magnitude, HYDRA and PwoA pruning at several sparsities with the same fine-tuning
budget, each model exported to ONNX and evaluated from the file (clean, attack-suite robust,
IBP / CROWN certified). Prints a Markdown table with the training times and whether HYDRA at 90%
is within 3 points of the dense model's robust accuracy and above magnitude pruning's.

    python benchmarks/compression_benchmark.py [--eps 0.1] [--epochs 10] [--out DIR]

No peer is run: HYDRA's and PwoA's reference code (PyTorch, CUDA) is not installed here; the
numbers are robustlab's own, on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from robustlab.jobs.compress import prune_job  # noqa: E402
from robustlab.jobs.train import train_job  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=10, help="fine-tuning (and score / ADMM) epochs")
    ap.add_argument("--dense-epochs", type=int, default=20)
    ap.add_argument("--sparsity", default="0.5,0.8,0.9,0.95")
    ap.add_argument("--methods", default="magnitude,hydra,pwoa")
    ap.add_argument("--out", type=Path, default=Path("compression-benchmark"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    dense = args.out / "dense.onnx"
    tr = train_job("cnn", "digits", "pgd-at", args.eps, epochs=args.dense_epochs, out=dense)
    print(f"dense PGD-AT: {time.perf_counter() - t0:.0f} s, robust {tr['robust_accuracy']:.3f}")
    sparsities = [float(s) for s in args.sparsity.split(",")]
    r = prune_job(dense, "digits", sparsities, args.methods, eps=args.eps, epochs=args.epochs,
                  score_epochs=args.epochs, out=args.out / "pruned.onnx")  # fmt: skip
    d = r["dense"]
    print("| method | sparsity | clean | robust | certified | prune s | fine-tune s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| dense | 0 | {d['clean_accuracy']:.3f} | {d['robust_accuracy']:.3f} | "
          f"{d['certified_accuracy']:.3f} | - | {tr['comparison'][0]['train_seconds']:.1f} |")  # fmt: skip
    for row in r["rows"]:
        print(f"| {row['method']} | {row['sparsity']:.3f} | {row['clean_accuracy']:.3f} | "
              f"{row['robust_accuracy']:.3f} | {row['certified_accuracy']:.3f} | "
              f"{row['prune_seconds']:.1f} | {row['finetune_seconds']:.1f} |")  # fmt: skip
    at = {(x["method"], x["target_sparsity"]): x["robust_accuracy"] for x in r["rows"]}
    if ("hydra", 0.9) in at and ("magnitude", 0.9) in at:
        h, m = at[("hydra", 0.9)], at[("magnitude", 0.9)]
        print(f"HYDRA at 90%: {h:.3f} (dense {d['robust_accuracy']:.3f}, within 3 points: "
              f"{d['robust_accuracy'] - h <= 0.03}); magnitude {m:.3f} (HYDRA above: {h > m})")  # fmt: skip
    print(f"total {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
