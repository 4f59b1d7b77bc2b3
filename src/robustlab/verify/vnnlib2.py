"""VNN-LIB 2.0 (the property format of VNN-COMP 2026) read with the VNNLIB-Python package
(``vnnlib`` on PyPI, the parser and type checker the competition's scoring uses) into a
:class:`Query`: its networks (declared by name with shaped inputs and outputs; ``equal-to``: the
same ONNX model applied twice; ``isomorphic-to``: another model of the same shape) and its
assertions (the package's AST). :mod:`robustlab.verify.product` turns a query into the
verifier's Spec; a VNN-LIB 1.0 property whose constraints go beyond boxes is read as the same
2.0 query (:func:`from_v1`).

Malformed queries raise a one-line RobustlabError naming the file, the line and the construct;
well-formed ones the verifier cannot handle raise :class:`Unsupported` (verdict ``unknown``).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import vnnlib

from robustlab.errors import RobustlabError
from robustlab.verify.vnnlib import read_text

_V2 = re.compile(r"^\s*\(\s*(vnnlib-version|declare-network)\b", re.MULTILINE)
_REAL = re.compile(r"(\(\s*declare-(?:input|output|hidden)\s+([^\s()]+)\s+)Real\b")
# an input or output declared with its ONNX name (the standard's grammar allows it; vnnlib 1.0.2
# refuses it): the name is taken out before parsing and kept
_IO_NAME = re.compile(
    r'(\(\s*declare-(?:input|output)\s+([^\s()]+)\s+[^\s()]+\s*\[[^\]]*\])\s*"([^"]*)"(\s*\))'
)
_TYPES = {"F16": "float16", "F32": "float32", "F64": "float64", "Real": "real", "Unknown": "real"}


class Unsupported(Exception):
    """A well-formed query with a construct the verifier cannot relax (verdict unknown)."""


def is_vnnlib2(text: str) -> bool:
    """Whether a property's text is VNN-LIB 2.0 (it declares a version or a network)."""
    return _V2.search(re.sub(r";[^\n]*", "", text)) is not None


@dataclass(frozen=True)
class Variable:
    """One declared input, hidden node or output of a network."""

    name: str
    network: str
    kind: str  # input | hidden | output
    shape: tuple[int, ...]
    dtype: str  # real, float32, ...
    onnx_name: str = ""  # the ONNX tensor it names, when declared (always for hidden nodes)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Network:
    """A declared network; ``equal_to`` / ``isomorphic_to`` name another one (or are empty)."""

    name: str
    equal_to: str
    isomorphic_to: str
    inputs: tuple[Variable, ...]
    hidden: tuple[Variable, ...]
    outputs: tuple[Variable, ...]


@dataclass(frozen=True)
class Query:
    """A parsed VNN-LIB 2.0 query: its networks and assertions (the package's AST)."""

    name: str
    networks: tuple[Network, ...]
    assertions: tuple

    @property
    def inputs(self) -> tuple[Variable, ...]:
        return tuple(v for n in self.networks for v in n.inputs)

    @property
    def outputs(self) -> tuple[Variable, ...]:
        return tuple(v for n in self.networks for v in n.outputs)

    @property
    def results(self) -> tuple[Variable, ...]:
        """Each network's outputs then its hidden nodes, network after network: the outputs of
        the product network, in order."""
        return tuple(v for n in self.networks for v in n.outputs + n.hidden)


def _package_error(name: str, e: Exception, source: str = "") -> RobustlabError:
    """The package's exception (a parse error line or a JSON list of type errors) in one line,
    naming the construct found on a syntax error's line."""
    text = str(e).strip()
    try:
        first = json.loads(text)["errors"][0]
        where = f"{name}:{first.get('line', '?')}"
        msg = f"{first.get('message', 'invalid query')}"
        if first.get("offendingSymbol"):
            msg += f" {first['offendingSymbol']}"
        if first.get("hint"):
            msg += f" ({first['hint']})"
        return RobustlabError(f"{where}: {msg}")
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    m = re.search(r"line (\d+), column \d+: (.*)", text)
    if m:
        lines = source.splitlines()
        n = int(m.group(1))
        found = lines[n - 1].strip() if 0 < n <= len(lines) else m.group(2).strip()
        found = found[:60] + ("..." if len(found) > 60 else "")
        return RobustlabError(
            f"{name}:{n}: expected VNN-LIB 2.0 (declare-network, assert); found {found!r}"
        )
    return RobustlabError(f"{name}: {text.splitlines()[0] if text else 'invalid VNN-LIB 2.0'}")


_ELEMENT_FUN = re.compile(r"\(\s*declare-fun\s+([A-Za-z_][\w.]*)\[(\d+)\]\s*\(\s*\)\s*Real\s*\)")


def _repair_element_funs(text: str, name: str) -> str:
    """Some published conversions (the VNNLIB Benchmarks collection's ACC files) declare a
    network's input and output with shape ``[0]`` and then each element SMT-style,
    ``(declare-fun X[0] () Real)``: not valid VNN-LIB 2.0, but unambiguous. Each such variable
    gets the shape its elements imply and the element declarations go (lines kept, so errors
    still point at the right line); a warning says so. Anything else is left to the parser."""
    sizes: dict[str, int] = {}
    for m in _ELEMENT_FUN.finditer(text):
        sizes[m.group(1)] = max(sizes.get(m.group(1), 0), int(m.group(2)) + 1)
    if not sizes:
        return text
    fixed = []
    for var, size in sizes.items():
        decl = re.compile(
            r"(\(\s*declare-(?:input|output)\s+" + re.escape(var) + r"\s+\w+\s*)\[\s*0\s*\]"
        )
        if decl.search(text):
            text = decl.sub(rf"\g<1>[{size}]", text)
            fixed.append(f"{var}[{size}]")
    if not fixed:
        return text
    text = _ELEMENT_FUN.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    warnings.warn(
        f"{name}: not valid VNN-LIB 2.0 (shape [0] with one declare-fun per element); "
        f"read as {', '.join(fixed)}",
        stacklevel=3,
    )
    return text


def parse(text: str, name: str) -> Query:
    """A query from its text. vnnlib 1.0.2's type checker refuses a constant beside a ``Real``
    variable inside arithmetic (``(* -1.0 X[0])``, as in the standard's own examples): such a
    query is checked again with ``Real`` declared as ``float64`` (the same arithmetic) and its
    variables keep the type ``real``. ONNX names declared on inputs and outputs (which vnnlib
    1.0.2 does not parse) are taken out of the text first and kept."""
    bare = re.sub(r";[^\n]*", "", text)  # comments out, lines kept
    onnx_names = {m.group(2): m.group(3) for m in _IO_NAME.finditer(bare)}
    text = _repair_element_funs(_IO_NAME.sub(r"\1\4", bare), name)
    declared = set(re.findall(r"\(\s*declare-network\s+([^\s()]+)", bare))
    for m in re.finditer(r"\(\s*(equal-to|isomorphic-to)\s+([^\s()]+)\s*\)", bare):
        if m.group(2) not in declared:
            line = bare.count("\n", 0, m.start()) + 1
            raise RobustlabError(
                f"{name}:{line}: {m.group(1)} names network {m.group(2)!r}, which is not declared"
            )
    reals: set[str] = set()
    try:
        q = vnnlib.parse_query_string(text)
    except vnnlib.VNNLibException as e:
        if "TypeMismatch" not in str(e) or not _REAL.search(text):
            raise _package_error(name, e, text) from None
        reals = {m.group(2) for m in _REAL.finditer(text)}
        try:
            q = vnnlib.parse_query_string(_REAL.sub(r"\1float64", text))
        except vnnlib.VNNLibException as e2:
            raise _package_error(name, e2, text) from None

    def var(d, kind: str, net: str) -> Variable:
        dtype = "real" if d.name in reals else _TYPES.get(d.dtype.name, d.dtype.name.lower())
        onnx = (d.onnx_name or "").strip('"') if kind == "hidden" else onnx_names.get(d.name, "")
        return Variable(d.name, net, kind, tuple(int(s) for s in d.shape), dtype, onnx)

    nets = tuple(
        Network(
            n.name,
            n.equal_to,
            getattr(n, "isometric_to", "") or getattr(n, "isomorphic_to", ""),
            tuple(var(d, "input", n.name) for d in n.inputs),
            tuple(var(d, "hidden", n.name) for d in n.hidden),
            tuple(var(d, "output", n.name) for d in n.outputs),
        )
        for n in q.networks
    )
    return Query(name, nets, tuple(q.assertions))


_V1_DECL = re.compile(
    r"\(\s*declare-(?:const\s+([XY])_(\d+)|fun\s+([XY])_(\d+)\s*\(\s*\))\s+Real\s*\)"
)


def from_v1(text: str, name: str) -> Query:
    """A VNN-LIB 1.0 property (``X_i`` / ``Y_j`` of one network) as the equivalent 2.0 query,
    for the constraints that the 1.0 reader leaves to this one (input constraints over several
    inputs, or over inputs and outputs together)."""
    sizes = {"X": 0, "Y": 0}
    for m in _V1_DECL.finditer(text):
        var, i = m.group(1) or m.group(3), int(m.group(2) or m.group(4))
        sizes[var] = max(sizes[var], i + 1)
    body = _V1_DECL.sub("", text)
    body = re.sub(r"\b([XY])_(\d+)\b", r"\1[\2]", body)
    head = (
        "(vnnlib-version <2.0>) (declare-network network (declare-input X Real "
        f"[{sizes['X']}]) (declare-output Y Real [{sizes['Y']}]))"
    )
    return parse(head + body, name)  # the same line numbers: the header is one line


def read_query(path: str | Path) -> Query:
    """A VNN-LIB 2.0 file (plain or gzipped) as a Query."""
    text, name = read_text(path, "VNN-LIB")
    return parse(text, name)
