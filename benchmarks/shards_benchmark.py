"""Certification of 2,000 digits points with CROWN (zoo:cnn, Linf 0.03) in one process and on a
Dask LocalCluster of 1 and 2 workers (issue 23): seconds, speed-up over one worker, and that every
run certified the same points.

The points are scikit-learn's 1,797 digits (test split, then training split) and the first 203
again, to make 2,000. Every process runs with one thread (OMP_NUM_THREADS=1; Dask's workers start
with it), so the speed-up is that of processes, not of threads. The load average is printed: other
work on the machine takes cores from the workers.

    python benchmarks/shards_benchmark.py [--n 2000] [--shard-size 64] [--model zoo:cnn]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from robustlab.bounds.certify_many import certify_many  # noqa: E402
from robustlab.data import Dataset, load_digits_split  # noqa: E402
from robustlab.model import load_model  # noqa: E402
from robustlab.shards import Backend  # noqa: E402


def points(n: int) -> Dataset:
    test, train = load_digits_split(train=False), load_digits_split(train=True)
    x, y = torch.cat([test.x, train.x]), torch.cat([test.y, train.y])
    reps = -(-n // len(x))
    x, y = x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n]
    return Dataset("digits-2000", x, y, test.lower, test.upper)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--shard-size", type=int, default=64)
    ap.add_argument("--model", default="zoo:cnn")
    ap.add_argument("--eps", type=float, default=0.03)
    args = ap.parse_args()
    torch.set_num_threads(1)
    module, data = load_model(args.model).module, points(args.n)
    runs = [("one process", Backend())]
    runs += [(f"dask, {w} worker{'s' * (w > 1)}", Backend("dask", w, shard_size=args.shard_size))
             for w in (1, 2)]  # fmt: skip
    print(f"{args.model}, {len(data)} points, CROWN, Linf {args.eps}, shards of {args.shard_size};"
          f" load average {os.getloadavg()[0]:.1f} before")  # fmt: skip
    print("| run | seconds | speed-up vs 1 worker | certified |\n|---|---|---|---|")
    first, one = None, None
    for name, backend in runs:
        t = time.perf_counter()
        r = certify_many(module, data, [args.eps], "inf", "crown", backend=backend)
        s = time.perf_counter() - t
        first = first or r.certified
        one = s if name.startswith("dask, 1") else one
        speed = f"{one / s:.2f}x" if one and name.startswith("dask") else "-"
        same = "same" if r.certified == first else "DIFFERENT"
        print(f"| {name} | {s:.1f} | {speed} | {r.certified_accuracy:.4f} ({same}) |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
