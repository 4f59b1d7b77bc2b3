"""Blind spots of a standard and an adversarially trained zoo CNN on digits, side by side.

Level-set traversal (Sahoo et al. 2023) on the same pairs of test images for both models: the
distance travelled at unchanged prediction and confidence (Linf, L2, fraction of the way to the
target), and the shape bias on the same cue-conflict images. The paper finds robust models
under-sensitive far outside their threat model (long level-set paths); Chen et al. find them
more shape-biased.

    python benchmarks/blindspots_benchmark.py [--eps 0.1] [--epochs 30] [--pairs 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from robustlab import zoo
from robustlab.blindspots import level_set_traversal, pairs, shape_bias
from robustlab.data import load_digits_split
from robustlab.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tr, te = load_digits_split(train=True), load_digits_split(train=False)
    models = {"standard": zoo.pretrained("cnn")}
    t = time.perf_counter()
    robust = zoo.build("cnn")
    train(robust, tr, "pgd-at", args.eps, epochs=args.epochs, batch_size=32, lr=1e-3, seed=0)
    models[f"pgd-at eps {args.eps:g}"] = robust.eval()
    print(f"PGD-AT training: {time.perf_counter() - t:.0f} s")
    s, tg = pairs(te.y, args.pairs, seed=0)
    print(f"{'model':18s} {'clean':>6s} {'fraction':>8s} {'Linf':>6s} {'L2':>6s} {'unchanged':>9s} "
          f"{'shape bias':>10s} {'texture only':>12s}")  # fmt: skip
    for name, m in models.items():
        with torch.no_grad():
            clean = float((m(te.x).argmax(1) == te.y).float().mean())
        r = level_set_traversal(m, te.x[s], te.x[tg], n_steps=args.steps)
        b = shape_bias(m, te.x, te.y, n_pairs=500, seed=0)
        print(f"{name:18s} {clean:6.3f} {r.fraction.mean():8.3f} {r.linf.mean():6.3f} "
              f"{r.l2.mean():6.3f} {int(r.unchanged.sum()):4d}/{len(s):<4d} "
              f"{b.shape_bias:10.3f} {b.texture_only_accuracy:12.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
