"""The hardening comparison table on digits: for each zoo architecture, standard, PGD-AT, TRADES,
fast-AT, IBP and CROWN-IBP training at one Linf eps, each model evaluated the same way: clean
accuracy, robust accuracy under the attack engine's suite (``robustlab.attacks.evaluate``) and
certified accuracy from the bound engine (``robustlab.bounds.certify``, IBP or CROWN), with
training time per method. No peer: the issue asks for the table itself.

    python benchmarks/train_benchmark.py [--eps 0.1] [--epochs 20] [--arch mlp,cnn] [--suite fast]
"""

from __future__ import annotations

import argparse

import torch

THREADS = 2
torch.set_num_threads(THREADS)

from robustlab import zoo  # noqa: E402
from robustlab.data import load_digits_split  # noqa: E402
from robustlab.train.compare import compare  # noqa: E402

METHODS = ("standard", "pgd-at", "trades", "fast-at", "ibp", "crown-ibp")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--arch", default="mlp,cnn")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--suite", default="fast")
    args = ap.parse_args()
    train_d, test_d = load_digits_split(train=True), load_digits_split(train=False)
    for arch in args.arch.split(","):

        def build(arch=arch):
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return zoo.build(arch)

        table = compare(build, train_d, test_d, args.methods.split(","), args.eps,
                        epochs=args.epochs, suite=args.suite)  # fmt: skip
        print(f"\nzoo {arch} on digits ({len(train_d)} train / {len(test_d)} test), Linf eps "
              f"{args.eps}, {args.epochs} epochs, batch 32, Adam lr 1e-2; robust: suite "
              f"'{args.suite}'; certified: IBP or CROWN; {THREADS} threads, shared machine\n")  # fmt: skip
        print(table.markdown(), flush=True)


if __name__ == "__main__":
    main()
