"""robustlab's corruptions side by side with the ``imagecorruptions`` package (Michaelis et al.,
the reference implementation of ImageNet-C's corruptions): throughput and fidelity.

Images: 512 RGB 32 x 32 images made from the digits (scaled up, coloured) and the 100 CIFAR-10
test images of ``../shared/datasets`` (their CSV is pixel-interleaved RGB, 32 x 32 row-major, as
rendering shows); with ``--large``, 16 CIFAR images scaled to 224 x 224 as well. Every image is
uint8; the reference corrupts them one at a time, robustlab the whole set as one float batch.

Per corruption and severity: seconds per image on each side; the mean over images of two
statistics of the corrupted images, mean intensity and high-frequency energy (mean squared
4-neighbour Laplacian), on each side and the absolute difference (also relative to the
corruption's own effect on the statistic); for the deterministic corruptions the mean absolute
pixel difference. Our outputs are floored to uint8 levels for these comparisons, as the
reference's ``np.uint8`` does to its own (quantisation alone adds high-frequency energy). The
reference's own distances to the clean image per severity show where the published parameters
are not monotone (ours depart from them there, see ``robustlab.corruptions``; "ours monotone" is
the same check on our side). A grid of one image under every corruption and severity, reference and ours
side by side, is written for a visual check. imagecorruptions 1.1.2 crashes on glass_blur and
gaussian_blur (skimage's ``multichannel``) and fog (``np.float_``) with current libraries: those
three are timed on our side only. Rows are written as they are measured (``rows.jsonl``).

On a machine where other processes keep a core busy, torch's OpenMP threads spin waiting for each
other and several threads run slower than one (CIFAR-32 at 2 threads: 1.0x the reference with the
default policy, 8.6x with ``OMP_WAIT_POLICY=PASSIVE``, 16x on a quiet machine for the digits);
the header of the table records the policy.

Run in a separate environment holding the peer (it is not a robustlab dependency):

    python -m venv /work/peers/corrupt-venv
    /work/peers/corrupt-venv/bin/pip install torch==2.13.0 "setuptools<81" imagecorruptions \
        scikit-learn && /work/peers/corrupt-venv/bin/pip install --no-deps -e .
    /work/peers/corrupt-venv/bin/python benchmarks/corruptions_benchmark.py [--threads 2]
        [--repeats 3] [--large] [--out corruptions-benchmark]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustlab.corruptions import DETERMINISTIC, ORDER, corrupt


def digits_rgb(n: int = 512, size: int = 32) -> np.ndarray:
    from sklearn.datasets import load_digits

    x = torch.from_numpy(load_digits().images[:n] / 16.0).float()[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(0)
    fg = torch.rand(n, 3, 1, 1, generator=g) * 0.5 + 0.5
    bg = torch.rand(n, 3, 1, 1, generator=g) * 0.5
    x = bg + (fg - bg) * x
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def cifar(shared: Path, size: int = 32, n: int = 100) -> np.ndarray:
    rows = np.loadtxt(shared / "datasets" / "cifar10_test_100.csv", delimiter=",", dtype=np.int64)
    x = rows[:n, 1:].reshape(-1, 32, 32, 3).astype(np.uint8)  # pixel-interleaved RGB
    if size != 32:
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)
        x = t.clamp(0, 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return x


def hf_energy(a: np.ndarray) -> np.ndarray:
    """Mean squared 4-neighbour Laplacian per image of (N, H, W, C) in [0, 1]."""
    lap = 4 * a[:, 1:-1, 1:-1] - a[:, :-2, 1:-1] - a[:, 2:, 1:-1] - a[:, 1:-1, :-2] - a[:, 1:-1, 2:]
    return (lap**2).mean((1, 2, 3))


def run_reference(imgs: np.ndarray, name: str, severity: int, seed: int):
    from imagecorruptions import corrupt as ref_corrupt

    np.random.seed(seed)
    start = time.perf_counter()
    out = np.stack([ref_corrupt(im, severity, name) for im in imgs])
    return out, time.perf_counter() - start


def run_ours(x: torch.Tensor, name: str, severity: int, seed: int):
    start = time.perf_counter()
    out = corrupt(x, name, severity, seed)
    return out, time.perf_counter() - start


def measure(set_name: str, imgs: np.ndarray, severities, repeats: int, rows: list, log):
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    clean = imgs.astype(np.float64) / 255
    clean_mean, clean_hf = clean.mean(), hf_energy(clean).mean()
    n = len(imgs)
    broken = set()
    for name in ORDER:
        for s in severities:
            ref_t, our_t, ref_out, our_out = [], [], None, None
            for r in range(repeats):  # interleaved: reference, ours, reference, ours, ...
                if name not in broken:
                    try:
                        ref_out, t = run_reference(imgs, name, s, seed=r)
                        ref_t.append(t)
                    except Exception as e:  # the peer's known crashes with current libraries
                        broken.add(name)
                        log(f"  reference {name} fails: {type(e).__name__}: {str(e)[:80]}")
                our_out, t = run_ours(x, name, s, seed=r)
                our_t.append(t)
            # the reference returns np.uint8 (truncation): our statistics on the same levels
            ours = np.floor(our_out.permute(0, 2, 3, 1).numpy().astype(np.float64) * 255 + 1e-6)
            ours = ours / 255
            row = {
                "set": set_name,
                "n": n,
                "size": list(imgs.shape[1:3]),
                "corruption": name,
                "severity": s,
                "ours_ms_per_image": 1000 * statistics.median(our_t) / n,
                "ours_mean": float(ours.mean()),
                "ours_hf": float(hf_energy(ours).mean()),
                "ours_distance": float(np.abs(ours - clean).mean()),
                "clean_mean": float(clean_mean),
                "clean_hf": float(clean_hf),
            }
            if ref_out is not None and name not in broken:
                ref = ref_out.astype(np.float64) / 255
                row.update(
                    ref_ms_per_image=1000 * statistics.median(ref_t) / n,
                    ref_mean=float(ref.mean()),
                    ref_hf=float(hf_energy(ref).mean()),
                    ref_distance=float(np.abs(ref - clean).mean()),
                )
                row["speedup"] = row["ref_ms_per_image"] / row["ours_ms_per_image"]
                row["mean_diff"] = abs(row["ours_mean"] - row["ref_mean"])
                effect = abs(row["ref_mean"] - clean_mean)
                row["mean_diff_rel_effect"] = row["mean_diff"] / effect if effect > 1e-3 else None
                row["hf_rel_diff"] = abs(row["ours_hf"] - row["ref_hf"]) / max(row["ref_hf"], 1e-12)
                if name in DETERMINISTIC:
                    row["pixel_mae"] = float(np.abs(ours - ref).mean())
            rows.append(row)
            log(json.dumps(row))
    return x


def grid(imgs: np.ndarray, x: torch.Tensor, path: Path, index: int = 0):
    from imagecorruptions import corrupt as ref_corrupt

    from robustlab.corruptions.figures import side_by_side

    ref, ours = [], []
    for name in ORDER:
        np.random.seed(0)
        try:
            r = [ref_corrupt(imgs[index], s, name) for s in range(1, 6)]
            ref.append(torch.from_numpy(np.stack(r)).permute(0, 3, 1, 2).float() / 255)
        except Exception:
            ref.append(torch.zeros(5, *x.shape[1:]))  # crashes in the peer: left black
        ours.append(torch.stack([corrupt(x[index], name, s, 0) for s in range(1, 6)]))
    fig = side_by_side(torch.stack(ref), torch.stack(ours), ORDER, ("ref", "ours"))
    fig.savefig(path, dpi=110, bbox_inches="tight")


def summarise(rows: list, set_name: str) -> list[str]:
    lines = [f"\n## {set_name}\n"]
    lines.append(
        "| corruption | ref ms/img | ours ms/img | speed-up | mean ref | mean ours | "
        "max |d mean| | HF ref | HF ours | max rel. d HF | pixel MAE | ref monotone | "
        "ours monotone |"
    )
    lines.append("|" + "---|" * 13)
    tot_ref = tot_ours = tot_ours_all = 0.0
    for name in ORDER:
        rs = [r for r in rows if r["set"] == set_name and r["corruption"] == name]
        if not rs:
            continue
        ours_ms = sum(r["ours_ms_per_image"] for r in rs) / len(rs)
        tot_ours_all += ours_ms
        ours_dist = [r["ours_distance"] for r in rs]
        ours_mono = (
            "yes" if all(b > a for a, b in zip(ours_dist, ours_dist[1:], strict=False)) else "no"
        )
        if "ref_ms_per_image" not in rs[0]:
            lines.append(
                f"| {name} | (peer crashes) | {ours_ms:.3f} | - | - | "
                f"{np.mean([r['ours_mean'] for r in rs]):.3f} | - | - | "
                f"{np.mean([r['ours_hf'] for r in rs]):.4f} | - | - | - | {ours_mono} |"
            )
            continue
        ref_ms = sum(r["ref_ms_per_image"] for r in rs) / len(rs)
        tot_ref += ref_ms
        tot_ours += ours_ms
        dist = [r["ref_distance"] for r in rs]
        mono = all(b > a for a, b in zip(dist, dist[1:], strict=False))
        mae = [r["pixel_mae"] for r in rs if "pixel_mae" in r]
        lines.append(
            f"| {name} | {ref_ms:.3f} | {ours_ms:.3f} | {ref_ms / ours_ms:.1f}x | "
            f"{np.mean([r['ref_mean'] for r in rs]):.3f} | "
            f"{np.mean([r['ours_mean'] for r in rs]):.3f} | "
            f"{max(r['mean_diff'] for r in rs):.4f} | "
            f"{np.mean([r['ref_hf'] for r in rs]):.4f} | "
            f"{np.mean([r['ours_hf'] for r in rs]):.4f} | "
            f"{max(r['hf_rel_diff'] for r in rs):.2f} | "
            f"{f'{max(mae):.4f}' if mae else '-'} | {'yes' if mono else 'no'} | {ours_mono} |"
        )
    if tot_ours:
        lines.append(
            f"\nThe corruptions both sides run, averaged per image over them and the severities: "
            f"reference {tot_ref:.3f} ms, ours {tot_ours:.3f} ms, speed-up {tot_ref / tot_ours:.1f}x "
            f"(ours on all 19: {tot_ours_all:.3f} ms summed over the corruptions per image)."
        )
    return lines


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=512, help="digits images")
    ap.add_argument("--large", action="store_true", help="also 16 CIFAR images at 224 x 224")
    ap.add_argument("--out", type=Path, default=Path("corruptions-benchmark"))
    ap.add_argument("--sets", default="", help="only these image sets (comma-separated names)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list = []
    jsonl = (args.out / "rows.jsonl").open("w")

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if line.startswith("{"):
            jsonl.write(line + "\n")
            jsonl.flush()

    corrupt(torch.rand(2, 3, 32, 32), "frost", 1)  # build the frost textures before timing
    sets = [("digits-rgb-32", digits_rgb(args.n), (1, 2, 3, 4, 5))]
    if (args.shared / "datasets" / "cifar10_test_100.csv").exists():
        sets.append(("cifar10-32", cifar(args.shared), (1, 2, 3, 4, 5)))
    if args.large and (args.shared / "datasets").exists():
        sets.append(("cifar10-224", cifar(args.shared, 224, 16), (1, 3, 5)))
    report = [
        f"# robustlab corruptions vs imagecorruptions ({args.threads} torch threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
        f"{args.repeats} interleaved repeats, medians; a shared 2-core machine)"
    ]
    if args.sets:
        sets = [t for t in sets if t[0] in args.sets.split(",")]
    for set_name, imgs, sevs in sets:
        log(f"{set_name}: {len(imgs)} images {imgs.shape[1:]}")
        x = measure(set_name, imgs, sevs, args.repeats, rows, log)
        grid(imgs, x, args.out / f"grid-{set_name}.png")
        report += summarise(rows, set_name)
        (args.out / "table.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    main()
