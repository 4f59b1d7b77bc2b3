"""Which bound rule (by name, a key of ``graph._CALLS``) each fx call target folds into: torch
functions and operators (``call_function`` nodes), and tensor methods (``call_method``)."""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable

import torch
from torch import nn

F = nn.functional
FUNCTIONS: dict[Callable, str] = {
    operator.add: "add",
    torch.add: "add",
    operator.sub: "sub",
    torch.sub: "sub",
    operator.mul: "mul",
    torch.mul: "mul",
    operator.truediv: "div",
    torch.div: "div",
    torch.true_divide: "div",
    operator.neg: "neg",
    torch.neg: "neg",
    torch.relu: "relu",
    F.relu: "relu",
    F.leaky_relu: "leaky_relu",
    torch.sigmoid: "sigmoid",
    torch.tanh: "tanh",
    torch.flatten: "reshape",
    torch.reshape: "reshape",
    F.pad: "pad",
    operator.getitem: "getitem",
    F.linear: "linear",
    torch.cat: "cat",
    torch.concat: "cat",
    torch.stack: "stack",
    torch.permute: "permute",
    torch.transpose: "transpose",
    torch.swapaxes: "transpose",
    torch.movedim: "movedim",
    torch.flip: "flip",
    torch.index_select: "index_select",
    torch.squeeze: "squeeze",
    torch.unsqueeze: "unsqueeze",
    torch.split: "split",
    torch.chunk: "split",
    torch.unbind: "split",
    builtins.getattr: "mT",
    F.dropout: "dropout",
    operator.matmul: "matmul",
    torch.matmul: "matmul",
    torch.bmm: "matmul",
    torch.sum: "sum",
    torch.mean: "mean",
    torch.amax: "amax",
    torch.amin: "amin",
    torch.max: "max",
    torch.min: "min",
    torch.maximum: "maximum",
    torch.minimum: "minimum",
    torch.clamp: "clamp",
    torch.clip: "clamp",
    F.hardtanh: "hardtanh",
    F.relu6: "relu6",
    torch.softmax: "softmax",
    F.softmax: "softmax",
    torch._safe_softmax: "softmax",  # 0 for rows all -inf, which masks.py refuses
    torch.log_softmax: "log_softmax",
    F.log_softmax: "log_softmax",
    torch.pow: "pow",
    operator.pow: "pow",
    torch.square: "square",
    torch.sqrt: "sqrt",
    torch.rsqrt: "rsqrt",
    torch.reciprocal: "reciprocal",
    torch.exp: "exp",
    torch.log: "log",
    torch.sin: "sin",
    torch.cos: "cos",
    torch.sign: "sign",
    torch.abs: "abs",
    operator.abs: "abs",
    torch.erf: "erf",
    torch.special.erf: "erf",
    F.gelu: "gelu",
    torch.where: "where",
    torch.masked_fill: "masked_fill",
    F.layer_norm: "layer_norm",
    F.scaled_dot_product_attention: "scaled_dot_product_attention",
    F.interpolate: "interpolate",
}
METHODS: dict[str, str] = {
    **{
        name: name
        for name in (
            "add sub mul div neg relu sigmoid tanh reshape permute transpose movedim flip "
            "index_select squeeze unsqueeze split matmul sum mean amax amin max min maximum "
            "minimum clamp softmax log_softmax pow square sqrt rsqrt reciprocal exp log sin cos "
            "sign abs erf"
        ).split()
    },
    "flatten": "reshape",
    "view": "reshape",
    "view_as": "reshape",
    "reshape_as": "reshape",
    "unflatten": "reshape",
    "swapaxes": "transpose",
    "swapdims": "transpose",
    "moveaxis": "movedim",
    "expand": "expand",
    "expand_as": "expand",
    "repeat": "expand",
    "chunk": "split",
    "unbind": "split",
    "clip": "clamp",
    "contiguous": "identity",
    "clone": "identity",
    "detach": "identity",
    "float": "identity",
    "double": "identity",
    "to": "identity",
    "type_as": "identity",
    "__matmul__": "matmul",
    "masked_fill": "masked_fill",
}
