"""Shape and indexing operations on input-dependent tensors: reshape, transpose, slicing,
gathering, concatenation, scattering (constant inputs are folded before these run)."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F

from robustlab._onnx.context import Ctx, Dyn

Handler = Callable[[Ctx, onnx.NodeProto], None]


def _resolve(ctx: Ctx, target: list[int], dims: list[int], allowzero: bool) -> list[int]:
    """Resolve 0 (copy) and -1 (infer) in an ONNX target shape."""
    out = [
        dims[i] if t == 0 and not allowzero and i < len(dims) else t for i, t in enumerate(target)
    ]
    numel, known = math.prod(dims), math.prod(d for d in out if d != -1)
    if out.count(-1) == 1 and known and numel % known == 0:
        out[out.index(-1)] = numel // known
    if out.count(-1) or any(d < 0 for d in out) or math.prod(out) != numel:
        raise ctx.error(f"target shape {target} does not keep the {numel} entries of {dims}")
    return out


def _op_reshape(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, x = ctx.attrs(), ctx.dyn(0)
    target = list(attrs["shape"]) if ctx.opset < 5 else ctx.ints(1)
    if target is None:
        raise ctx.error("the target shape is missing")
    ctx.set(ctx.reshape(x, _resolve(ctx, target, x.shape, bool(attrs.get("allowzero", 0)))))


def _op_flatten(ctx: Ctx, node: onnx.NodeProto) -> None:
    x = ctx.dyn(0)
    axis = ctx.attrs().get("axis", 1)
    if not -x.rank <= axis <= x.rank:
        raise ctx.error(f"axis {axis} is out of range for rank {x.rank}")
    axis %= x.rank + 1
    ctx.set(ctx.reshape(x, [math.prod(x.shape[:axis]), math.prod(x.shape[axis:])]))


def transpose(ctx: Ctx, x: Dyn, perm: list[int] | None) -> Dyn:
    """``x`` with its ONNX axes permuted; a permutation that moves only unit axes is a reshape."""
    perm = list(reversed(range(x.rank))) if perm is None else [p % max(x.rank, 1) for p in perm]
    if sorted(perm) != list(range(x.rank)):
        raise ctx.error(f"perm {perm} is not a permutation of {x.rank} axes")
    shape = [x.shape[p] for p in perm]
    if [p for p in perm if x.shape[p] != 1] == [a for a in range(x.rank) if x.shape[a] != 1]:
        return ctx.reshape(x, shape)
    if x.batched and perm[0] != 0:
        x = ctx.unbatch(x)
    full = perm if x.batched else [0, *(p + 1 for p in perm)]
    return ctx.call(torch.permute, x, tuple(full), batched=x.batched)


def _op_transpose(ctx: Ctx, node: onnx.NodeProto) -> None:
    ctx.set(transpose(ctx, ctx.dyn(0), ctx.attrs().get("perm")))


def _axes(ctx: Ctx, index: int) -> list[int] | None:
    if ctx.opset >= 13:
        return ctx.ints(index)
    axes = ctx.attrs().get("axes")
    return None if axes is None else list(axes)


def _op_squeeze(ctx: Ctx, node: onnx.NodeProto) -> None:
    x, axes = ctx.dyn(0), _axes(ctx, 1)
    shape = x.shape
    axes = [a % len(shape) for a in axes] if axes else [a for a, d in enumerate(shape) if d == 1]
    if any(shape[a] != 1 for a in axes):
        raise ctx.error(f"cannot squeeze axes {axes} of shape {shape}")
    ctx.set(ctx.reshape(x, [d for a, d in enumerate(shape) if a not in axes]))


def _op_unsqueeze(ctx: Ctx, node: onnx.NodeProto) -> None:
    x, axes = ctx.dyn(0), _axes(ctx, 1) or []
    shape = list(x.shape)
    rank = len(shape) + len(axes)
    for a in sorted(a % rank for a in axes):
        shape.insert(a, 1)
    ctx.set(ctx.reshape(x, shape))


def _op_concat(ctx: Ctx, node: onnx.NodeProto) -> None:
    values = [v for v in ctx.inputs() if v is not None]
    dyns = ctx.align(*[v for v in values if isinstance(v, Dyn)])
    rank = dyns[0].rank
    axis = ctx.attrs()["axis"] % max(rank, 1)
    frame, dim = ctx.axis(dyns[0], axis)
    dyns = [ctx.unbatch(d) for d in dyns] if not frame.batched else dyns
    it = iter(dyns)
    parts = [next(it) if isinstance(v, Dyn) else v for v in values]
    for p in parts:
        shape = p.shape if isinstance(p, Dyn) else list(p.shape)
        if len(shape) != rank or any(shape[a] != frame.shape[a] for a in range(rank) if a != axis):
            raise ctx.error(f"cannot concatenate shapes {shape} and {frame.shape} on axis {axis}")
    if all(isinstance(p, Dyn) for p in parts):
        ctx.set(ctx.call(torch.cat, parts, dim, batched=frame.batched))
        return
    # constants among the parts: each input-dependent part padded with zeros into its place,
    # the parts summed, and the constants added (exact: every entry is one part plus zeros)
    sizes = [p.shape[axis] if isinstance(p, Dyn) else p.shape[axis] for p in parts]
    total, start, acc = sum(sizes), 0, None
    fill = np.zeros([total if a == axis else frame.shape[a] for a in range(rank)])
    for p, size in zip(parts, sizes, strict=True):
        if isinstance(p, Dyn):
            after = frame.example.ndim - 1 - dim
            pad = (0, 0) * after + (start, total - start - size)
            padded = ctx.call(F.pad, p, pad, batched=frame.batched)
            acc = (
                padded
                if acc is None
                else ctx.call(operator.add, acc, padded, batched=frame.batched)
            )
        else:
            index = [slice(None)] * rank
            index[axis] = slice(start, start + size)
            fill[tuple(index)] = p
        start += size
    _, const = ctx.torch_const(acc, fill.astype(np.float64))
    ctx.set(ctx.call(torch.add, acc, const, batched=frame.batched))


def _op_gather(ctx: Ctx, node: onnx.NodeProto) -> None:
    x, index = ctx.dyn(0), ctx.const(1)
    if index.dtype.kind not in "iu":
        raise ctx.error(f"indices must be integers; found {index.dtype}")
    axis = ctx.attrs().get("axis", 0)
    x, dim = ctx.axis(x, axis)
    size = x.example.shape[dim]
    if index.size and (index.min() < -size or index.max() >= size):
        raise ctx.error(f"indices {index.reshape(-1)[:8].tolist()} out of range for size {size}")
    index = index.astype(np.int64) % max(size, 1)
    if index.ndim == 0:
        key = (slice(None),) * dim + (int(index),)
        y = ctx.call(operator.getitem, x, key, batched=x.batched)
    else:
        flat = torch.from_numpy(index.reshape(-1).copy())
        y = ctx.call(torch.index_select, x, dim, flat, batched=x.batched)
        if index.ndim > 1:
            shape = [*y.example.shape[1:dim], *index.shape, *y.example.shape[dim + 1 :]]
            y = ctx.call(torch.reshape, y, (-1, *shape), batched=x.batched)
    ctx.set(y)


def _slice_args(ctx: Ctx, node: onnx.NodeProto, rank: int) -> list[tuple[int, int, int]]:
    """(axis, start, end, step) per sliced axis, from attributes or constant inputs."""
    if ctx.opset < 10:
        attrs = ctx.attrs()
        starts, ends = list(attrs["starts"]), list(attrs["ends"])
        axes, steps = list(attrs.get("axes", range(len(starts)))), [1] * len(starts)
    else:
        for i in range(1, 5):
            value = ctx.get(i)
            if isinstance(value, Dyn):
                raise ctx.fail(
                    f"input {i} (starts / ends / axes / steps) is computed from the input"
                )
        starts, ends = ctx.ints(1), ctx.ints(2)
        axes = ctx.ints(3) or list(range(len(starts)))
        steps = ctx.ints(4) or [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.error("starts, ends, axes and steps differ in length")
    if any(s == 0 for s in steps):
        raise ctx.error("a step of 0")
    return [
        (a % max(rank, 1), s, e, st) for a, s, e, st in zip(axes, starts, ends, steps, strict=True)
    ]


def slice_value(ctx: Ctx, x: Dyn, spec: list[tuple[int, int, int, int]]) -> Dyn:
    """``x[starts:ends:steps]`` along ONNX axes: ``torch.flip`` for negative steps, then one
    ``operator.getitem``."""
    ranges = {}
    for axis, start, end, step in spec:
        if not 0 <= axis < x.rank:
            raise ctx.error(f"axis {axis} is out of range for rank {x.rank}")
        ranges[axis] = (range(*slice(start, end, step).indices(x.shape[axis])), step)
    if any(len(r) == 0 for r, _ in ranges.values()):
        raise ctx.fail("a slice with no elements is not supported")
    if x.batched and 0 in ranges:
        x = ctx.unbatch(x)
    shift = 0 if x.batched else 1
    flips = [a + shift for a, (r, step) in ranges.items() if step < 0 and len(r) > 1]
    if flips:
        x = ctx.call(torch.flip, x, flips, batched=x.batched)
    key = [slice(None)] * (x.rank + shift)
    for a, (r, step) in ranges.items():
        n = x.shape[a]
        first, last = (r[0], r[-1]) if step > 0 or len(r) == 1 else (n - 1 - r[0], n - 1 - r[-1])
        key[a + shift] = slice(first, last + 1, abs(step) if len(r) > 1 else 1)
    while key and key[-1] == slice(None):
        key.pop()
    if all(k == slice(None) or k == slice(0, x.example.shape[i], 1) for i, k in enumerate(key)):
        return x
    return ctx.call(operator.getitem, x, tuple(key), batched=x.batched)


def _op_slice(ctx: Ctx, node: onnx.NodeProto) -> None:
    if any(isinstance(ctx.get(i), Dyn) for i in range(1, 5)):
        raise ctx.fail(
            "starts / ends / axes / steps computed from the model input (slicing that "
            "depends on input values) are not supported"
        )
    x = ctx.dyn(0)
    ctx.set(slice_value(ctx, x, _slice_args(ctx, node, x.rank)))


def _op_split(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, x = ctx.attrs(), ctx.dyn(0)
    axis = attrs.get("axis", 0) % max(x.rank, 1)
    size = x.shape[axis]
    split = ctx.ints(1) if ctx.opset >= 13 else attrs.get("split")
    if not split:
        k = int(attrs.get("num_outputs", len(node.output)))
        chunk = -(-size // k)
        split = [min(chunk, size - i * chunk) for i in range(k)]
    if sum(split) != size or len(split) != len(node.output) or min(split) < 0:
        raise ctx.error(f"split {list(split)} does not divide axis {axis} of size {size}")
    start = 0
    for i, n in enumerate(split):
        if node.output[i] and n > 0:
            ctx.set(slice_value(ctx, x, [(axis, start, start + n, 1)]), i)
        start += n


def _op_expand(ctx: Ctx, node: onnx.NodeProto) -> None:
    x, shape = ctx.dyn(0), ctx.ints(1)
    rank = max(x.rank, len(shape))
    dims = [1] * (rank - x.rank) + x.shape
    shape = [1] * (rank - len(shape)) + shape
    out = [d if s == 1 else s for d, s in zip(dims, shape, strict=True)]
    if any(d not in (1, o) for d, o in zip(dims, out, strict=True)):
        raise ctx.error(f"cannot expand {x.shape} to {shape}")
    if out == dims:
        ctx.set(ctx.reshape(x, out))
        return
    x = ctx.reshape(x, dims)
    if x.batched and out[0] != 1:
        x = ctx.unbatch(x)
    target = out[1:] if x.batched else out
    ctx.set(ctx.method("expand", x, -1, *target))


def _op_shape(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, x = ctx.attrs(), ctx.dyn(0)
    start, end = attrs.get("start", 0), attrs.get("end")
    ctx.set(np.array(x.shape[start:end], dtype=np.int64))


def _op_size(ctx: Ctx, node: onnx.NodeProto) -> None:
    ctx.set(np.array(math.prod(ctx.dyn(0).shape), dtype=np.int64))


def _op_alias(ctx: Ctx, node: onnx.NodeProto) -> None:
    mode = ctx.get(2) if node.op_type == "Dropout" else None
    if isinstance(mode, np.ndarray) and bool(mode.reshape(-1)[0]):
        raise ctx.fail("training_mode=True is not supported")
    if len(node.output) > 1 and node.output[1] and ctx.uses[node.output[1]]:
        raise ctx.fail("the mask output is not supported")
    ctx.set(ctx.get(0))


def _op_scatternd(ctx: Ctx, node: onnx.NodeProto) -> None:
    """ScatterND with constant indices: ``data * keep + updates`` placed by a constant 0/1
    matrix (``torch.matmul``), or added as a constant when the updates are constant."""
    if ctx.attrs().get("reduction", "none") != "none":
        raise ctx.fail("reduction is not supported")
    data, indices, updates = ctx.get(0), ctx.const(1), ctx.get(2)
    shape = data.shape if isinstance(data, Dyn) else list(data.shape)
    k = indices.shape[-1]
    idx = indices.reshape(-1, k).astype(np.int64) % np.array(shape[:k], dtype=np.int64)
    slab = math.prod(shape[k:])
    starts = np.ravel_multi_index(tuple(idx.T), shape[:k]) * slab if k else np.zeros(1, np.int64)
    positions = (starts[:, None] + np.arange(slab)[None, :]).reshape(-1)
    if len(np.unique(positions)) != len(positions):
        raise ctx.fail("duplicate indices are not supported")
    numel = math.prod(shape)
    keep = np.ones(numel)
    keep[positions] = 0.0
    keep = keep.reshape(shape)
    if isinstance(data, Dyn):
        x, c = ctx.torch_const(data, keep)
        base = ctx.call(torch.mul, x, c, batched=x.batched)
    else:
        base = data * keep.astype(data.dtype)
    if isinstance(updates, np.ndarray):
        placed = np.zeros(numel)
        placed[positions] = updates.reshape(-1)
        placed = placed.reshape(shape)
        x, c = ctx.torch_const(base, placed)
        ctx.set(ctx.call(torch.add, x, c, batched=x.batched))
        return
    flat = ctx.call(torch.reshape, updates, (-1, math.prod(updates.shape)), batched=False)
    matrix = np.zeros((len(positions), numel))
    matrix[np.arange(len(positions)), positions] = 1.0
    spread = ctx.reshape(ctx.call(torch.matmul, flat, matrix, batched=False), shape)
    if isinstance(base, Dyn):
        a, b = ctx.align(base, spread)
        ctx.set(ctx.call(operator.add, a, b, batched=a.batched))
    else:
        x, c = ctx.torch_const(spread, base)
        ctx.set(ctx.call(torch.add, x, c, batched=x.batched))


HANDLERS: dict[str, Handler] = {
    "Concat": _op_concat,
    "Dropout": _op_alias,
    "Expand": _op_expand,
    "Flatten": _op_flatten,
    "Gather": _op_gather,
    "Identity": _op_alias,
    "Reshape": _op_reshape,
    "ScatterND": _op_scatternd,
    "Shape": _op_shape,
    "Size": _op_size,
    "Slice": _op_slice,
    "Split": _op_split,
    "Squeeze": _op_squeeze,
    "Transpose": _op_transpose,
    "Unsqueeze": _op_unsqueeze,
}
