"""VNN-LIB 1.0 against 2.0: every instance of ../shared/benchmarks/vnnlib2/<bench>/expected.csv
verified from its 1.0 file and from its 2.0 file (interleaved, one process), with the timeout
capped at --cap seconds; prints per benchmark the verdicts of each format, how many instances
agree, and answers that contradict expected.csv (wrong).

    python benchmarks/vnnlib2_agreement.py --cap 10 acasxu_2023 dist_shift_2023 ACC
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections import Counter
from pathlib import Path

from robustlab.verify import verify

ROOT = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "vnnlib2"
WRONG = {("holds", "violated"), ("violated", "holds")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("benchmarks", nargs="+")
    ap.add_argument("--cap", type=float, default=10.0)
    ap.add_argument("--limit", type=int, default=0, help="first N instances per benchmark")
    args = ap.parse_args()
    print(f"load {os.getloadavg()[0]:.1f}, cap {args.cap} s")
    for bench in args.benchmarks:
        rows = list(csv.DictReader(open(ROOT / bench / "expected.csv")))
        if args.limit:
            rows = rows[: args.limit]
        counts = {"v1": Counter(), "v2": Counter()}
        agree, wrong, differ, t0 = 0, [], [], time.monotonic()
        for r in rows:
            cap = min(float(r["timeout_s"] or args.cap), args.cap)
            got = {}
            for v in ("v1", "v2"):
                try:
                    res = verify(
                        ROOT / bench / r["onnx"], ROOT / bench / r[f"vnnlib_{v}"], timeout=cap
                    )
                    got[v] = res.verdict if res.verdict != "error" else "error: " + res.message[:70]
                except Exception as e:  # an internal error: counted, the run goes on
                    got[v] = f"crash: {type(e).__name__}: {str(e)[:60]}"
                counts[v][got[v].split(":")[0]] += 1
                if (got[v], r["expected"]) in WRONG:
                    wrong.append((v, r["onnx"], r[f"vnnlib_{v}"], got[v], r["expected"]))
            agree += got["v1"] == got["v2"]
            if got["v1"] != got["v2"]:
                differ.append((Path(r["onnx"]).name, Path(r["vnnlib_v1"]).name, got))
        print(
            f"{bench}: {len(rows)} instances, {time.monotonic() - t0:.0f} s; "
            f"1.0 {dict(counts['v1'])}; 2.0 {dict(counts['v2'])}; same verdict {agree}/{len(rows)};"
            f" wrong {len(wrong)}"
        )
        for d in differ:
            print("  differ:", *d)
        for w in wrong:
            print("  WRONG:", *w)


if __name__ == "__main__":
    main()
