"""Bound engine benchmark: robustlab against auto_LiRPA, side by side in one run.

    python benchmarks/bounds_benchmark.py [--threads 2] [--repeats 5] [--skip-alpha] [--yolo]
        [--methods "CROWN,CROWN float32"] [--cases "oval21,residual"] [--boxes] [--peer-float64]

auto_LiRPA is imported from the running environment: run it with a Python that has it (here the
peer venv, /work/peers/lirpa-venv/bin/python, with ``PYTHONPATH=src``).

"CROWN as LiRPA" is robustlab's CROWN without its intersections with interval bounds, which is
what auto_LiRPA computes (robustlab's default is that or tighter). robustlab computes in float64 by
default; the "float32" rows are its rigorous float32 mode (rounding error bounded, not ignored),
marked "(ran float64)" where that mode computes in float64 because float32 cannot be faster there
(``plan.float32_pays``; the result's ``computed_in``).

Cases: ACAS Xu 1_1 on the prop_1 box (one box, and 64 boxes), a 784-input MLP with four
256-wide layers at Linf eps 0.03 (one region, 64 regions), the oval21 cifar_base_kw network at
eps 2/255, and a random residual CNN. For each method (IBP, CROWN, alpha-CROWN) it reports the
median time per call and the mean bound width, and, when auto_LiRPA is importable in the same
environment, its time and width, the time ratio, and the largest relative difference of the
bounds. auto_LiRPA is optional: without it, robustlab's side is printed alone.

The process keeps freed memory for reuse (``bounds.heap``, as robustlab's verifier processes
do): the same allocator policy for robustlab's and auto_LiRPA's calls.

``--peer-float64``: auto_LiRPA also on a float64 copy of each network (float64 inputs), on the
rows robustlab computes in float64 (not its float32 rows, nor alpha-CROWN, which auto_LiRPA 0.7.1
cannot run in float64): the time ratio at equal arithmetic, beside the one against auto_LiRPA's
float32 default.

``--yolo``: one CROWN pass of VNN-COMP 2023's TinyYOLO on prop 13 (the verifier's first bound
pass, ``bab.bounds_and_margins``) in float64 and in the rigorous float32 mode, robustlab only:
the time of each and whether its bounds still prove the property (rows refuted by the margin).

``--boxes``: robustlab alone, the cost per box of input splitting's passes (issue 17):
``bab.bound_boxes`` on N = 64, 512 and 2048 random sub-boxes of ACAS Xu 4_2 / prop_2's box (widths
1e-1 to 1e-3 of it, log-uniform), with their parent's packed bounds (each box is half of a box
bounded first, as the search's children are) and without, on the search's rows; boxes per second
of the ragged rows (``intermediate.refine``'s default) and of the padded ones (``ragged=0``: each count
padded to a power of 2, or the batch's union), called in turn. ``mean lb``: the rows' mean lower
bound of each (the padded rows tighten some stable neurons as a side effect of the batch).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import robustlab as rl
from robustlab.bounds import compute_bounds, heap, intermediate
from robustlab.bounds.crown import crown
from robustlab.bounds.graph import graph_of
from robustlab.bounds.ops.base import InputRegion
from robustlab.bounds.rounding import round_down
from robustlab.verify import bab
from robustlab.verify.vnnlib import read_vnnlib

SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"

try:  # the peer, only when importable
    from auto_LiRPA import BoundedModule, BoundedTensor
    from auto_LiRPA.perturbations import PerturbationLpNorm
except Exception:  # noqa: BLE001 - any import failure means "not available"
    BoundedModule = None


class ResidualCNN(nn.Module):
    """A random residual CNN (conv, batch norm, residual add, pooling, linear)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.c3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(32 * 8 * 8, 100)
        self.fc2 = nn.Linear(100, 10)

    def forward(self, x):
        h = torch.relu(self.c1(x))
        h = torch.relu(self.bn(self.c2(h)) + h)
        h = torch.relu(self.c3(h))
        return self.fc2(torch.relu(self.fc1(h.flatten(1))))


def cases() -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    out = []
    acas = SHARED / "acasxu" / "ACASXU_run2a_1_1_batch_2000.onnx"
    if acas.exists():
        model = rl.load_model(acas).module
        prop = read_vnnlib(SHARED / "acasxu" / "prop_1.vnnlib").properties[0]
        lo, hi = prop.lower.float().view(1, 1, 1, 5), prop.upper.float().view(1, 1, 1, 5)
        out.append(("acasxu 1_1 prop_1, 1 box", model, lo, hi))
        g = torch.Generator().manual_seed(3)
        c = lo + (hi - lo) * torch.rand(64, 1, 1, 5, generator=g)
        out.append(("acasxu 1_1, 64 boxes", model, c - (hi - lo) / 2, c + (hi - lo) / 2))
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    ).eval()
    for n, seed in ((1, 1), (64, 4)):
        x = torch.rand(n, 784, generator=torch.Generator().manual_seed(seed))
        out.append(
            (
                f"mlp 784-4x256, eps 0.03, {n} region(s)",
                mlp,
                (x - 0.03).clamp(0, 1),
                (x + 0.03).clamp(0, 1),
            )
        )
    oval = SHARED / "oval21" / "nets" / "cifar_base_kw.onnx"
    if oval.exists():
        model = rl.load_model(oval).module
        x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        out.append(("oval21 cifar_base_kw, eps 2/255", model, x - 2 / 255, x + 2 / 255))
    torch.manual_seed(5)
    res = ResidualCNN().eval()
    with torch.no_grad():
        res.bn.running_mean.uniform_(-0.1, 0.1)
        res.bn.running_var.uniform_(0.5, 1.5)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    out.append(("residual CNN 16x16, eps 1/255", res, x - 1 / 255, x + 1 / 255))
    return out


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
STATS = {"median": statistics.median, "min": min}


def timed(fns, repeats: int, clock: str = "wall", stat: str = "median"):
    """Time of each function (a list), called in turn ``repeats`` times after a warm-up, so a
    change of the machine's load hits all alike; ``clock="cpu"`` counts this process's CPU time
    (on a shared machine: not the time other processes run), ``stat="min"`` the fastest call."""
    now = CLOCKS[clock]
    results = [fn() for fn in fns]  # warm-up (graph construction, caches)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t = now()
            results[k] = fn()
            times[k].append(now() - t)
    return [STATS[stat](ts) for ts in times], results


OURS = {
    "IBP": "ibp",
    "CROWN": "crown",
    "CROWN float32": "crown",
    "CROWN as LiRPA": "crown",
    "alpha-CROWN": "alpha-crown",
    "alpha-CROWN float32": "alpha-crown",
}
PEER = {k: v.upper().replace("ALPHA", "alpha") for k, v in OURS.items()}


def ours(model, lo, hi, method):
    if method == "CROWN as LiRPA":  # the same algorithm without our interval intersections
        graph = graph_of(model, tuple(lo.shape[1:]))
        region = InputRegion(lo.double(), hi.double())
        with torch.no_grad():
            b, _ = crown(graph, region, intersect=False)
        return b.lower, b.upper
    dtype = torch.float32 if method.endswith("float32") else torch.float64  # rigorous either way
    b = compute_bounds(model, rl.Box(lo, hi), OURS[method], dtype=dtype)
    return b.lower.double(), b.upper.double()


def peer(model, lo, hi, method, float64: bool = False):
    if (
        float64
    ):  # the same network and box in float64 (the network copied: the caller keeps its own)
        model, lo, hi = copy.deepcopy(model).double(), lo.double(), hi.double()
    bm = BoundedModule(model, torch.zeros_like(lo), bound_opts={"relu": "adaptive"}, verbose=False)
    method = PEER[method]
    if method == "alpha-CROWN":
        bm.set_bound_opts({"optimize_bound_args": {"iteration": 20}})
    x = BoundedTensor((lo + hi) / 2, PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi))

    def run():
        lb, ub = bm.compute_bounds(x=(x,), method=method)
        return lb.detach().double(), ub.detach().double()

    return run


def _rel_diff(l1, u1, l2, u2) -> float:
    """The largest difference of two bounds, relative to the peer's magnitude (at least 1)."""
    scale = torch.maximum(l2.abs(), u2.abs()).clamp_min(1.0)
    return (torch.maximum((l1 - l2).abs(), (u1 - u2).abs()) / scale).max().item()


def yolo_pass(clock: str = "wall") -> None:
    """One CROWN pass of TinyYOLO prop 13 in float64 and in float32 (see the module docstring)."""
    yolo = SHARED / "vnncomp2023" / "yolo"
    if not yolo.exists():
        print("TinyYOLO: not found, skipped")
        return
    loaded = rl.load_model(yolo / "onnx" / "TinyYOLO.onnx.gz")
    prop = read_vnnlib(yolo / "vnnlib" / "TinyYOLO_prop_000013_eps_1_255.vnnlib.gz").properties[0]
    shape = tuple(loaded.input_shape)
    graph = graph_of(loaded.module, shape)
    C, d, _ = bab._stack_spec(prop)
    for dtype in (torch.float64, torch.float32):
        # the box rounded outward (a float32 box rounded to nearest could be smaller)
        lo = round_down(prop.lower[None].double(), dtype)
        hi = -round_down(-prop.upper[None].double(), dtype)
        t = CLOCKS[clock]()
        lb, margin = bab.bounds_and_margins(graph, lo, hi, C[None].to(dtype), d[None], shape)
        wall = CLOCKS[clock]() - t
        rows = bab.refuted_rows(lb.double(), d[None].double(), margin)
        slack = (lb.double() - d[None] - margin).max().item()
        print(
            f"TinyYOLO prop 13, one CROWN pass, {str(dtype)[6:]}: {wall:.1f} s ({clock}), "
            f"{int(rows.sum())} of {rows.numel()} rows refuted (largest lower bound - d - margin "
            f"{slack:.4f})",
            flush=True,
        )


def _sub_boxes(lo: torch.Tensor, hi: torch.Tensor, n: int, g: torch.Generator):
    """``n`` boxes inside [lo, hi] of widths 1e-1 to 1e-3 of it, each the lower or upper half
    of a box twice as wide along one input (its parent, clipped to [lo, hi]): (children, parents)."""
    w = (hi - lo) * 10 ** (-1 - 2 * torch.rand(n, 1, generator=g, dtype=torch.float64))
    plo = lo + (hi - lo - 2 * w) * torch.rand(n, len(lo), generator=g, dtype=torch.float64)
    phi = plo + w
    k = torch.randint(0, len(lo), (n,), generator=g)
    r = torch.arange(n)
    phi[r, k] += w[r, k]  # twice as wide along input k
    up = torch.rand(n, generator=g) < 0.5
    clo, chi = plo.clone(), phi.clone()
    mid = (plo[r, k] + phi[r, k]) / 2
    clo[r, k] = torch.where(up, mid, plo[r, k])
    chi[r, k] = torch.where(up, phi[r, k], mid)
    return (clo, chi), (plo, phi)


def boxes_rate(clock: str, stat: str, repeats: int) -> None:
    """``--boxes`` (see the module docstring)."""
    acas = SHARED / "acasxu"
    if not acas.exists():
        print("ACAS Xu: not found, skipped")
        return
    model = rl.load_model(acas / "ACASXU_run2a_4_2_batch_2000.onnx").module
    prop = read_vnnlib(acas / "prop_2.vnnlib").properties[0]
    shape = (1, 1, 5)
    graph = graph_of(model, shape)
    C, _, _ = bab._stack_spec(prop)
    rows = bab.output_rows(C[None])[0][0]  # the search's rows (bab.BOX_MARGIN)
    lo, hi = prop.lower.double().flatten(), prop.upper.double().flatten()
    (clo, chi), (plo, phi) = _sub_boxes(lo, hi, 2048, torch.Generator().manual_seed(0))
    kept: list = []
    bab.bound_boxes(graph, plo, phi, rows, shape, keep=kept)
    packed = kept[0]
    refine = intermediate.refine
    kinds = {"ragged": refine, "padded": lambda *a, **k: refine(*a, **k, ragged=0.0)}
    print(
        f"{'boxes':>6s} {'parent':>7s} "
        + " ".join(f"{k + ' box/s':>13s}" for k in kinds)
        + f" {'ratio':>6s} "
        + " ".join(f"{k + ' mean lb':>15s}" for k in kinds)
    )
    try:
        for parent in (True, False):
            for n in (64, 512, 2048):
                fns = []
                for fn in kinds.values():

                    def run(fn=fn, n=n, parent=parent):
                        intermediate.refine = fn
                        p = packed[:n] if parent else None
                        return bab.bound_boxes(graph, clo[:n], chi[:n], rows, shape, parent=p)[0]

                    fns.append(run)
                t, res = timed(fns, repeats, clock, stat)
                rates = [n / x for x in t]
                print(
                    f"{n:6d} {str(parent):>7s} "
                    + " ".join(f"{r:13.0f}" for r in rates)
                    + f" {rates[0] / rates[1]:5.2f}x "
                    + " ".join(f"{lb.mean().item():15.6f}" for lb in res),
                    flush=True,
                )
    finally:
        intermediate.refine = refine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-alpha", action="store_true")
    ap.add_argument("--alpha-batches", action="store_true", help="also alpha-CROWN on 64 regions")
    ap.add_argument("--yolo", action="store_true", help="only TinyYOLO's CROWN pass, both dtypes")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="cpu: under load")
    ap.add_argument("--stat", choices=sorted(STATS), default="median")
    ap.add_argument("--methods", help="only these methods (comma-separated, e.g. 'CROWN float32')")
    ap.add_argument("--cases", help="only cases whose name contains one of these (comma-separated)")
    ap.add_argument("--boxes", action="store_true", help="only bab.bound_boxes' boxes per second")
    ap.add_argument("--peer-float64", action="store_true", help="also auto_LiRPA on float64 copies")

    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    heap.keep_freed_memory()  # as robustlab's verifier processes do; both sides run with it
    print(
        f"torch {torch.__version__}, threads {args.threads}, auto_LiRPA "
        f"{'available' if BoundedModule else 'not importable: robustlab only'}, "
        f"load average {os.getloadavg()[0]:.1f}, clock {args.clock}, {args.stat} of {args.repeats}"
    )
    if args.yolo:
        yolo_pass(args.clock)
        return
    if args.boxes:
        boxes_rate(args.clock, args.stat, args.repeats)
        return
    header = f"{'case':40s} {'method':34s} {'robustlab ms':>13s} {'width':>10s}"
    if BoundedModule:
        header += f" {'auto_LiRPA ms':>14s} {'width':>10s} {'speed-up':>9s} {'max rel diff':>12s}"
        if args.peer_float64:
            header += f" {'LiRPA f64 ms':>13s} {'speed-up':>9s} {'max rel diff':>12s}"
    print(header)
    methods = [m for m in OURS if not args.methods or m in args.methods.split(",")]
    keep = args.cases.split(",") if args.cases else None
    for name, model, lo, hi in cases():
        if keep and not any(k in name for k in keep):
            continue
        for method in methods:
            if method.startswith("alpha-CROWN") and (
                args.skip_alpha or (len(lo) > 1 and not args.alpha_batches)
            ):
                continue  # auto_LiRPA's alpha-CROWN on 64 regions takes minutes: opt in

            reps = args.repeats if not method.startswith("alpha") else max(1, args.repeats // 2)
            fns, failed = [lambda m=model, a=lo, b=hi, k=method: ours(m, a, b, k)], ""
            try:  # ours and the peer's called in turn (see ``timed``)
                if BoundedModule:
                    fns.append(peer(model, lo, hi, method))
                    # (auto_LiRPA 0.7.1's alpha-CROWN fails on float64 networks: index_put
                    # between float32 and float64)
                    f64 = not method.endswith("float32") and not method.startswith("alpha")
                    if args.peer_float64 and f64:
                        fns.append(peer(model, lo, hi, method, float64=True))
                t, res = timed(fns, reps, args.clock, args.stat)
            except Exception as e:  # noqa: BLE001 - the peer's failure: report it, time ours alone
                if len(fns) == 1 and BoundedModule is None:
                    raise
                failed = f"  auto_LiRPA failed: {type(e).__name__}: {str(e)[:60]}"
                fns = fns[:1]
                t, res = timed(fns, reps, args.clock, args.stat)
            l1, u1 = res[0]
            label = method
            if method.endswith("float32"):
                got = compute_bounds(model, rl.Box(lo, hi), OURS[method], dtype=torch.float32)
                fell = getattr(got, "computed_in", None) == torch.float64
                label += " (ran float64)" if fell else ""
            line = f"{name:40s} {label:34s} {1000 * t[0]:13.2f} {(u1 - l1).mean().item():10.4g}"
            if len(fns) > 1:
                l2, u2 = res[1]
                line += (
                    f" {1000 * t[1]:14.2f} {(u2 - l2).mean().item():10.4g}"
                    f" {t[1] / t[0]:8.1f}x {_rel_diff(l1, u1, l2, u2):12.2e}"
                )
            if len(fns) > 2:
                l3, u3 = res[2]
                line += (
                    f" {1000 * t[2]:13.2f} {t[2] / t[0]:8.1f}x {_rel_diff(l1, u1, l3, u3):12.2e}"
                )
            elif BoundedModule:
                line += failed
            print(line, flush=True)
    # timings under load (more runnable threads than cores) say little: report the load
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
