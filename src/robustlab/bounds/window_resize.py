"""Windows (auto_LiRPA's patches, Xu et al. 2020, arXiv:2002.12920) through nearest and
(bi)linear resizing: the rows of the resize matrices a window covers touch a run of inputs, the
input window. ``win`` is a ``window.Window`` (window.py imports this module; a step builds its
result with ``win.placed``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from robustlab.bounds.ops.shape import Resize


def resize(op: Resize, win, in_shape: tuple[int, ...]):
    """Resizing's transpose ``R^T A S`` on a window: the rows of R (and S) that the window covers
    touch a run of inputs (R is monotone in position), taken as the input window."""
    b, m, c, h, w = win.data.shape
    shared = b > 1 and win.data.stride(0) == 0 and win.oy.shape[0] == 1
    data = win.data[:1] if shared else win.data
    ry, iy, hh = _local(op.rows.to(data.dtype), win.oy, h)  # (k, m, h, hh)
    rx, ix, ww = _local(op.cols.to(data.dtype), win.ox, w)
    out = (ry.transpose(-1, -2)[:, :, None] @ data) @ rx[:, :, None]  # (k or b, m, c, hh, ww)
    if shared:
        out = out.expand(b, -1, -1, -1, -1)
    H, W = in_shape[1:]
    new = win.placed(out, iy, ix, (H, W))
    return [new.dense() if hh * ww >= H * W else new], win.data.new_zeros(b, m)


def _local(r: Tensor, o: Tensor, h: int) -> tuple[Tensor, Tensor, int]:
    """For windows of ``h`` rows at ``o`` on the output of ``r`` (n_out, n_in): each window's
    block of ``r`` (k, m, h, size), the first input it touches, and the block's width ``size``
    (the most inputs any window position touches)."""
    n_out, n_in = r.shape
    r, dev = r.to(o.device), o.device
    pos = torch.arange(n_in, device=dev).expand(n_out, n_in)
    first = torch.where(r != 0, pos, n_in).amin(1)
    last = torch.where(r != 0, pos, -1).amax(1)
    starts = torch.arange(-h + 1, n_out, device=dev)  # every window start that overlaps the frame
    span = last[(starts + h - 1).clamp(max=n_out - 1)] - first[starts.clamp(min=0)] + 1
    size = int(span.max())
    start = first[o.clamp(0, n_out - 1)]
    padded = nn.functional.pad(r, (0, size, h, h))  # rows -h.., columns ..n_in + size: zero
    rows = (o + h)[..., None] + torch.arange(h, device=dev)  # (k, m, h)
    cols = start[..., None] + torch.arange(size, device=dev)  # (k, m, size)
    return padded[rows[..., :, None], cols[..., None, :]], start, size
