"""Figures of the audit page, as base64 PNG strings (matplotlib, embedded in one HTML file)."""

from __future__ import annotations

import numpy as np

from robustlab.plotting import plt
from robustlab.plotting import png as _png

CLEAN, EMPIRICAL, CERTIFIED, SMOOTHED = "#2ca02c", "#d62728", "#1f77b4", "#9467bd"
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def to_image(x, lower: float = 0.0, upper: float = 1.0) -> np.ndarray:
    """An input as something imshow draws: (H, W) gray, (H, W, 3) colour, or (1, F) for rows."""
    a = np.asarray(x, dtype=float)
    a = np.clip((a - lower) / (upper - lower), 0, 1)
    if a.ndim == 1:
        return a[None]
    if a.ndim == 3:
        return a.transpose(1, 2, 0) if a.shape[0] == 3 else a.mean(0)
    return a if a.ndim == 2 else a.reshape(1, -1)


def panel_grid(rows: list[list[dict | None]], row_labels: list[str], size: float = 1.3) -> str:
    """A grid of image panels: each a dict with ``img`` and optional ``title``, ``color``,
    ``cmap``, ``vmin``, ``vmax``; None leaves a cell empty."""
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(size * cols + 0.9, size * 1.12 * len(rows)), squeeze=False
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for s in ax.spines.values():
            s.set_visible(False)
    for r, row in enumerate(rows):
        for c, p in enumerate(row):
            if p is None:
                continue
            ax = axes[r, c]
            img = p["img"]
            cmap = p.get("cmap") or (None if img.ndim == 3 else "gray")
            ax.imshow(img, cmap=cmap, vmin=p.get("vmin", 0), vmax=p.get("vmax", 1))
            ax.set_title(p.get("title", ""), fontsize=7, color=p.get("color", "black"))
        axes[r, 0].set_ylabel(row_labels[r], fontsize=7, rotation=0, ha="right", va="center")
    fig.subplots_adjust(wspace=0.08, hspace=0.35)
    return _png(fig)


def curves(report: dict) -> str | None:
    """Accuracy against eps: clean, each attack, the suite (worst case), each bound method and
    the certified curve; the gap between empirical and certified shaded; the headline eps."""
    att, cer = report.get("attacks") or {}, report.get("certified") or {}
    if not att and not cer:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    clean = report.get("clean_accuracy")
    if clean is not None:
        ax.axhline(clean, color=CLEAN, ls="--", lw=1.2, label="clean")
    for k, (name, pts) in enumerate((att.get("per_attack_curves") or {}).items()):
        xs = [p["eps"] for p in pts]
        ax.plot(xs, [p["robust_accuracy"] for p in pts], lw=1, alpha=0.75, ls=":",
                color=plt.cm.Reds(0.45 + 0.15 * k), label=f"attack: {name}")  # fmt: skip
    emp = [(p["eps"], p["robust_accuracy"]) for p in att.get("curve") or []]
    if emp:
        ax.plot(*zip(*emp, strict=True), marker="o", lw=2, color=EMPIRICAL,
                label="empirical (worst case over attacks)")  # fmt: skip
    methods = cer.get("methods") or []
    for k, m in enumerate(methods):
        pts = [(p["eps"], p["per_method"][m]) for p in cer.get("curve", []) if m in p["per_method"]]
        if len(pts) > 1:
            ax.plot(*zip(*pts, strict=True), lw=1, ls="-.", alpha=0.8,
                    color=plt.cm.Blues(0.4 + 0.5 * k / max(len(methods), 1)), label=f"bound: {m}")  # fmt: skip
        elif pts:
            ax.plot(*pts[0], marker="x", color=CERTIFIED, ls="", label=f"bound: {m}")
    cert = [(p["eps"], p["certified_accuracy"]) for p in cer.get("curve") or []]
    if cert:
        ax.plot(*zip(*cert, strict=True), marker="s", lw=2, color=CERTIFIED,
                label="certified (any method)")  # fmt: skip
    if emp and cert and [e for e, _ in emp] == [e for e, _ in cert]:
        ax.fill_between([e for e, _ in emp], [v for _, v in emp], [v for _, v in cert],
                        color="#999999", alpha=0.18, label="unresolved (gap)")  # fmt: skip
    head = (report.get("headline") or {}).get("eps")
    if head:
        ax.axvline(head, color="#555555", lw=0.8, ls=(0, (2, 3)))
    norm = report.get("norm", "inf")
    ax.set_xlabel(f"eps (L{'∞' if norm == 'inf' else norm})")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    return _png(fig)


def corruption_heatmap(table: list[dict], clean: float | None) -> str | None:
    """Accuracy per corruption (rows) and severity (columns), with the clean accuracy first."""
    if not table:
        return None
    names = list(dict.fromkeys(r["corruption"] for r in table))
    sevs = sorted({r["severity"] for r in table})
    acc = np.full((len(names), len(sevs) + 1), np.nan)
    acc[:, 0] = clean if clean is not None else np.nan
    for r in table:
        acc[names.index(r["corruption"]), 1 + sevs.index(r["severity"])] = r["accuracy"]
    fig, ax = plt.subplots(figsize=(1.1 + 0.62 * (len(sevs) + 1), 0.8 + 0.27 * len(names)))
    im = ax.imshow(acc, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (i, j), v in np.ndenumerate(acc):
        if not np.isnan(v):
            ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6.5)
    ax.set_xticks(range(len(sevs) + 1), ["clean", *[str(s) for s in sevs]], fontsize=7)
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=7)
    ax.set_xlabel("severity", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02).ax.tick_params(labelsize=6)
    return _png(fig)


def per_class(rows: list[dict]) -> str | None:
    """Clean, empirical and certified accuracy per class at the headline eps."""
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(rows) + 1.5), 3))
    x = np.arange(len(rows))
    for k, (key, label, color) in enumerate((
        ("clean_accuracy", "clean", CLEAN),
        ("robust_accuracy", "empirical", EMPIRICAL),
        ("certified_accuracy", "certified", CERTIFIED),
    )):  # fmt: skip
        vals = [np.nan if r.get(key) is None else r[key] for r in rows]
        ax.bar(x + (k - 1) * 0.27, vals, 0.27, label=label, color=color)
    ax.set_xticks(x, [str(r["class"]) for r in rows], fontsize=8)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="lower left", ncol=3)
    return _png(fig)


def radius_curve(curve: list[dict], clean: float | None) -> str | None:
    """Smoothed classifier: certified accuracy against the L2 radius."""
    if not curve:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    if clean is not None:
        ax.axhline(clean, color=CLEAN, ls="--", lw=1.2, label="smoothed, clean")
    ax.step([p["radius"] for p in curve], [p["certified_accuracy"] for p in curve],
            where="post", color=SMOOTHED, lw=2, label="certified (smoothing)")  # fmt: skip
    ax.set_xlabel("L2 radius")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _png(fig)


def compare_curves(reports: list[dict], labels: list[str]) -> str | None:
    """Several runs on one plot: empirical solid, certified dashed, clean dotted; one colour each."""
    if not any(r.get("curve") for r in reports):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (r, label) in enumerate(zip(reports, labels, strict=True)):
        color = RUN_COLORS[k % len(RUN_COLORS)]
        pts = [p for p in r.get("curve") or [] if "eps" in p]
        if r.get("clean_accuracy") is not None:
            ax.axhline(r["clean_accuracy"], color=color, ls=":", lw=1)
        for key, ls, what in (
            ("robust_accuracy", "-", "empirical"),
            ("certified_accuracy", "--", "certified"),
        ):
            xy = [(p["eps"], p[key]) for p in pts if p.get(key) is not None]
            if xy:
                ax.plot(*zip(*xy, strict=True), ls=ls, marker="o", ms=3, color=color,
                        label=f"{label}: {what}")  # fmt: skip
    ax.set_xlabel("eps")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False)
    return _png(fig)
