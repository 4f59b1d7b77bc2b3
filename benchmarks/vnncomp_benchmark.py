"""robustlab verify-benchmark on the VNN-COMP 2023 families beside alpha-beta-CROWN's answers.

For each family folder of ``../shared/benchmarks/vnncomp2023`` (or those named), every instance
is verified with the competition's timeout capped at ``--cap`` seconds (resumable: results go to
``--out/FAMILY.sqlite``), and one table row is printed: instances, solved (holds + violated),
wrong answers against ``expected.csv`` (must be 0), the median seconds per instance, and
alpha-beta-CROWN's solved count within the same cap, from the ``alpha_beta_crown`` /
``alpha_beta_crown_s`` columns (its times are from the competition's GPU machine).

    python benchmarks/vnncomp_benchmark.py --cap 60 --workers 2 collins_rul_cnn dist_shift
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

from robustlab.verify.runner import read_expected, run_benchmark, summarize

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "vnncomp2023"


def peer_solved(folder: Path, cap: float) -> int:
    with (folder / "expected.csv").open() as f:
        rows = list(csv.DictReader(f))
    return sum(
        r["alpha_beta_crown"] in ("sat", "unsat") and float(r["alpha_beta_crown_s"]) <= cap
        for r in rows
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("families", nargs="*", help="folders of vnncomp2023 (default: all)")
    ap.add_argument("--cap", type=float, default=60.0, help="timeout cap, seconds")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--out", type=Path, default=Path("vnncomp-results"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    families = args.families or sorted(p.name for p in args.root.iterdir() if p.is_dir())
    rows = []
    for fam in families:
        folder = args.root / fam
        start = time.monotonic()
        results = run_benchmark(
            folder / "instances.csv",
            db=args.out / f"{fam}.sqlite",
            out_csv=args.out / f"{fam}.csv",
            workers=args.workers,
            timeout_cap=args.cap,
        )
        s = summarize(results, read_expected(folder / "expected.csv"))
        solved = s["counts"].get("holds", 0) + s["counts"].get("violated", 0)
        med = statistics.median(r["seconds"] for r in results)
        rows.append(
            (fam, s["instances"], solved, s["wrong"], med, peer_solved(folder, args.cap), s)
        )
        print(f"{fam}: {s['counts']} wrong={s['wrong']} ({time.monotonic() - start:.0f} s)")
    load = os.getloadavg()
    print(f"\ncap {args.cap:g} s, {args.workers} workers, load average {load[0]:.1f}\n")
    print(f"{'family':<28}{'inst':>6}{'solved':>8}{'wrong':>7}{'median s':>10}{'abcrown':>9}")
    for fam, n, solved, wrong, med, peer, _ in rows:
        print(f"{fam:<28}{n:>6}{solved:>8}{wrong:>7}{med:>10.1f}{peer:>9}")


if __name__ == "__main__":
    main()
