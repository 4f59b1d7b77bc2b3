"""Counterexample-guided repair of a violated ACAS Xu property (issue 21's line): the network
and the property from ../shared/benchmarks/acasxu (default 2_9 and property 8, violated), the
anchor on the whole input domain (property 7's box), the fine-tune pushing uniform samples of the
property's box and the CROWN bounds of 256 pieces of it to the margin; then the exported ONNX is
verified again from the file by the project's verifier (counterexamples re-checked with
onnxruntime). Prints the verdicts, the decisions (advisories: the smallest output) kept outside
the property's box, the times and the load average.

    python benchmarks/repair_acasxu.py [--net 2_9] [--prop 8] [--rounds 4] [--out DIR]

No peer is run: the repair paper's code (Boetius et al.) is not installed here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import onnxruntime
import torch

torch.set_num_threads(1)

from robustlab.jobs.repair import repair_job  # noqa: E402
from robustlab.verify import verify  # noqa: E402
from robustlab.verify.vnnlib import read_vnnlib  # noqa: E402

ACAS = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "acasxu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", default="2_9")
    ap.add_argument("--prop", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--margin", type=float, default=0.3, help="in the outputs' std")
    ap.add_argument("--penalty", type=float, default=10.0)
    ap.add_argument("--region-samples", type=int, default=4096)
    ap.add_argument("--boxes", type=int, default=256)
    ap.add_argument("--box-weight", type=float, default=0.01)
    ap.add_argument("--timeout", type=float, default=30.0, help="per verification in the loop")
    ap.add_argument("--verify-timeout", type=float, default=120.0)
    ap.add_argument("--out", type=Path, default=Path("repair-acasxu"))
    args = ap.parse_args()
    onnx_in = ACAS / f"ACASXU_run2a_{args.net}_batch_2000.onnx"
    spec = ACAS / f"prop_{args.prop}.vnnlib"
    print(f"load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    before = verify(onnx_in, spec, timeout=args.verify_timeout)
    print(f"before: {before.verdict} ({time.perf_counter() - t:.1f} s)")
    t = time.perf_counter()
    out = args.out / f"ACASXU_{args.net}_prop{args.prop}_repaired.onnx"
    r = repair_job(onnx_in, specs=[spec], domain=ACAS / "prop_7.vnnlib", out=out,
                   rounds=args.rounds, epochs=args.epochs, lr=3e-4, margin=args.margin,
                   penalty=args.penalty, region_samples=args.region_samples, boxes=args.boxes,
                   box_weight=args.box_weight, timeout=args.timeout, n_anchor=8192,
                   progress=print)  # fmt: skip
    seconds = time.perf_counter() - t
    rep, kept = r["repair"], r["decisions_kept"]
    for row in rep["rounds"]:
        print(f"round {row['round']}: {row['holds']} hold, {row['seconds']:.1f} s")
    print(f"repair: {rep['verdicts_before']} -> {rep['verdicts_after']} in {seconds:.1f} s")
    print(f"advisories kept on {kept['n']} domain samples outside the box: {kept['argmin']:.4f}")
    t = time.perf_counter()
    after = verify(out, spec, timeout=args.verify_timeout)
    print(f"after, from {out}: {after.verdict} ({time.perf_counter() - t:.1f} s, "
          f"{after.stats.get('proved_by')})")  # fmt: skip
    spec_box = read_vnnlib(spec, 5, 5)
    gen = torch.Generator().manual_seed(1)
    x = spec_box.lower + (spec_box.upper - spec_box.lower) * torch.rand(
        200_000, 5, generator=gen, dtype=torch.float64
    )
    sess = onnxruntime.InferenceSession(str(out))
    y = sess.run(None, {sess.get_inputs()[0].name: x.float().numpy().reshape(-1, 1, 1, 5)})[0]
    v = spec_box.violation(
        torch.from_numpy(y.reshape(len(x), -1)).double(), torch.zeros(len(x)).long()
    )
    print(f"onnxruntime on 200000 samples of the box: smallest violation {float(v.min()):.3g} "
          f"(> 0: none reaches the unsafe outputs)")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
