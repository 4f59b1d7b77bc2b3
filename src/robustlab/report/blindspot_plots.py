"""Figures of the blindspots report (level-set paths, cue-conflict images), from its report dict,
as base64 PNG strings."""

from __future__ import annotations

import numpy as np

from robustlab.report.plots import _png, plt


def _image(a):
    """(C, H, W) or (H, W) as an array imshow takes: grey for one channel, RGB for three."""

    a = np.asarray(a, dtype=float)
    if a.ndim == 3 and a.shape[0] == 1:
        return a[0], "gray"
    if a.ndim == 3 and a.shape[0] == 3:
        return np.clip(a.transpose(1, 2, 0), 0, 1), None
    if a.ndim == 3:
        return a.mean(0), "gray"
    return (a if a.ndim == 2 else a.reshape(1, -1)), "gray"


def _grid(rows: list[list], row_titles: list[str], col_titles: list[str]) -> str:
    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.2 * n_cols, 1.3 * len(rows)),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for i, row in enumerate(rows):
        for j, a in enumerate(row):
            img, cmap = _image(a)
            axes[i, j].imshow(img, cmap=cmap, vmin=0, vmax=1)
            if i == 0 and j < len(col_titles):
                axes[i, j].set_title(col_titles[j], fontsize=7)
        axes[i, 0].text(-0.1, 0.5, row_titles[i], fontsize=7, ha="right", va="center",
                        transform=axes[i, 0].transAxes)  # fmt: skip
    return _png(fig)


def levelset_paths(report: dict) -> str | None:
    """Each shown pair: snapshots of the path from the source, then the target."""
    ls = report.get("levelset") or {}
    paths, targets = ls.get("paths"), ls.get("targets")
    if not paths:
        return None
    rows = [[*p, t] for p, t in zip(paths, targets, strict=True)]
    titles = [f"{c} -> {t}" for c, t in zip(ls["source_class"], ls["target_class"], strict=False)]
    cols = ["source"] + [""] * (len(paths[0]) - 2) + ["end", "target"]
    return _grid(rows, titles, cols)


def cue_conflicts(report: dict) -> str | None:
    """Shape image, texture image and their cue-conflict image, one row each."""
    sb = report.get("shape_bias") or {}
    ex = sb.get("examples")
    if not ex:
        return None
    return _grid(ex, [""] * len(ex), ["shape", "texture", "cue conflict"])
