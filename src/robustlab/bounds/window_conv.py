"""Windows (auto_LiRPA's patches, Xu et al. 2020, arXiv:2002.12920) through a convolution's
transpose: the rows' windows grow by the kernel, as one cached matrix product for small windows,
else a transposed convolution (``ops.transposed.conv_transpose``). Also the helpers every window
step shares (the frame mask, the bias). ``win`` is a ``window.Window`` (window.py imports this
module; a step builds its result with ``win.placed``)."""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from robustlab.bounds.ops.linear import Conv, _cast
from robustlab.bounds.ops.transposed import conv_transpose

MATRIX_ENTRIES = 2**22  # largest matrix kept per (convolution, window size)
# most multiply-adds of the matrix over the convolution's (measured crossovers, one thread):
# float32 convolutions run on oneDNN (774 rows of 16 x 5 x 5 onto 16 channels: 3.7 ms against
# 5.1 for the matrix, 5.4x the work; 3 x 3: 1.9 against 0.9, 2.8x); float64 ones on
# ops.transposed (387 rows of 16 x 5 x 5 onto 16: 4.8 ms against 5.2, 5.4x; 6 x 6: 5.1 against
# 10.3, 7.1x; 4 x 4: 3.9 against 2.5, 4x)
MATRIX_WORK = {torch.float64: 5, torch.float32: 4}
_MATRICES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def matrices(op) -> dict:
    """The matrices cached for ``op`` (a few window sizes each, freed with the operation)."""
    return _MATRICES.setdefault(op, {})


def conv(op: Conv, win, in_shape: tuple[int, ...]) -> tuple[list, Tensor]:
    """The convolution's transpose (a transposed convolution) on a window: the window grows to
    (h - 1) stride + d (K - 1) + 1 rows, placed at oy stride - padding on the input."""
    b, m, c, h, w = win.data.shape
    weight = _cast(op.weight, win.data)
    shared = b > 1 and win.data.stride(0) == 0 and win.oy.shape[0] == 1
    data = win.data[:1] if shared else win.data
    matrix = _transpose_matrix(op, weight, c, h, w)
    if matrix is not None:  # small windows: one matrix product (fast in float64 too)
        out = (data.reshape(-1, c * h * w) @ matrix[0]).reshape(-1, *matrix[1])
    else:
        rows = data.reshape(-1, c, h, w)  # float64: ops.transposed's formulations, not PyTorch's
        out = conv_transpose(rows, weight, op.stride, (0, 0), None, op.groups, op.dilation)
    H, W = in_shape[1:]
    oy = win.oy * op.stride[0] - op.padding[0]
    ox = win.ox * op.stride[1] - op.padding[1]
    hh, ww = out.shape[2:]
    out = drop_outside(out.reshape(data.shape[0], m, -1, hh, ww), oy, ox, (H, W))
    if shared:
        out = out.expand(b, -1, -1, -1, -1)
    bias = bias_rows(op, win)
    new = win.placed(out, oy, ox, (H, W))
    return [new.dense() if hh * ww >= H * W else new], bias


def _transpose_matrix(op: Conv, weight: Tensor, c: int, h: int, w: int):
    """The transposed convolution on an (c, h, w) window as a dense matrix (cached), or None
    when it would be large."""
    key = (c, h, w, weight.dtype, weight.device, weight.data_ptr(), op.weight._version)
    per_op = matrices(op)
    if key in per_op:
        return per_op[key]
    s, d, k = op.stride, op.dilation, weight.shape[2:]
    hh, ww = (h - 1) * s[0] + d[0] * (k[0] - 1) + 1, (w - 1) * s[1] + d[1] * (k[1] - 1) + 1
    n_in = weight.shape[1] * op.groups
    # the matrix multiplies every window entry with every output (hh ww per input channel, all
    # groups), the convolution with its k k taps: past MATRIX_WORK times more, the convolution
    # is faster (float64, one thread: 2.3x at a 10 x 10 window of a 3 x 3 kernel)
    work = MATRIX_WORK.get(weight.dtype, 8) * k.numel()
    if c * h * w * n_in * hh * ww > MATRIX_ENTRIES or hh * ww * op.groups > work:
        per_op[key] = None
        return None
    eye = torch.eye(c * h * w, dtype=weight.dtype, device=weight.device).reshape(-1, c, h, w)
    cols = nn.functional.conv_transpose2d(eye, weight, None, s, 0, 0, op.groups, d)
    if len(per_op) >= 4:  # a few window sizes per convolution: keep memory small
        per_op.pop(next(iter(per_op)))
    per_op[key] = (cols.reshape(c * h * w, -1), (n_in, hh, ww))
    return per_op[key]


def drop_outside(out: Tensor, oy: Tensor, ox: Tensor, frame: tuple[int, int]) -> Tensor:
    """A step's new window data (batch, rows, C, h, w), owned by the step, with its entries
    outside the frame set to zero (in place; untouched where every window lies inside)."""
    h, w = out.shape[3:]
    H, W = frame
    if oy.numel() == 0 or (
        int(oy.min()) >= 0
        and int(oy.max()) + h <= H
        and int(ox.min()) >= 0
        and int(ox.max()) + w <= W
    ):
        return out
    valid = in_frame(oy, ox, h, w, frame)
    return out.mul_(valid) if valid.shape[0] <= out.shape[0] else out * valid


def in_frame(oy: Tensor, ox: Tensor, h: int, w: int, frame: tuple[int, int]) -> Tensor:
    """Which cells of (h, w) windows placed at (oy, ox) lie inside the (H, W) frame, as a mask
    broadcasting over the windows' data (..., 1, h, w)."""
    H, W = frame
    ys = oy[..., None] + torch.arange(h, device=oy.device)
    xs = ox[..., None] + torch.arange(w, device=ox.device)
    return ((ys >= 0) & (ys < H))[..., None, :, None] & ((xs >= 0) & (xs < W))[..., None, None, :]


def bias_rows(op, win) -> Tensor:
    """The rows' constant term from a layer's bias (zero without one): (batch, rows)."""
    if op.bias is None:
        return win.data.new_zeros(win.data.shape[:2])
    return win.data.sum((3, 4)) @ _cast(op.bias, win.data)
