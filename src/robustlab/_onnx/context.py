"""The state of one ONNX -> torch.fx conversion: values, the graph under construction, folding.

Every ONNX value is either a constant (a numpy array, folded at import) or a ``Dyn``: a tensor
computed from the model input, held as an fx node plus an example in the torch frame. The torch
module runs the ONNX graph once per sample, with the ONNX batch size 1 (or the declared size):
a ``Dyn`` is *batched* when its ONNX axis 0 (of size 1) is the torch sample axis, otherwise the
sample axis is an extra leading torch axis. So ``[1, 5]`` and ``[5]`` are both ``(B, 5)`` in torch,
and a reshape from one to the other costs no node."""

from __future__ import annotations

import keyword
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from torch import fx, nn

from robustlab._onnx.cases import Case, CaseProgram, CaseValue
from robustlab.errors import RobustlabError, UnsupportedOperation

EXAMPLE_BATCH = 2  # samples in the examples that conversion runs (a batch mix-up shows)
MAX_FOLDED = 10**8  # elements in a folded constant: larger ones are refused, not allocated


@dataclass
class Dyn:
    """A value that depends on the input: its fx node and an example batch in the torch frame."""

    node: fx.Node
    example: torch.Tensor
    batched: bool  # True: ONNX axis 0 (size 1) is the torch sample axis
    module: nn.Module | None = None

    @property
    def shape(self) -> list[int]:
        """The ONNX shape of one sample's value."""
        rest = list(self.example.shape[1:])
        return [1, *rest] if self.batched else rest

    @property
    def rank(self) -> int:
        return len(self.shape)


Value = np.ndarray | Dyn


def attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded, tensors as numpy arrays)."""
    out: dict[str, Any] = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        out[attr.name] = value
    return out


def ident(text: str, fallback: str) -> str:
    """Sanitise an ONNX name into a Python identifier."""
    name = re.sub(r"\W", "_", text).strip("_") or fallback
    if name[0].isdigit() or keyword.iskeyword(name):
        name = f"{fallback}_{name}"
    return name[:80]


class Ctx:
    """Conversion state: the fx graph under construction, its root module, ONNX values."""

    def __init__(self, opset: int, dtype: torch.dtype, uses: Counter[str]) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.values: dict[str, Value] = {}
        self.opset, self.dtype, self.uses = opset, dtype, uses
        self._consts: dict[int, tuple[Any, fx.Node]] = {}
        self.node = onnx.NodeProto()
        self.label = self.name = ""
        self.program = CaseProgram(opset)  # nodes computed from case variables (cases.py)
        self.case_sources: list[Dyn] = []  # the float source of each case variable
        self._lifted: dict[str, Dyn] = {}
        self.lift = False  # the current node computes on data: case values become Dyn

    # ------------------------------------------------------------------ the current node

    def begin(self, node: onnx.NodeProto, label: str) -> None:
        self.node, self.label, self.name = node, label, ident(label, node.op_type.lower())
        self.lift = False

    def fail(self, why: str) -> UnsupportedOperation:
        return UnsupportedOperation(
            f"ONNX operation '{self.node.op_type}' at node '{self.label}': {why}"
        )

    def error(self, why: str) -> RobustlabError:
        return RobustlabError(f"ONNX node '{self.label}' ({self.node.op_type}): {why}")

    def attrs(self) -> dict[str, Any]:
        return attributes(self.node)

    def get(self, i: int) -> Value | None:
        node = self.node
        if i >= len(node.input) or not node.input[i]:
            return None
        if node.input[i] not in self.values:
            raise self.error(f"input '{node.input[i]}' is undefined")
        value = self.values[node.input[i]]
        return self.lifted(value) if self.lift and isinstance(value, Case) else value

    def inputs(self) -> list[Value | None]:
        return [self.get(i) for i in range(len(self.node.input))]

    def const(self, i: int) -> np.ndarray:
        value = self.get(i)
        if value is None:
            raise self.error(f"input {i} is missing")
        if not isinstance(value, np.ndarray):
            what = "selects data by input values" if self._is_case(i) else "is computed from"
            raise self.fail(f"input {i} {what} the model input; it must be a constant")
        return value

    def _is_case(self, i: int) -> bool:
        name = self.node.input[i]
        return name in self._lifted or isinstance(self.values.get(name), Case)

    def ints(self, i: int) -> list[int] | None:
        """A constant integer input as a list (None when absent)."""
        if self.get(i) is None:
            return None
        value = self.const(i)
        if value.dtype.kind not in "iub":
            raise self.error(f"input {i} must hold integers; found {value.dtype}")
        return [int(v) for v in value.reshape(-1)]

    def dyn(self, i: int = 0) -> Dyn:
        value = self.get(i)
        if not isinstance(value, Dyn):
            raise self.fail(f"input {i} must be computed from the model input")
        return value

    def set(self, value: Value, i: int = 0) -> None:
        if i < len(self.node.output) and self.node.output[i]:
            self.values[self.node.output[i]] = value

    # ------------------------------------------------------------------ emitting fx nodes

    def tensor(self, value: np.ndarray) -> torch.Tensor:
        """A constant as torch: floating point in the module's dtype, integers as int64, bools.
        Shares memory with ``value`` where it can (constants are never written in place)."""
        if value.dtype.kind not in "fbiu":
            raise self.error(f"constants of type {value.dtype} are not supported")
        if not value.flags.writeable or value.dtype.byteorder == ">":
            value = np.array(value, copy=True)
        t = torch.from_numpy(value)
        if value.dtype.kind == "f":
            return t.to(self.dtype)
        return t if value.dtype.kind == "b" else t.to(torch.int64)

    def _unique(self, base: str) -> str:
        name, k = base, 1
        while hasattr(self.root, name):
            name, k = f"{base}_{k}", k + 1
        return name

    def _fx(self, arg: Any) -> Any:
        if isinstance(arg, Dyn):
            return arg.node
        if isinstance(arg, (np.ndarray, torch.Tensor)):
            if id(arg) not in self._consts:
                t = self.tensor(arg) if isinstance(arg, np.ndarray) else arg.detach().clone()
                name = self._unique(ident(f"{self.name}_const", "const"))
                self.root.register_buffer(name, t)
                self._consts[id(arg)] = (arg, self.graph.get_attr(name))
            return self._consts[id(arg)][1]
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._fx(a) for a in arg)
        return arg

    def _example(self, arg: Any) -> Any:
        if isinstance(arg, Dyn):
            return arg.example
        if isinstance(arg, np.ndarray):
            return self.tensor(arg)
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._example(a) for a in arg)
        return arg

    def _run(self, fn: Callable[..., torch.Tensor], args: tuple, kwargs: dict) -> torch.Tensor:
        try:
            with torch.no_grad():
                return fn(*self._example(args), **self._example(kwargs))
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise self.error(first) from None

    def call_module(self, module: nn.Module, x: Dyn, *, batched: bool | None = None) -> Dyn:
        """Add a submodule and a call_module node on ``x``; run it on the example."""
        module.eval()
        target = self._unique(self.name)
        self.root.add_module(target, module)
        example = self._run(module, (x,), {})
        node = self.graph.create_node("call_module", target, (x.node,), {}, name=target)
        return Dyn(node, example, x.batched if batched is None else batched, module)

    def call(self, fn: Callable, *args: Any, batched: bool, **kwargs: Any) -> Dyn:
        """Add a call_function node; run it on the examples."""
        example = self._run(fn, args, kwargs)
        node = self.graph.create_node(
            "call_function", fn, self._fx(args), self._fx(kwargs), name=self.name
        )
        return Dyn(node, example, batched)

    def method(self, name: str, x: Dyn, *args: Any, batched: bool | None = None) -> Dyn:
        """Add a call_method node ``x.name(*args)``."""
        example = self._run(lambda t, *a: getattr(t, name)(*a), (x, *args), {})
        node = self.graph.create_node("call_method", name, self._fx((x, *args)), {}, name=self.name)
        return Dyn(node, example, x.batched if batched is None else batched)

    # ------------------------------------------------------------------ frames

    def reshape(self, x: Dyn, shape: list[int]) -> Dyn:
        """``x`` reshaped to the ONNX per-sample ``shape``: batched when its first entry is 1."""
        shape = [int(d) for d in shape]
        if math.prod(shape) != math.prod(x.shape):
            raise self.error(f"cannot reshape {x.shape} to {shape}")
        batched = len(shape) > 1 and shape[0] == 1  # a sample keeps at least one axis
        torch_shape = tuple(shape[1:] if batched else shape)
        if tuple(x.example.shape[1:]) == torch_shape:
            return Dyn(x.node, x.example, batched, x.module)
        if len(torch_shape) == 1 and x.example.ndim > 2:
            return Dyn(*_flatten(self, x), batched)
        return self.call(torch.reshape, x, (-1, *torch_shape), batched=batched)

    def unbatch(self, x: Dyn) -> Dyn:
        """``x`` with its ONNX axis 0 as a torch axis of its own (torch ``(B, 1, ...)``)."""
        if not x.batched:
            return x
        return self.call(torch.reshape, x, (-1, *x.shape), batched=False)

    def rebatch(self, x: Dyn) -> Dyn:
        """``x`` batched when its ONNX axis 0 has size 1 (one reshape at most)."""
        if x.batched or x.rank < 2 or x.shape[0] != 1:
            return x
        return self.reshape(x, x.shape)

    def axis(self, x: Dyn, axis: int) -> tuple[Dyn, int]:
        """The torch dimension of ONNX ``axis`` of ``x`` (unbatching ``x`` for axis 0)."""
        rank = x.rank
        if not -rank <= axis < max(rank, 1):
            raise self.error(f"axis {axis} is out of range for a tensor of rank {rank}")
        axis %= max(rank, 1)
        if x.batched and axis == 0:
            x = self.unbatch(x)
        return x, axis + (0 if x.batched else 1)

    def torch_const(self, x: Dyn, c: np.ndarray) -> tuple[Dyn, np.ndarray]:
        """``x`` and constant ``c`` arranged so that torch broadcasting equals ONNX's: ``c``
        loses leading unit axes; ``x`` is unbatched where ``c`` varies along ONNX axis 0."""
        rank = max(x.rank, c.ndim)
        if c.ndim > x.rank:
            x = self.reshape(x, [1] * (c.ndim - x.rank) + x.shape)
        if x.batched and c.ndim == rank and c.shape[0] != 1:
            x = self.unbatch(x)
        lead = 0
        while lead < c.ndim and c.shape[lead] == 1 and c.ndim - lead > 0:
            lead += 1
        return x, c.reshape(c.shape[lead:])

    def align(self, *xs: Dyn) -> list[Dyn]:
        """Input-dependent operands in one frame: same ONNX rank, all batched or all not."""
        rank = max(x.rank for x in xs)
        out = [
            x if x.rank == rank else self.reshape(x, [1] * (rank - x.rank) + x.shape) for x in xs
        ]
        if all(x.batched for x in out):
            return out
        out = [self.rebatch(x) for x in out]
        if all(x.batched for x in out):
            return out
        return [self.unbatch(x) for x in out]

    # ------------------------------------------------------------------ case variables

    def case_variable(self, source: Dyn, dtype: np.dtype) -> None:
        """The current node (a Cast to an integer type) starts a case variable."""
        out = self.node.output[0]
        shape = tuple(source.shape)
        rep = np.asarray(np.trunc(source.example[0].double().numpy())).astype(dtype)
        self.program.variables.append((out, np.dtype(dtype), shape))
        self.case_sources.append(source)
        self.set(Case(out, np.asarray(rep).reshape(shape)))

    def case_node(self, node: onnx.NodeProto, values: list) -> None:
        """A node computed from case values and constants: folded for the representative case
        and recorded in the case program."""
        for name, v in zip(node.input, values, strict=True):
            if isinstance(v, np.ndarray):
                self.program.constants[name] = v
        self.fold(node, [v.value if isinstance(v, Case) else v for v in values])
        for name in node.output:
            if name:
                self.values[name] = Case(name, np.asarray(self.values[name]))
        self.program.nodes.append(node)

    def lifted(self, case: Case) -> Dyn:
        """A case value as input-dependent data: a ``CaseValue`` node on the case variables'
        sources (cached per value)."""
        if case.name not in self._lifted:
            value = case.value
            shape = list(value.shape)
            batched = len(shape) > 1 and shape[0] == 1
            torch_shape = tuple(shape[1:] if batched else shape)
            kind = value.dtype.kind
            dtype = self.dtype if kind == "f" else torch.bool if kind == "b" else torch.int64
            self.program.outputs.append(case.name)
            self.program.dtypes[case.name] = value.dtype
            fn = CaseValue(self.program, case.name, torch_shape, dtype)
            name = self.name
            self.name = ident(f"case_{case.name}", "case")
            try:
                self._lifted[case.name] = self.call(fn, *self.case_sources, batched=batched)
            finally:
                self.name = name
        return self._lifted[case.name]

    # ------------------------------------------------------------------ folding

    def fold(self, node: onnx.NodeProto, consts: list[np.ndarray | None]) -> None:
        """Evaluate a node whose inputs are all constants (onnx's reference implementation)."""
        _check_fold_size(self, node, consts)
        feeds = {n: v for n, v in zip(node.input, consts, strict=True) if n}
        outs = [o for o in node.output if o]
        graph = helper.make_graph(
            [node], "fold",
            [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in feeds],
            [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in outs],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        try:
            outputs = dict(zip(outs, ReferenceEvaluator(model).run(None, feeds), strict=True))
        except Exception as exc:  # the reference implementation raises many types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise self.error(f"cannot evaluate on constant inputs ({first[:200]})") from None
        for i, name in enumerate(node.output):
            if name:
                value = np.asarray(outputs[name])
                if value.size > MAX_FOLDED:
                    raise self.error(f"a folded constant of {value.size} elements is too large")
                self.set(value, i)


def _flatten(ctx: Ctx, x: Dyn) -> tuple[fx.Node, torch.Tensor]:
    y = ctx.call_module(nn.Flatten(), x)
    return y.node, y.example


def _check_fold_size(ctx: Ctx, node: onnx.NodeProto, consts: list[np.ndarray | None]) -> None:
    """Refuse folds whose output would be huge before allocating it."""

    def prod(c: np.ndarray | None) -> float:
        return math.prod(max(abs(float(v)), 1.0) for v in c.reshape(-1)) if c is not None else 1.0

    def size(c: np.ndarray | None) -> float:
        return float(c.size) if c is not None else 1.0

    op, c = node.op_type, consts + [None] * 4
    guess = 0.0
    if op == "ConstantOfShape":
        guess = prod(c[0])
    elif op in ("Expand", "Tile"):
        guess = size(c[0]) * prod(c[1])
    elif op == "Range" and all(v is not None and v.size == 1 for v in c[:3]):
        start, limit, delta = (float(v.reshape(-1)[0]) for v in c[:3])
        guess = abs((limit - start) / delta) if delta else math.inf
    elif op == "Resize" and c[3] is not None and c[3].size:
        guess = prod(c[3])
    elif op in ("Resize", "Upsample"):
        scales = c[2] if op == "Resize" else c[1]
        guess = size(c[0]) * (prod(scales) if scales is not None else 1.0)
    if not guess <= MAX_FOLDED:
        raise ctx.error(f"a folded constant of about {guess:.3g} elements is too large")
