"""float64 transposed convolutions (a convolution's backward step in CROWN): PyTorch's
``conv_transpose2d`` against robustlab's two formulations, per shape (issue 17).

    python benchmarks/conv_backward.py [--repeats 7] [--clock cpu] [--threads 1] [--quick]

PyTorch's float64 convolutions have no oneDNN path; ``ops.transposed.conv_transpose`` computes
the same values (up to float64 rounding; checked here on every shape) as a convolution per phase
of the stride with the kernel's taps flipped ("phases") or as a product with the kernel summed
into place by ``fold`` ("fold"), chunked over the rows. Its rule (``_rule``) takes "phases" at
stride 1 without dilation on large maps where it unfolds fewer channels, else "fold". For each
shape: rows (rows x C_out x h x w onto C_in), kernel, stride, padding, output padding, groups,
dilation; the minimum time of ``repeats`` calls of each, called in turn (so a change of load hits
all alike) after a warm-up; the rule's pick and its speed-up over PyTorch. The process keeps
freed memory (``bounds.heap``), as the bounds benchmark and the verifier do.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from robustlab.bounds import heap
from robustlab.bounds.ops.transposed import _rule, conv_transpose, transposed_size

# (rows, C_out, C_in, h, kernel, stride, padding, output padding, groups, dilation): the residual
# CNN's and oval21's backward steps, then wider / narrower / odd ones, then windows (no padding)
GRID = [
    (52, 16, 16, 16, 3, 1, 1, 0, 1, 1),
    (200, 16, 16, 16, 3, 1, 1, 0, 1, 1),
    (20, 16, 16, 16, 3, 1, 1, 0, 1, 1),
    (200, 16, 3, 16, 3, 1, 1, 0, 1, 1),
    (200, 32, 16, 8, 3, 2, 1, 1, 1, 1),
    (20, 32, 16, 8, 3, 2, 1, 1, 1, 1),
    (18, 16, 8, 8, 4, 2, 1, 0, 1, 1),
    (18, 8, 3, 16, 4, 2, 1, 0, 1, 1),
    (128, 8, 3, 4, 4, 2, 0, 0, 1, 1),
    (16, 3, 16, 32, 3, 1, 1, 0, 1, 1),
    (64, 64, 64, 8, 3, 1, 1, 0, 1, 1),
    (64, 32, 64, 16, 3, 2, 1, 1, 1, 1),
    (64, 64, 32, 8, 3, 2, 1, 1, 1, 1),
    (50, 16, 16, 12, 5, 1, 2, 0, 1, 1),
    (50, 16, 16, 12, 3, 1, 2, 0, 1, 2),
    (50, 16, 16, 12, 3, 1, 1, 0, 4, 1),
    (40, 16, 16, 11, 3, 3, 1, 2, 1, 1),
    (40, 16, 16, 9, 5, 2, 2, 1, 1, 1),
    (100, 8, 8, 32, 3, 1, 1, 0, 1, 1),
    (10, 128, 128, 4, 3, 1, 1, 0, 1, 1),
    (400, 16, 3, 5, 3, 1, 0, 0, 1, 1),
    (144, 16, 16, 3, 3, 1, 0, 0, 1, 1),
    (144, 16, 3, 3, 3, 1, 0, 0, 1, 1),
    (300, 16, 16, 5, 3, 1, 0, 0, 1, 1),
    (300, 32, 16, 4, 3, 2, 0, 0, 1, 1),
    (1015, 32, 16, 1, 3, 2, 0, 0, 1, 1),
    (500, 16, 16, 2, 3, 1, 0, 0, 1, 1),
]
QUICK = GRID[:6]
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
HOWS = ("torch", "phases", "fold")


def measure(shape, repeats: int, clock: str) -> dict[str, float]:
    """Minimum seconds per call of each formulation on one shape (called in turn), after
    checking that each equals PyTorch's to 1e-12 relative."""
    n, c_out, c_in, h, k, s, p, op, g, d = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c_out, h, h, generator=gen, dtype=torch.float64)
    w = torch.randn(c_out, c_in // g, k, k, generator=gen, dtype=torch.float64)
    args = ((s, s), (p, p), (op, op), g, (d, d))
    ref = conv_transpose(x, w, *args, how="torch")
    for how in HOWS[1:]:
        err = (conv_transpose(x, w, *args, how=how) - ref).abs().max() / ref.abs().max()
        assert err < 1e-12, (shape, how, float(err))
    now = CLOCKS[clock]
    times: dict[str, list[float]] = {how: [] for how in HOWS}
    for _ in range(repeats):
        for how in HOWS:
            t = now()
            conv_transpose(x, w, *args, how=how)
            times[how].append(now() - t)
    return {how: min(ts) for how, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="only the first shapes")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    heap.keep_freed_memory()
    print(
        f"torch {torch.__version__}, threads {args.threads}, clock {args.clock}, min of "
        f"{args.repeats}, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'rows x C_out x h -> C_in':>26s} {'k s p op g d':>13s} {'torch ms':>9s} "
        f"{'phases ms':>9s} {'fold ms':>8s} {'rule':>7s} {'speed-up':>8s}"
    )
    speedups = []
    for shape in QUICK if args.quick else GRID:
        t = measure(shape, args.repeats, args.clock)
        n, c_out, c_in, h, *rest = shape
        k, s, p, op, g, d = rest
        size = transposed_size((h, h), (k, k), (s, s), (p, p), (op, op), g, (d, d))
        pick = _rule(torch.empty(c_out, c_in // g, k, k), (s, s), (d, d), g, size)
        speedups.append(t["torch"] / t[pick])
        print(
            f"{f'{n} x {c_out} x {h}x{h} -> {c_in}':>26s} {' '.join(map(str, rest)):>13s} "
            f"{t['torch'] * 1e3:9.2f} {t['phases'] * 1e3:9.2f} {t['fold'] * 1e3:8.2f} "
            f"{pick:>7s} {speedups[-1]:7.2f}x"
        )
    geo = torch.tensor(speedups).log().mean().exp().item()
    print(f"rule's speed-up over torch: geometric mean {geo:.2f}x, min {min(speedups):.2f}x")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
