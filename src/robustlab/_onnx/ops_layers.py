"""Layers with weights or windows: Gemm / MatMul, (transposed) convolution, normalisation,
pooling, padding and resizing, as native torch modules where one exists."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import nn

from robustlab._onnx.context import Ctx, Dyn, Value
from robustlab._onnx.ops_math import binary
from robustlab._onnx.ops_shape import transpose

Handler = Callable[[Ctx, onnx.NodeProto], None]


def _layer(cls: type[nn.Module], weight: torch.Tensor, bias: torch.Tensor | None, *args, **kw):
    """``cls(*args, **kw)`` holding ``weight`` and ``bias``: built on the meta device (no
    initialisation, and none of torch.nn.utils.skip_init's import of sympy, 2 s), then given
    the tensors."""
    with torch.device("meta"):
        layer = cls(*args, bias=bias is not None, **kw)
    layer.weight = nn.Parameter(weight.contiguous())  # one (transposing) copy at most
    if bias is not None:
        layer.bias = nn.Parameter(bias.contiguous())
    return layer


def _linear(ctx: Ctx, weight: np.ndarray, bias: np.ndarray | None) -> nn.Linear:
    b = None if bias is None else ctx.tensor(bias)
    return _layer(nn.Linear, ctx.tensor(weight), b, weight.shape[1], weight.shape[0])


def _spatial(ctx: Ctx, x: Dyn, nd: int, what: str) -> Dyn:
    """``x`` as torch (B, C, *spatial) with ``nd`` spatial axes."""
    x = ctx.rebatch(x)
    if not x.batched or x.rank != nd + 2:
        raise ctx.fail(f"{what} needs a tensor of shape (1, C, {nd} spatial axes); found {x.shape}")
    return x


def matmul(ctx: Ctx, a: Value, b: Value) -> Value:
    """``a @ b`` with numpy semantics, one operand at least input-dependent."""
    if isinstance(a, Dyn) and isinstance(b, np.ndarray) and b.ndim == 2 and a.rank >= 2:
        return ctx.call_module(_linear(ctx, b.T, None), a)
    if isinstance(a, Dyn) and isinstance(b, np.ndarray) and b.ndim == 2 and a.rank == 1:
        return ctx.call_module(_linear(ctx, b.T, None), a, batched=False)
    if isinstance(a, np.ndarray) and isinstance(b, Dyn) and a.ndim == 2 and b.rank == 1:
        return ctx.call_module(_linear(ctx, a, None), b, batched=False)
    if isinstance(a, Dyn) and isinstance(b, Dyn):
        if a.rank < 2 or b.rank < 2:
            raise ctx.fail("a product of two input-dependent tensors needs both of rank >= 2")
        a, b = ctx.align(a, b)
        return ctx.call(torch.matmul, a, b, batched=a.batched)
    dyn_first = isinstance(a, Dyn)
    x, c = (a, b) if dyn_first else (b, a)
    if x.rank < 2 or c.ndim < 2:
        raise ctx.fail(f"MatMul of shapes {x.shape} and {list(c.shape)} is not supported")
    rank = max(x.rank, c.ndim)
    if x.rank < rank:
        x = ctx.reshape(x, [1] * (rank - x.rank) + x.shape)
    if c.ndim == rank and x.batched and c.shape[0] != 1:
        x = ctx.unbatch(x)
    while c.ndim > 2 and c.shape[0] == 1:
        c = c.reshape(c.shape[1:])
    args = (x, c) if dyn_first else (c, x)
    return ctx.call(torch.matmul, *args, batched=x.batched)


def _op_matmul(ctx: Ctx, node: onnx.NodeProto) -> None:
    ctx.set(matmul(ctx, ctx.get(0), ctx.get(1)))


def _op_gemm(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, a, b, c = ctx.attrs(), ctx.get(0), ctx.get(1), ctx.get(2)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    shapes = [v.shape if isinstance(v, Dyn) else list(v.shape) for v in (a, b)]
    if any(len(s) != 2 for s in shapes):
        raise ctx.error(f"Gemm needs 2-D operands; found shapes {shapes}")
    if isinstance(a, Dyn) and isinstance(b, np.ndarray) and not attrs.get("transA", 0):
        weight = (b if attrs.get("transB", 0) else b.T) * np.asarray(alpha, b.dtype)
        bias = None
        if c is not None:
            if not isinstance(c, np.ndarray):
                raise ctx.fail("C must be a constant when B is")
            try:
                bias = np.broadcast_to(c * np.asarray(beta, c.dtype), (1, weight.shape[0]))[0]
            except ValueError:
                raise ctx.error(
                    f"C of shape {list(c.shape)} does not broadcast to a bias"
                ) from None
        ctx.set(ctx.call_module(_linear(ctx, weight, bias), a))
        return
    if attrs.get("transA", 0):
        a = a.T if isinstance(a, np.ndarray) else transpose(ctx, a, [1, 0])
    if attrs.get("transB", 0):
        b = b.T if isinstance(b, np.ndarray) else transpose(ctx, b, [1, 0])
    y = matmul(ctx, a, b)
    if alpha != 1.0:
        y = binary(ctx, "Mul", y, np.asarray(alpha, np.float64))
    if c is not None:
        c = c * np.asarray(beta, c.dtype) if isinstance(c, np.ndarray) else c
        y = binary(ctx, "Add", y, c)
    ctx.set(y)


def _pads(ctx: Ctx, attrs: dict[str, Any], nd: int) -> list[int]:
    auto = attrs.get("auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID", ""):
        raise ctx.fail(f"auto_pad={auto} is not supported")
    pads = [0] * 2 * nd if auto == "VALID" else list(attrs.get("pads", [0] * 2 * nd))
    if len(pads) != 2 * nd:
        raise ctx.error(f"expected {2 * nd} pads; found {pads}")
    return pads


def _pad_input(ctx: Ctx, x: Dyn, pads: list[int], value: float, sym_ok: bool) -> tuple[Dyn, Any]:
    """Pad x explicitly unless the ONNX pads are symmetric (and sym_ok); return x, padding."""
    nd = len(pads) // 2
    if pads[:nd] == pads[nd:] and sym_ok:
        return x, tuple(pads[:nd])
    flat = [p for d in reversed(range(nd)) for p in (pads[d], pads[nd + d])]
    return ctx.call(F.pad, x, tuple(flat), value=value, batched=x.batched), 0


_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _op_conv(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, weight, bias = ctx.attrs(), ctx.const(1), ctx.get(2)
    nd, group = weight.ndim - 2, int(attrs.get("group", 1))
    if nd not in _CONV:
        raise ctx.fail(f"{nd}-D convolution is not supported")
    x = _spatial(ctx, ctx.dyn(0), nd, "Conv")
    if x.shape[1] != weight.shape[1] * group:
        raise ctx.error(f"{x.shape[1]} input channels for weights {list(weight.shape)}")
    x, padding = _pad_input(ctx, x, _pads(ctx, attrs, nd), 0.0, True)
    b = None if bias is None else ctx.tensor(ctx.const(2))
    conv = _layer(
        _CONV[nd], ctx.tensor(weight), b, weight.shape[1] * group, weight.shape[0],
        tuple(weight.shape[2:]), stride=tuple(attrs.get("strides", [1] * nd)), padding=padding,
        dilation=tuple(attrs.get("dilations", [1] * nd)), groups=group, dtype=ctx.dtype,
    )  # fmt: skip
    ctx.set(ctx.call_module(conv, x))


def _op_conv_transpose(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, weight, bias = ctx.attrs(), ctx.const(1), ctx.get(2)
    nd, group = weight.ndim - 2, int(attrs.get("group", 1))
    if nd not in (1, 2, 3):
        raise ctx.fail(f"{nd}-D transposed convolution is not supported")
    x = _spatial(ctx, ctx.dyn(0), nd, "ConvTranspose")
    if x.shape[1] != weight.shape[0]:
        raise ctx.error(f"{x.shape[1]} input channels for weights {list(weight.shape)}")
    kernel = list(weight.shape[2:])
    stride = list(attrs.get("strides", [1] * nd))
    dilation = list(attrs.get("dilations", [1] * nd))
    out_pad = list(attrs.get("output_padding", [0] * nd))
    sizes = x.shape[2:]
    full = [s * (i - 1) + o + (k - 1) * d + 1
            for s, i, o, k, d in zip(stride, sizes, out_pad, kernel, dilation, strict=True)]  # fmt: skip
    auto = attrs.get("auto_pad", "NOTSET")
    if "output_shape" in attrs or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = list(attrs.get("output_shape", []))[-nd:] or [
            i * s for i, s in zip(sizes, stride, strict=True)
        ]
        total = [f - t for f, t in zip(full, target, strict=True)]
        if any(t < 0 for t in total):
            raise ctx.fail(f"output_shape {target} is larger than the full output {full}")
        upper = (
            auto == "SAME_UPPER"
        )  # as onnxruntime: NOTSET with output_shape pads like SAME_LOWER
        begin = [t // 2 if upper else t - t // 2 for t in total]
        pads = begin + [t - b for t, b in zip(total, begin, strict=True)]
    else:
        pads = _pads(ctx, attrs, nd)
    # torch: symmetric padding p crops p at the start and p - output_padding at the end
    sym = [min(pads[i], pads[nd + i]) for i in range(nd)]
    if any(o >= max(s, d) for o, s, d in zip(out_pad, stride, dilation, strict=True)):
        raise ctx.fail(f"output_padding {out_pad} must be smaller than the stride or dilation")
    b = None if bias is None else ctx.tensor(ctx.const(2))
    conv = _layer(
        _CONVT[nd], ctx.tensor(weight), b, weight.shape[0], weight.shape[1] * group,
        tuple(kernel), stride=tuple(stride), padding=tuple(sym), output_padding=tuple(out_pad),
        groups=group, dilation=tuple(dilation), dtype=ctx.dtype,
    )  # fmt: skip
    y = ctx.call_module(conv, x)
    extra = [(pads[i] - sym[i], pads[nd + i] - sym[i]) for i in range(nd)]
    if any(a or b for a, b in extra):
        index = (slice(None), slice(None)) + tuple(
            slice(a, y.example.shape[2 + i] - b) for i, (a, b) in enumerate(extra)
        )
        y = ctx.call(operator.getitem, y, index, batched=True)
    ctx.set(y)


def _op_batchnorm(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs = ctx.attrs()
    if attrs.get("training_mode", 0) or not attrs.get("spatial", 1):
        raise ctx.fail("only inference-mode, spatial batch normalisation is supported")
    x = ctx.rebatch(ctx.dyn(0))
    classes = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
    if not x.batched or x.rank not in classes:
        raise ctx.fail(f"batch normalisation of shape {x.shape} is not supported")
    scale, shift, mean, var = (ctx.const(i) for i in range(1, 5))
    if any(v.shape != (x.shape[1],) for v in (scale, shift, mean, var)):
        raise ctx.error(f"statistics must have {x.shape[1]} entries, one per channel")
    norm = classes[x.rank](x.shape[1], eps=float(attrs.get("epsilon", 1e-5)), dtype=ctx.dtype)
    with torch.no_grad():
        for target, value in zip(
            (norm.weight, norm.bias, norm.running_mean, norm.running_var),
            (scale, shift, mean, var),
            strict=True,
        ):
            target.copy_(ctx.tensor(value))
    ctx.set(ctx.call_module(norm, x))


def _op_layernorm(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, x = ctx.attrs(), ctx.dyn(0)
    if len(node.output) > 1 and any(node.output[1:]):
        raise ctx.fail("the mean and inverse deviation outputs are not supported")
    axis = int(attrs.get("axis", -1)) % max(x.rank, 1)
    if x.batched and axis == 0:
        x = ctx.unbatch(x)
    shape = tuple(x.shape[axis:])
    weight = np.broadcast_to(ctx.const(1), shape).copy()
    bias = np.broadcast_to(ctx.const(2), shape).copy() if ctx.get(2) is not None else None
    eps = float(attrs.get("epsilon", 1e-5))
    ctx.set(ctx.call(F.layer_norm, x, shape, weight, bias, eps, batched=x.batched))


def _op_pool(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs = ctx.attrs()
    kernel = tuple(attrs["kernel_shape"])
    nd = len(kernel)
    if nd not in (1, 2, 3):
        raise ctx.fail(f"{nd}-D pooling is not supported")
    x = _spatial(ctx, ctx.dyn(0), nd, node.op_type)
    stride, ceil = tuple(attrs.get("strides", [1] * nd)), bool(attrs.get("ceil_mode", 0))
    dilation, pads = tuple(attrs.get("dilations", [1] * nd)), _pads(ctx, attrs, nd)
    small = all(2 * p <= k for p, k in zip(pads, kernel * 2, strict=True))
    if node.op_type == "MaxPool":
        if len(node.output) > 1 and node.output[1] and ctx.uses[node.output[1]]:
            raise ctx.fail("the indices output is not supported")
        x, padding = _pad_input(ctx, x, pads, -math.inf, small)
        pool_cls = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[nd - 1]
        pool = pool_cls(kernel, stride, padding, dilation, ceil_mode=ceil)
    else:
        include = bool(attrs.get("count_include_pad", 0))
        if any(d != 1 for d in dilation):
            raise ctx.fail("AveragePool with dilations is not supported")
        if not include and (not small or pads[:nd] != pads[nd:]):
            raise ctx.fail("asymmetric or large pads with count_include_pad=0 are not supported")
        x, padding = _pad_input(ctx, x, pads, 0.0, small)
        pool_cls = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[nd - 1]
        pool = pool_cls(kernel, stride, padding, ceil_mode=ceil, count_include_pad=include)
    ctx.set(ctx.call_module(pool, x))


def _op_global_pool(ctx: Ctx, node: onnx.NodeProto) -> None:
    x = ctx.rebatch(ctx.dyn(0))
    nd = x.rank - 2
    if not x.batched or nd not in (1, 2, 3):
        raise ctx.fail(f"global pooling of shape {x.shape} is not supported")
    if node.op_type == "GlobalAveragePool":
        pool_cls = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[nd - 1]
    else:
        pool_cls = (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)[nd - 1]
    ctx.set(ctx.call_module(pool_cls(1), x))


def _op_pad(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, x = ctx.attrs(), ctx.dyn(0)
    if attrs.get("mode", "constant") != "constant":
        raise ctx.fail(f"mode '{attrs['mode']}' is not supported (only 'constant')")
    rank = x.rank
    if ctx.opset < 11:
        pads, value = list(attrs["pads"]), float(attrs.get("value", 0.0))
    else:
        pads, fill = ctx.ints(1) or [], ctx.get(2)
        value = (
            float(ctx.const(2).reshape(-1)[0]) if fill is not None and ctx.const(2).size else 0.0
        )
        axes = ctx.ints(3)
        if axes is not None:
            given, pads = pads, [0] * 2 * rank
            for j, a in enumerate(axes):
                pads[a % rank], pads[rank + a % rank] = given[j], given[len(axes) + j]
    if len(pads) != 2 * rank or any(p < 0 for p in pads):
        raise ctx.fail(f"pads {pads} for a tensor of rank {rank} (negative pads are not supported)")
    if not any(pads):
        ctx.set(x)
        return
    if x.batched and (pads[0] or pads[rank]):
        x = ctx.unbatch(x)
    first = min(d for d in range(rank) if pads[d] or pads[rank + d])
    flat = [p for d in reversed(range(first, rank)) for p in (pads[d], pads[rank + d])]
    ctx.set(ctx.call(F.pad, x, tuple(flat), value=value, batched=x.batched))


def _resize_mode(ctx: Ctx, attrs: dict[str, Any], legacy: bool) -> tuple[str, bool | None]:
    """The nn.Upsample mode and align_corners that match the ONNX attributes exactly."""
    mode = attrs.get("mode", "nearest")
    coord = "asymmetric" if legacy else attrs.get("coordinate_transformation_mode", "half_pixel")
    if mode == "nearest":
        nearest = "floor" if legacy else attrs.get("nearest_mode", "round_prefer_floor")
        if coord == "asymmetric" and nearest == "floor":
            return "nearest", None
        if coord in ("half_pixel", "pytorch_half_pixel") and nearest == "round_prefer_ceil":
            return "nearest-exact", None
        raise ctx.fail(
            f"nearest resize with coordinate_transformation_mode='{coord}' and "
            f"nearest_mode='{nearest}' has no exact torch equivalent"
        )
    if mode in ("linear", "bilinear"):
        if coord == "align_corners":
            return "linear", True
        if coord in ("half_pixel", "pytorch_half_pixel"):
            return "linear", False
        raise ctx.fail(f"linear resize with coordinate_transformation_mode='{coord}'")
    raise ctx.fail(f"mode='{mode}' is not supported (nearest, linear)")


def _op_resize(ctx: Ctx, node: onnx.NodeProto) -> None:
    attrs, legacy = ctx.attrs(), node.op_type == "Upsample" or ctx.opset < 11
    x = ctx.rebatch(ctx.dyn(0))
    if node.op_type == "Upsample":
        scales = list(attrs["scales"]) if ctx.opset < 9 else list(ctx.const(1).reshape(-1))
        sizes = None
    else:
        scales_in = ctx.get(1 if ctx.opset < 11 else 2)
        scales = (
            list(ctx.const(1 if ctx.opset < 11 else 2).reshape(-1)) if scales_in is not None else []
        )
        sizes = ctx.ints(3) if ctx.opset >= 11 and ctx.get(3) is not None else None
    if attrs.get("antialias", 0) or attrs.get("axes") is not None:
        raise ctx.fail("antialias and axes are not supported")
    mode, align = _resize_mode(ctx, attrs, legacy)
    shape = x.shape
    if sizes:
        out = list(sizes)
    elif scales and len(scales) == len(shape):
        out = [int(math.floor(d * float(s))) for d, s in zip(shape, scales, strict=True)]
    else:
        raise ctx.error(f"expected scales or sizes for each of the {len(shape)} axes")
    if (
        len(out) != len(shape)
        or out[:2] != shape[:2]
        or not x.batched
        or len(shape) not in (3, 4, 5)
    ):
        raise ctx.fail(
            f"resizing {shape} to {out}: only the spatial axes of (1, C, ...) may change"
        )
    if mode == "linear":
        mode = {3: "linear", 4: "bilinear", 5: "trilinear"}[len(shape)]
    layer = nn.Upsample(size=tuple(out[2:]), mode=mode, align_corners=align)
    ctx.set(ctx.call_module(layer, x))


HANDLERS: dict[str, Handler] = {
    "AveragePool": _op_pool,
    "BatchNormalization": _op_batchnorm,
    "Conv": _op_conv,
    "ConvTranspose": _op_conv_transpose,
    "Gemm": _op_gemm,
    "GlobalAveragePool": _op_global_pool,
    "GlobalMaxPool": _op_global_pool,
    "LayerNormalization": _op_layernorm,
    "MatMul": _op_matmul,
    "MaxPool": _op_pool,
    "Pad": _op_pad,
    "Resize": _op_resize,
    "Upsample": _op_resize,
}
