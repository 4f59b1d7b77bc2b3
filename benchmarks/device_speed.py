"""The same jobs on CPU and on CUDA (issue 23's GPU table): an attack suite and certification on
zoo:cnn and digits (verification has no device option yet). Run by ``gpu_check.sh``; on a
machine without CUDA only the CPU column is filled.

    python benchmarks/device_speed.py [--n 450]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from robustlab.jobs import attack_job, certify_job


def _time(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=450)
    args = ap.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    jobs = {
        "attack fast suite, zoo:cnn, Linf 0.1": lambda d: attack_job(
            "zoo:cnn", "digits", [0.1], n=args.n, device=d
        )["robust_accuracy"],
        "certify CROWN float64, zoo:cnn, Linf 0.03": lambda d: certify_job(
            "zoo:cnn", "digits", [0.03], n=args.n, device=d
        )["certified_accuracy"],
        "certify alpha-CROWN, zoo:cnn, Linf 0.03": lambda d: certify_job(
            "zoo:cnn", "digits", [0.03], method="alpha-crown", n=min(args.n, 100), device=d
        )["certified_accuracy"],
    }
    print(f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print("| job | " + " | ".join(f"{d} s (result)" for d in devices) + " |")
    print("|---|" + "---|" * len(devices))
    for name, job in jobs.items():
        job("cpu")  # warm-up: zoo training on first use, imports
        cells = []
        for d in devices:
            s, r = _time(lambda d=d, job=job: job(d))
            cells.append(f"{s:.2f} ({r:.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
