"""Figures of the weight-sensitivity reports (sensitivity, prune, patch), from their report dicts,
as base64 PNG strings."""

from __future__ import annotations

from robustlab.report.plots import _png, plt

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f")


def layer_bars(report: dict) -> str | None:
    """Per layer: Hessian trace (95% interval), top Hessian eigenvalue, Fisher trace (log scale)."""
    rows = report.get("layers") or []
    if not rows:
        return None
    names = [r["name"] or "(model)" for r in rows]
    panels = [("Hessian trace", "hessian_trace"), ("top Hessian eigenvalue", "top_eigenvalue"),
              ("Fisher trace", "fisher_trace")]  # fmt: skip
    panels = [p for p in panels if any(r.get(p[1]) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.0), squeeze=False)
    for ax, (title, key) in zip(axes[0], panels, strict=True):
        values = [abs(r[key]) if r.get(key) is not None else 0.0 for r in rows]
        err = None
        if key == "hessian_trace":
            lo = [max(0.0, r["hessian_trace"] - (r["hessian_trace_ci"][0] or r["hessian_trace"]))
                  for r in rows]  # fmt: skip
            hi = [
                (r["hessian_trace_ci"][1] or r["hessian_trace"]) - r["hessian_trace"] for r in rows
            ]
            err = [lo, hi]
        ax.bar(range(len(rows)), values, yerr=err, color=COLORS[0], capsize=3)
        ax.set_xticks(range(len(rows)), names, rotation=45, ha="right", fontsize=7)
        if all(v > 0 for v in values):
            ax.set_yscale("log")
        ax.set_title(title + (" (|value|)" if key == "top_eigenvalue" else ""), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _png(fig)


def noise_curves(report: dict) -> str | None:
    """Clean (solid) and robust (dashed) accuracy against the relative weight-noise size."""
    noise = report.get("noise")
    if not noise:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, c in enumerate(noise["curves"]):
        color = "black" if c["layer"] == "model" else COLORS[i % len(COLORS)]
        label = "whole model" if c["layer"] == "model" else f"layer {c['layer']}"
        s = [p["sigma"] for p in c["points"]]
        ax.plot(s, [p["clean_accuracy"] for p in c["points"]], marker="o", color=color, label=label)
        robust = [p["robust_accuracy"] for p in c["points"]]
        if all(r is not None for r in robust):
            ax.plot(s, robust, marker="s", ls="--", color=color)
    ax.set_xlabel("relative weight noise sigma (w * (1 + sigma N(0, 1)))")
    ax.set_ylabel("accuracy (solid: clean, dashed: robust)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    return _png(fig)


def trace_vs_drop(report: dict) -> str | None:
    """Per layer: Hessian trace against the measured loss increase, one series per format."""
    formats = [c["format"] for c in report.get("correlations") or []]
    if not formats:
        return None
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    rows = report["layers"]
    x = [r["hessian_trace"] for r in rows]
    for i, fmt in enumerate(formats):
        pts = [
            (r, xi)
            for r, xi in zip(rows, x, strict=True)
            if r.get(f"{fmt}_loss_increase") is not None
        ]
        ys = [r[f"{fmt}_loss_increase"] for r, _ in pts]
        ax.scatter([xi for _, xi in pts], ys, color=COLORS[(i + 1) % len(COLORS)], label=fmt)
        for (r, xi), yi in zip(pts, ys, strict=True):
            ax.annotate(r["name"], (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if all(v > 0 for v in x):
        ax.set_xscale("log")
    ys_all = [
        r[f"{f}_loss_increase"]
        for f in formats
        for r in rows
        if r.get(f"{f}_loss_increase") is not None
    ]
    if ys_all and min(ys_all) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("Hessian trace of the layer")
    ax.set_ylabel("loss increase, that layer rounded")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def sparsity_curve(report: dict) -> str | None:
    """Clean, robust and certified accuracy against the achieved sparsity, per method."""
    rows = report.get("rows") or []
    if not rows:
        return None
    dense = report["dense"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    styles = (("robust_accuracy", "-", "o"), ("clean_accuracy", ":", "^"),
              ("certified_accuracy", "--", "s"))  # fmt: skip
    for i, m in enumerate(dict.fromkeys(r["method"] for r in rows)):
        pts = sorted((r for r in rows if r["method"] == m), key=lambda r: r["sparsity"])
        for key, ls, marker in styles:
            ax.plot([0.0] + [r["sparsity"] for r in pts], [dense[key]] + [r[key] for r in pts],
                    ls=ls, marker=marker, color=COLORS[i % len(COLORS)],
                    label=f"{m} {key.split('_')[0]}")  # fmt: skip
    ax.set_xlabel("sparsity (share of zero weights)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7, ncol=2)
    return _png(fig)


def patch_curve(report: dict) -> str | None:
    """Clean, robust and certified accuracy of the patched model against the scale, with the
    standard and robust models' as horizontal lines."""
    rows = report.get("rows") or []
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    a = [r["scale"] for r in rows]
    for i, key in enumerate(("robust_accuracy", "clean_accuracy", "certified_accuracy")):
        ax.plot(a, [r[key] for r in rows], marker="o", color=COLORS[i], label=key.split("_")[0])
        ax.axhline(report["robust"][key], color=COLORS[i], ls="--", lw=0.8)
    ax.set_xlabel("scale A of the robust weight signature")
    ax.set_ylabel("accuracy (dashed: the robust model)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)
