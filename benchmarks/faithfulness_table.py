"""Deletion / insertion AUCs (Petsiuk et al. 2018) and max-sensitivity (Yeh et al. 2019) of every
registered explainer on the zoo CNN.

The zoo CNN (robustlab.zoo.pretrained("cnn")) on the first ``--n`` digits test images, the
predicted class, 32 steps, baseline 0 (deletion: lower is better; insertion: higher is better).
Max-sensitivity on the first ``--sens-n`` of them: the largest relative change of the map over
``--sens-samples`` uniform perturbations of Linf radius ``--radius`` (lower is better).
Issue 21's acceptance: extremal perturbations' deletion AUC at most occlusion's.

    python benchmarks/faithfulness_table.py [--n 100] [--sens-n 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from robustlab import zoo
from robustlab.data import load_digits_split
from robustlab.explain import REGISTRY, get_explainer
from robustlab.explain.faithfulness import deletion_auc, insertion_auc, max_sensitivity

SETTINGS = {  # the defaults, but the costliest methods at fewer samples
    "integrated-gradients": {"n_steps": 64},
    "smoothgrad": {"n_samples": 32},
    "sobol": {"grid": 8, "n_designs": 32},
    "smooth-grad-cam++": {"n_samples": 32},
}
EXTRA = {  # rows beside the defaults
    "extremal (dual)": ("extremal", {"variant": "dual"}),
    "extremal (paper)": (
        "extremal",
        {
            "variant": "preserve",
            "areas": (0.05, 0.1, 0.2, 0.4),
            "perturbation": "blur",
            "regul": 300.0,
            "regul_growth": 1.0035,
            "lr": 0.05,
            "sigma": 1.0,
        },
    ),  # fmt: skip
}


def table(n: int, sens_n: int = 20, sens_samples: int = 5, radius: float = 0.02) -> list[dict]:
    model = zoo.pretrained("cnn")
    x = load_digits_split(train=False).x[:n]
    classes = model(x).argmax(1)
    rows = []
    runs = {name: (name, SETTINGS.get(name, {})) for name in sorted(REGISTRY)} | EXTRA
    for name, (method, kwargs) in runs.items():
        t = time.perf_counter()
        a = get_explainer(method, **kwargs)(model, x, classes).attributions
        seconds = time.perf_counter() - t
        m = sens_n and max_sensitivity(model, x[:sens_n], get_explainer(method, **kwargs),
                                       classes[:sens_n], radius=radius, n_samples=sens_samples)  # fmt: skip
        rows.append(
            {
                "method": name,
                "deletion": float(deletion_auc(model, x, a, classes).mean()),
                "insertion": float(insertion_auc(model, x, a, classes).mean()),
                "max_sensitivity": float(m.mean()) if sens_n else None,
                "seconds": round(seconds, 2),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--sens-n", type=int, default=20, help="images for max-sensitivity (0: none)")
    ap.add_argument("--sens-samples", type=int, default=5)
    ap.add_argument("--radius", type=float, default=0.02)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = table(args.n, args.sens_n, args.sens_samples, args.radius)
    head = f"{'method':24s} {'deletion':>9s} {'insertion':>9s} {'max-sens':>9s} {'seconds':>8s}"
    print(head)
    for r in sorted(rows, key=lambda r: r["deletion"]):
        sens = "-" if r["max_sensitivity"] is None else f"{r['max_sensitivity']:.4f}"
        print(f"{r['method']:24s} {r['deletion']:9.4f} {r['insertion']:9.4f} {sens:>9s} "
              f"{r['seconds']:8.2f}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
