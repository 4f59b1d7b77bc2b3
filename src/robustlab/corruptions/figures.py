"""The example grid of a corruption report: one image under every corruption and severity."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from robustlab.corruptions.base import corrupt, stable_seed
from robustlab.plotting import plt
from robustlab.plotting import png as _png


def example_grid(
    image: Tensor, names: Sequence[str], severities: Sequence[int], seed: int = 0
) -> str:
    """A base64 PNG: one row per corruption, the clean image and then each severity."""
    x = image[None].clamp(0, 1).cpu()
    cols = 1 + len(severities)
    fig, axes = plt.subplots(
        len(names), cols, figsize=(1.1 * cols + 1.4, 1.1 * len(names)), squeeze=False
    )
    for r, name in enumerate(names):
        views = [x[0]] + [
            corrupt(x, name, s, stable_seed(seed, "example", name, s))[0] for s in severities
        ]
        for c, v in enumerate(views):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            img = v.permute(1, 2, 0).numpy() if v.shape[0] == 3 else v[0].numpy()
            ax.imshow(img, cmap=None if v.shape[0] == 3 else "gray", vmin=0, vmax=1)
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {severities[c - 1]}", fontsize=7)
        axes[r, 0].set_ylabel(
            name.replace("_", " "), fontsize=7, rotation=0, ha="right", va="center"
        )
    fig.subplots_adjust(wspace=0.05, hspace=0.08)
    return _png(fig)


def side_by_side(
    left: Tensor, right: Tensor, names: Sequence[str], titles: tuple[str, str]
) -> object:
    """A matplotlib figure of two grids (corruptions x severities) next to each other, for a
    visual check of two implementations; ``left`` / ``right`` are (len(names), S, C, H, W)."""
    sev = left.shape[1]
    fig, axes = plt.subplots(
        len(names), 2 * sev, figsize=(0.9 * 2 * sev + 1.4, 0.9 * len(names)), squeeze=False
    )
    for r, name in enumerate(names):
        for k, block in enumerate((left, right)):
            for s in range(sev):
                ax = axes[r, k * sev + s]
                ax.set_xticks([])
                ax.set_yticks([])
                v = block[r, s].clamp(0, 1)
                img = v.permute(1, 2, 0).numpy() if v.shape[0] == 3 else v[0].numpy()
                ax.imshow(img, cmap=None if v.shape[0] == 3 else "gray", vmin=0, vmax=1)
                if r == 0:
                    ax.set_title(f"{titles[k]} {s + 1}", fontsize=6)
        axes[r, 0].set_ylabel(
            name.replace("_", " "), fontsize=6, rotation=0, ha="right", va="center"
        )
    fig.subplots_adjust(wspace=0.04, hspace=0.06)
    return fig


__all__ = ["example_grid", "side_by_side"]
