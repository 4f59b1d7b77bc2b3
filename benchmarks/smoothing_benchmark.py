"""robustlab's randomized smoothing against a straightforward reimplementation of Cohen et al.'s
reference loop (locuslab/smoothing, code/core.py: one input at a time, ``x.repeat`` batches,
counting predictions in a Python loop, ``proportion_confint(..., method="beta")``), written here
from the paper's pseudocode and that file's structure; no peer code is copied or imported except
statsmodels for the reference's confidence bound (scipy's beta quantile when it is missing).

Two tables: CERTIFY throughput (noisy samples per second) at the same n0, n and batch size,
interleaved repeats, medians; and identical radii / decisions given identical counts.

    python benchmarks/smoothing_benchmark.py [--n 10000] [--inputs 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from math import ceil

import numpy as np
import torch
from scipy.stats import binomtest, norm

THREADS = 2
torch.set_num_threads(THREADS)

from robustlab import load_data, load_model  # noqa: E402
from robustlab.smoothing import (  # noqa: E402
    certify_from_counts,
    predict_from_counts,
    sample_counts,
)
from robustlab.smoothing.core import certify as rl_certify  # noqa: E402

try:
    from statsmodels.stats.proportion import proportion_confint

    BOUND = "statsmodels proportion_confint(beta)"
except ImportError:  # the same Clopper-Pearson bound from scipy
    from scipy.stats import beta as _beta

    def proportion_confint(count, nobs, alpha, method):  # noqa: ARG001
        return (_beta.ppf(alpha / 2, count, nobs - count + 1) if count else 0.0, None)

    BOUND = "scipy beta.ppf (statsmodels missing)"


class ReferenceSmooth:
    """Cohen et al.'s ``Smooth``: the same algorithm and loop structure, on CPU."""

    ABSTAIN = -1

    def __init__(self, base, num_classes, sigma):
        self.base, self.num_classes, self.sigma = base, num_classes, sigma

    def certify(self, x, n0, n, alpha, batch_size):
        counts0 = self._sample_noise(x, n0, batch_size)
        c = int(counts0.argmax())
        counts = self._sample_noise(x, n, batch_size)
        return self.certify_counts(c, counts, n, alpha)

    def certify_counts(self, c, counts, n, alpha):
        p = self._lower_confidence_bound(int(counts[c]), n, alpha)
        if p < 0.5:
            return self.ABSTAIN, 0.0
        return c, self.sigma * norm.ppf(p)

    def predict_counts(self, counts, alpha):
        top2 = counts.argsort()[::-1][:2]
        c1, c2 = int(counts[top2[0]]), int(counts[top2[1]])
        if binomtest(c1, c1 + c2, p=0.5).pvalue > alpha:  # scipy's binom_test in the original
            return self.ABSTAIN
        return int(top2[0])

    def _sample_noise(self, x, num, batch_size):
        with torch.no_grad():
            counts = np.zeros(self.num_classes, dtype=int)
            for _ in range(ceil(num / batch_size)):
                this = min(batch_size, num)
                num -= this
                batch = x.repeat((this, 1, 1, 1))
                noise = torch.randn_like(batch) * self.sigma
                predictions = self.base(batch + noise).argmax(1)
                counts += self._count_arr(predictions.numpy(), self.num_classes)
            return counts

    def _count_arr(self, arr, length):
        counts = np.zeros(length, dtype=int)
        for idx in arr:
            counts[idx] += 1
        return counts

    def _lower_confidence_bound(self, na, n, alpha):
        return proportion_confint(na, n, alpha=2 * alpha, method="beta")[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="zoo:cnn")
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", default="200,10000", help="one or more n, comma-separated")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--inputs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--alpha", type=float, default=0.001)
    args = ap.parse_args()
    model = load_model(args.model).module.eval()
    data = load_data("digits").subset(args.inputs)
    ref = ReferenceSmooth(model, 10, args.sigma)
    ns = [int(v) for v in args.n.split(",")]
    print(f"CERTIFY on {args.model}, {args.inputs} digits inputs, n0={args.n0}, batch "
          f"{args.batch_size}, sigma {args.sigma}, {THREADS} threads (shared machine), median "
          f"of {args.repeats} interleaved runs\n")  # fmt: skip
    print("| n | implementation | median s | samples / s | ratio |")
    print("|---|---|---|---|---|")
    for n in ns:
        total = args.inputs * (args.n0 + n)

        def run_ref(n=n):
            torch.manual_seed(0)
            return [ref.certify(data.x[i : i + 1], args.n0, n, args.alpha, args.batch_size)
                    for i in range(args.inputs)]  # fmt: skip

        def run_ours(n=n):
            gen = torch.Generator().manual_seed(0)
            return rl_certify(model, data.x, args.sigma, args.n0, n, args.alpha,
                              batch_size=args.batch_size, generator=gen)  # fmt: skip

        times = {"reference loop": [], "robustlab": []}
        for _ in range(args.repeats):  # interleaved
            for name, fn in (("reference loop", run_ref), ("robustlab", run_ours)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        base = statistics.median(times["reference loop"])
        for name, ts in times.items():
            m = statistics.median(ts)
            print(f"| {n} | {name} | {m:.2f} | {total / m:,.0f} | {base / m:.1f}x |", flush=True)

    # identical counts -> identical decisions and radii
    gen = torch.Generator().manual_seed(1)
    probe = load_data("digits").subset(200)
    k = 10
    counts0 = sample_counts(model, probe.x, args.sigma, args.n0, k, generator=gen)
    worst, differ_cert, differ_pred, certified = 0.0, 0, 0, 0
    for n in (100, 1000, max(ns)):
        counts = sample_counts(model, probe.x, args.sigma, n, k, generator=gen)
        cls, _, radii = certify_from_counts(counts0, counts, n, args.alpha, args.sigma)
        pred = predict_from_counts(counts, args.alpha)
        for i in range(len(probe)):
            c = int(counts0[i].argmax())
            rc, rr = ref.certify_counts(c, counts[i].numpy(), n, args.alpha)
            differ_cert += int(rc != int(cls[i]))
            if rc != ReferenceSmooth.ABSTAIN:
                certified += 1
                worst = max(worst, abs(rr - float(radii[i])))
            differ_pred += int(ref.predict_counts(counts[i].numpy(), args.alpha) != int(pred[i]))
    print(f"\nSame counts (200 inputs x n in 100, 1000, {max(ns)}; reference bound: {BOUND}):\n")
    print("| check | value |")
    print("|---|---|")
    print(f"| CERTIFY decisions that differ | {differ_cert} of {3 * len(probe)} |")
    print(f"| PREDICT decisions that differ | {differ_pred} of {3 * len(probe)} |")
    print(f"| max abs radius difference ({certified} certified) | {worst:.3g} |")


if __name__ == "__main__":
    main()
