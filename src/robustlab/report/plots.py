"""Figures for the report, as base64 PNG strings that embed in one HTML file."""

from __future__ import annotations

import numpy as np

from robustlab.plotting import plt
from robustlab.plotting import png as _png

SERIES = (
    ("robust_accuracy", "empirical (attack)", "#d62728", "o"),
    ("certified_accuracy", "certified (bounds)", "#1f77b4", "s"),
)


def accuracy_curve(curve: list[dict], clean_accuracy: float, norm: str) -> str:
    """Accuracy against eps: clean, empirical (attack) and certified where present."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    eps = [p["eps"] for p in curve]
    ax.axhline(clean_accuracy, color="#2ca02c", ls="--", lw=1.2, label="clean")
    for key, label, color, marker in SERIES:
        pts = [(p["eps"], p[key]) for p in curve if p.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=marker, color=color, label=label)
    ax.set_xlabel(f"eps (L{'∞' if norm == 'inf' else norm})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    if eps:
        ax.set_xlim(min(eps) - 0.01 * (max(eps) or 1), max(eps) * 1.03 + 1e-9)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)


def attribution_maps(attributions: list, titles: list[str], signed: bool) -> str:
    """Heat-maps of attributions (channels summed; a grid of regions as it is), one panel each."""

    maps = []
    for a in attributions:
        a = np.asarray(a, dtype=float)
        maps.append(a.sum(0) if a.ndim == 3 else a.reshape(1, -1) if a.ndim == 1 else a)
    cols = min(8, len(maps))
    rows = (len(maps) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.55 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m, title in zip(axes.flat, maps, titles, strict=False):
        top = float(np.abs(m).max()) or 1.0
        if signed:
            ax.imshow(m, cmap="RdBu_r", vmin=-top, vmax=top)
        else:
            ax.imshow(m, cmap="inferno", vmin=0, vmax=top)
        ax.set_title(title, fontsize=7)
    return _png(fig)


def severity_curves(table: list[dict], clean_accuracy: float, families: dict[str, str]) -> str:
    """Accuracy against corruption severity: the mean over all corruptions and one line per
    family (noise, blur, weather, digital, ...)."""
    groups: dict[str, dict[int, list[float]]] = {"mean": {}}
    for row in table:
        for g in ("mean", families.get(row["corruption"], "other")):
            groups.setdefault(g, {}).setdefault(row["severity"], []).append(row["accuracy"])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.axhline(clean_accuracy, color="#2ca02c", ls="--", lw=1.2, label="clean")
    for g, by in groups.items():
        sev = sorted(by)
        acc = [sum(by[s]) / len(by[s]) for s in sev]
        style = {"color": "black", "lw": 2.2} if g == "mean" else {"lw": 1.2, "alpha": 0.85}
        ax.plot(sev, acc, marker="o", label=g, **style)
    ax.set_xlabel("severity")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return _png(fig)
