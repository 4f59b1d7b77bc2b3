"""Figures as base64 PNG strings that embed in one HTML file (matplotlib, headless backend).

Core layer: the capabilities that store pictures in their results (the audit's example grids,
corruption grids) and the report's figures share this one drawing primitive."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plt", "png"]


def png(fig) -> str:
    """The figure as a base64 PNG string (the figure is closed)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")
