"""The hardening comparison table on digits: for each zoo architecture, every training method at
one Linf eps (and an L2 radius), each model evaluated the same way: clean accuracy, robust
accuracy under the attack engine's suite (``robustlab.attacks.evaluate``) and certified accuracy
(``robustlab.bounds.certify``: IBP, CROWN or the Lipschitz certificate; an L2 ball for the L2
columns), with training time per method. ``--seeds 0,1,2`` repeats the run and adds the mean, to
see which differences are larger than the seed's. No peer: the issue asks for the table itself.

    python benchmarks/train_benchmark.py [--eps 0.1] [--l2-eps 0.5] [--epochs 20] [--arch mlp,cnn]
        [--methods standard,pgd-at,...] [--suite fast] [--seeds 0] [--optimizer adam|sgd]
        [--lr 1e-2] [--iat-adversary clean|interpolated]
"""

from __future__ import annotations

import argparse
import os

import torch

THREADS = 1  # small networks: one thread is the fastest on a shared machine
torch.set_num_threads(THREADS)

from robustlab import zoo  # noqa: E402
from robustlab.data import load_digits_split  # noqa: E402
from robustlab.train.compare import Comparison, compare  # noqa: E402

METHODS = ("standard", "pgd-at", "trades", "fast-at", "interpolated-at", "mixup", "hr",
           "lipschitz", "ibp", "crown-ibp")  # fmt: skip
KEYS = ("clean_accuracy", "robust_accuracy", "certified_accuracy", "robust_l2_accuracy",
        "certified_l2_accuracy", "train_seconds")  # fmt: skip


def mean_table(tables: list[Comparison]) -> Comparison:
    """The mean of each number over the seeds' tables (same methods in the same order)."""
    rows = []
    for group in zip(*(t.rows for t in tables), strict=True):
        row = {"method": group[0]["method"], "epochs": group[0]["epochs"]}
        for k in KEYS:
            if k in group[0]:
                row[k] = sum(r[k] for r in group) / len(group)
        rows.append(row)
    return Comparison(tables[0].eps, rows)


def _load(avg: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.1f}" for v in avg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--l2-eps", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--arch", default="mlp,cnn")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--suite", default="fast")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--optimizer", default="adam", help="adam (cosine) or sgd (step decay)")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument(
        "--iat-adversary", default="clean", help="interpolated-at: clean or interpolated"
    )
    args = ap.parse_args()
    train_d, test_d = load_digits_split(train=True), load_digits_split(train=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    for arch in args.arch.split(","):
        tables = []
        for seed in seeds:
            load0 = os.getloadavg()

            def build(arch=arch, seed=seed):
                with torch.random.fork_rng():
                    torch.manual_seed(seed)
                    return zoo.build(arch)

            table = compare(build, train_d, test_d, args.methods.split(","), args.eps,
                            epochs=args.epochs, suite=args.suite, l2_eps=args.l2_eps,
                            method_kwargs={"lipschitz": {"eps": args.l2_eps},
                                           "interpolated-at": {"adversary": args.iat_adversary}},
                            seed=seed, optimizer=args.optimizer, lr=args.lr)  # fmt: skip
            tables.append(table)
            print(f"\nzoo {arch} on digits ({len(train_d)} train / {len(test_d)} test), Linf eps "
                  f"{args.eps}, L2 {args.l2_eps}, {args.epochs} epochs, batch 32, {args.optimizer} lr "
                  f"{args.lr:g}, interpolated-at adversary {args.iat_adversary}, "
                  f"seed {seed}; robust: suite '{args.suite}'; certified: IBP, CROWN or "
                  f"Lipschitz; {THREADS} threads, shared machine; load average (1, 5, 15 min) "
                  f"{_load(load0)} before, {_load(os.getloadavg())} after\n")  # fmt: skip
            print(table.markdown(), flush=True)
        if len(tables) > 1:
            print(f"\nzoo {arch}: mean over seeds {seeds}\n")
            print(mean_table(tables).markdown(), flush=True)


if __name__ == "__main__":
    main()
