"""robustlab's explanations side by side with Captum, on CPU.

Models: the zoo CNN on the bundled digits (200 test images) and the oval21 `cifar_base_kw` network
(ONNX, VNN-COMP 2021) on CIFAR-10 test images from `../shared/datasets`. The CIFAR rows of that
file are stored pixel-interleaved (32 x 32 x 3; the network is 73% accurate on them after the
oval21 normalisation, 9-12% when read channel-major), and the network expects inputs
normalised by mean (0.485, 0.456, 0.406) and std 0.225.

1. Agreement: Integrated Gradients (Gauss-Legendre, zero baseline), Saliency (absolute gradient)
   and Occlusion (2x2 / 4x4 windows) of the predicted class; the largest absolute difference.
   The convergence deltas are shown for information (float32 sums on Captum's side).
2. Integrated Gradients at n_steps 200 and 1000: wall time and peak memory (resident set growth
   during the call: the kernel's high-water mark is reset just before it), each measurement in a
   fresh process, configurations interleaved, median of the repeats. Captum runs with its
   default (every step in one batch) and with internal_batch_size = robustlab's batch_size; both
   sides return the convergence delta.
3. Sobol attribution (robustlab only; Captum has none): forward passes and seconds per image at
   grid 8, 32 designs.

    python benchmarks/explain_benchmark.py [--shared ../shared] [--repeats 3] [--quick]

Captum is imported from the running interpreter (e.g. a separate venv with torch, captum and
robustlab installed); without it only robustlab's rows are measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

THREADS = 1
torch.set_num_threads(THREADS)

from robustlab import load_model, zoo  # noqa: E402
from robustlab.data import load_digits_split  # noqa: E402
from robustlab.explain import IntegratedGradients, Occlusion, Saliency, SobolAttribution  # noqa: E402

BATCH = 512
OVAL_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
OVAL_STD = 0.225


def load(name: str, shared: Path, n: int):
    """(model, inputs, predicted classes)."""
    if name == "zoo-cnn":
        model = zoo.pretrained("cnn").eval()
        x = load_digits_split(train=False).x[:n]
    else:
        model = load_model(shared / "benchmarks/oval21/nets/cifar_base_kw.onnx").module.eval()
        raw = np.loadtxt(shared / "datasets/cifar10_test_100.csv", delimiter=",")[:n]
        img = torch.tensor(raw[:, 1:] / 255.0, dtype=torch.float32).view(-1, 32, 32, 3)
        x = (img.permute(0, 3, 1, 2).contiguous() - OVAL_MEAN) / OVAL_STD
    with torch.no_grad():
        t = model(x).argmax(1)
    return model, x, t


def captum_or_none():
    try:
        import captum.attr

        return captum.attr
    except ImportError:
        return None


def agreement(shared: Path, n: dict) -> list[dict]:
    ca = captum_or_none()
    rows = []
    if ca is None:
        return rows
    for name in ("zoo-cnn", "oval21-base"):
        model, x, t = load(name, shared, n[name])
        win = 2 if name == "zoo-cnn" else 4
        c = x.shape[1]
        pairs = {
            "saliency": (
                Saliency()(model, x, t).attributions,
                ca.Saliency(model).attribute(x.clone().requires_grad_(True), target=t).detach(),
            ),
            "occlusion": (
                Occlusion(window=win, stride=win // 2)(model, x, t).attributions,
                ca.Occlusion(model).attribute(
                    x,
                    target=t,
                    sliding_window_shapes=(c, win, win),
                    strides=(c, win // 2, win // 2),
                ),
            ),
        }
        for steps in (50, 200, 1000):
            ours = IntegratedGradients(n_steps=steps)(model, x, t)
            theirs, delta = ca.IntegratedGradients(model).attribute(
                x, target=t, n_steps=steps, internal_batch_size=BATCH, return_convergence_delta=True
            )
            pairs[f"integrated-gradients n_steps={steps}"] = (ours.attributions, theirs)
            pairs[f"  its delta n_steps={steps}"] = (ours.delta.float(), delta.float())
        for method, (a, b) in pairs.items():
            diff = float((a - b).abs().max())
            rows.append(
                {
                    "model": name,
                    "method": method,
                    "n": len(x),
                    "max_abs_diff": diff,
                    "max_abs_value": float(b.abs().max()),
                    "equal_to_1e-5": diff <= 1e-5,
                    "criterion": "delta" not in method,  # deltas: float32 sums of 64-3072 terms
                }
            )
    return rows


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def worker(spec: dict) -> dict:
    """One measurement in this (fresh) process."""
    model, x, t = load(spec["model"], Path(spec["shared"]), spec["n"])
    lib, steps = spec["lib"], spec["n_steps"]
    if lib == "robustlab":
        ig = IntegratedGradients(n_steps=steps, batch_size=BATCH)

        def call(xs, ts, k):
            return (
                IntegratedGradients(n_steps=k, batch_size=BATCH)(model, xs, ts)
                if k
                else ig(model, xs, ts)
            )

    else:
        import captum.attr

        ibs = None if lib == "captum" else BATCH
        cig = captum.attr.IntegratedGradients(model)

        def call(xs, ts, k):
            return cig.attribute(
                xs, target=ts, n_steps=k or steps, internal_batch_size=ibs,
                return_convergence_delta=True,
            )  # fmt: skip

    call(x[:2], t[:2], 4)  # warm-up
    gc.collect()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident set
    start = time.perf_counter()
    call(x, t, 0)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    return {"seconds": seconds, "peak_mb": max(0, peak - before) / 2**20}


def measure(spec: dict) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def timing(shared: Path, n: dict, repeats: int, steps_list) -> list[dict]:
    libs = ["robustlab"] + (["captum", "captum-ibs"] if captum_or_none() else [])
    specs = [
        {"model": m, "lib": lib, "n_steps": s, "n": n[m], "shared": str(shared)}
        for m in ("zoo-cnn", "oval21-base")
        for s in steps_list
        for lib in libs
    ]
    results: dict[int, list[dict]] = {i: [] for i in range(len(specs))}
    for _ in range(repeats):  # interleaved: every configuration once per round
        for i, spec in enumerate(specs):
            results[i].append(measure(spec))
    rows = []
    for i, spec in enumerate(specs):
        ok = [r for r in results[i] if "error" not in r]
        row = {k: spec[k] for k in ("model", "lib", "n_steps", "n")}
        if ok:
            row["seconds"] = statistics.median(r["seconds"] for r in ok)
            row["peak_mb"] = statistics.median(r["peak_mb"] for r in ok)
        else:
            row["error"] = results[i][0]["error"]
        rows.append(row)
    return rows


def sobol_rows(shared: Path, n_images: int) -> list[dict]:
    rows = []
    for name in ("zoo-cnn", "oval21-base"):
        model, x, t = load(name, shared, n_images)
        r = SobolAttribution(grid=8, n_designs=32, batch_size=BATCH)(model, x, t)
        rows.append(
            {
                "model": name,
                "n": len(x),
                "forward_per_image": r.n_forward / len(x),
                "seconds_per_image": r.seconds / len(x),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", default=None)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    n = {"zoo-cnn": 200, "oval21-base": 20} if not args.quick else {"zoo-cnn": 20, "oval21-base": 4}
    steps = (200, 1000) if not args.quick else (20, 100)
    report = {"threads": THREADS, "torch": torch.__version__}
    ca = captum_or_none()
    if ca is not None:
        import captum

        report["captum"] = captum.__version__
    print(f"threads {THREADS}, torch {torch.__version__}, captum {report.get('captum', 'absent')}")
    report["agreement"] = agreement(args.shared, {"zoo-cnn": n["zoo-cnn"], "oval21-base": 100})
    print("\nagreement (same inputs, predicted class)")
    for r in report["agreement"]:
        print(
            f"  {r['model']:12s} {r['method']:36s} n={r['n']:4d} max|diff| {r['max_abs_diff']:.2e}"
            f" (max|attr| {r['max_abs_value']:.2e}) "
            + ("info" if not r["criterion"] else "OK" if r["equal_to_1e-5"] else "DIFFERS")
        )
    report["timing"] = timing(args.shared, n, args.repeats, steps)
    print(f"\nIntegrated Gradients, median of {args.repeats} (fresh process each)")
    base = {(r["model"], r["n_steps"]): r for r in report["timing"] if r["lib"] == "robustlab"}
    for r in report["timing"]:
        if "error" in r:
            print(f"  {r['model']:12s} {r['lib']:11s} n_steps {r['n_steps']:5d}: {r['error']}")
            continue
        ours = base[(r["model"], r["n_steps"])]
        print(
            f"  {r['model']:12s} {r['lib']:11s} n={r['n']:4d} n_steps {r['n_steps']:5d}: "
            f"{r['seconds']:7.2f} s {r['peak_mb']:8.1f} MB   time x{r['seconds'] / ours['seconds']:.2f}"
            f" memory x{r['peak_mb'] / max(ours['peak_mb'], 1e-9):.1f} of robustlab"
        )
    report["sobol"] = sobol_rows(args.shared, 8 if not args.quick else 2)
    print("\nSobol attribution, grid 8, 32 designs (robustlab)")
    for r in report["sobol"]:
        print(
            f"  {r['model']:12s} {r['forward_per_image']:.0f} forward passes, "
            f"{r['seconds_per_image']:.3f} s per image (n={r['n']})"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
