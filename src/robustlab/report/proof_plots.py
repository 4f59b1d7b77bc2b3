"""The figure of certify's proof features: each feature's input-gradient picture, one row per
certified input."""

from __future__ import annotations

import numpy as np

from robustlab.report.plots import _png, plt


def proof_pictures(report: dict) -> str | None:
    """Per certified input: its proof features' input gradients (red +, blue -)."""

    points = (report.get("proof_features") or {}).get("points") or []
    points = [p for p in points if p.get("pictures")]
    if not points:
        return None
    cols = min(8, max(len(p["pictures"]) for p in points))
    fig, axes = plt.subplots(len(points), cols, figsize=(1.3 * cols, 1.4 * len(points)),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for i, p in enumerate(points):
        for j, (pic, n) in enumerate(zip(p["pictures"][:cols], p["features"], strict=False)):
            a = np.asarray(pic, dtype=float)
            a = a.sum(0) if a.ndim == 3 else a.reshape(1, -1) if a.ndim == 1 else a
            top = float(np.abs(a).max()) or 1.0
            axes[i, j].imshow(a, cmap="RdBu_r", vmin=-top, vmax=top)
            axes[i, j].set_title(f"#{p['index']} n{n}", fontsize=7)
    return _png(fig)
