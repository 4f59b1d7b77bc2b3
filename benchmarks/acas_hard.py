"""ACAS Xu's hardest properties for input splitting (issue 17): the five that timed out at the
competition's 116 s (3_9 / prop_1, 4_9 / prop_1, 1_8 / prop_2, 3_3 / prop_2, 4_2 / prop_2), one at a
time in this process, with the verdict, seconds, domains and the load average beside each.
nnenum's reference: all 186 ACAS Xu instances in 286 s summed (VNN-COMP 2021).

    python benchmarks/acas_hard.py [--timeout 116] [--compare] [--leaf-after S,...] [NET/PROP ...]

``--compare`` runs each case twice in this process, interleaved: input splitting as it is, then
without the leaf checks (alpha on the last rows and the LP), the per-box margins, the
look-ahead's floor and its aspect bound (bab.LEAF_SHARE = 0, bab.BOX_MARGIN = False,
bab.SPLIT_FLOOR = 0, bab.SPLIT_ASPECT = 0: the search before them). Wall and CPU seconds are
printed with the load average: compare CPU seconds. ``--leaf-after 0,2`` runs each case once
per value of bab.LEAF_AFTER (when the leaf checks start; 0: from the first step), interleaved.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from robustlab.verify import bab, verify

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "acasxu"
HARD = ("3_9/1", "4_9/1", "1_8/2", "3_3/2", "4_2/2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=list(HARD), help="NET/PROP, e.g. 4_2/2")
    ap.add_argument("--timeout", type=float, default=116.0)
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--compare", action="store_true", help="also without the leaf LP etc.")
    ap.add_argument("--leaf-after", default="", help="values of bab.LEAF_AFTER, comma-separated")
    args = ap.parse_args()
    print(f"{'case':<8}{'search':>8}{'verdict':>9}{'s':>8}{'cpu s':>8}{'domains':>9}{'load':>6}")
    now = (bab.LEAF_SHARE, bab.BOX_MARGIN, bab.SPLIT_FLOOR, bab.SPLIT_ASPECT, bab.LEAF_AFTER)
    afters = [float(v) for v in args.leaf_after.split(",") if v]
    runs = [(f"after{v:g}", (*now[:4], v)) for v in afters] or [("now", now)]
    runs += [("before", (0.0, False, 0.0, 0.0, 0.0))] if args.compare else []
    total = dict.fromkeys([name for name, _ in runs], 0.0)
    for case in args.cases:
        net, prop = case.split("/")
        for name, knobs in runs:
            bab.LEAF_SHARE, bab.BOX_MARGIN, bab.SPLIT_FLOOR, bab.SPLIT_ASPECT, bab.LEAF_AFTER = (
                knobs
            )
            cpu = time.process_time()
            r = verify(
                args.root / f"ACASXU_run2a_{net}_batch_2000.onnx",
                args.root / f"prop_{prop}.vnnlib",
                timeout=args.timeout,
            )
            cpu = time.process_time() - cpu
            total[name] += r.seconds
            domains = r.stats.get("domains", "-")
            load = os.getloadavg()[0]
            print(
                f"{case:<8}{name:>8}{r.verdict:>9}{r.seconds:>8.1f}{cpu:>8.1f}{domains!s:>9}"
                f"{load:>6.1f}",
                flush=True,
            )
    print("summed " + ", ".join(f"{name} {t:.1f} s" for name, t in total.items()))


if __name__ == "__main__":
    main()
