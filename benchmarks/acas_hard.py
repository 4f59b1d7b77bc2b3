"""ACAS Xu's hardest properties for input splitting (issue 17): the five that timed out at the
competition's 116 s (3_9 / prop_1, 4_9 / prop_1, 1_8 / prop_2, 3_3 / prop_2, 4_2 / prop_2), one at a
time in this process, with the verdict, seconds, domains and the load average beside each.
nnenum's reference: all 186 ACAS Xu instances in 286 s summed (VNN-COMP 2021).

    python benchmarks/acas_hard.py [--timeout 116] [NET/PROP ...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from robustlab.verify import verify

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "acasxu"
HARD = ("3_9/1", "4_9/1", "1_8/2", "3_3/2", "4_2/2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=list(HARD), help="NET/PROP, e.g. 4_2/2")
    ap.add_argument("--timeout", type=float, default=116.0)
    ap.add_argument("--root", type=Path, default=ROOT)
    args = ap.parse_args()
    print(f"{'case':<8}{'verdict':>9}{'s':>8}{'domains':>9}{'load':>6}")
    total = 0.0
    for case in args.cases:
        net, prop = case.split("/")
        r = verify(
            args.root / f"ACASXU_run2a_{net}_batch_2000.onnx",
            args.root / f"prop_{prop}.vnnlib",
            timeout=args.timeout,
        )
        total += r.seconds
        domains = r.stats.get("domains", "-")
        load = os.getloadavg()[0]
        print(f"{case:<8}{r.verdict:>9}{r.seconds:>8.1f}{domains!s:>9}{load:>6.1f}", flush=True)
    print(f"summed {total:.1f} s")


if __name__ == "__main__":
    main()
