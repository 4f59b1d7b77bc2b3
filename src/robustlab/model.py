"""Load a model from an ONNX file, a TorchScript file, a state dict of a zoo architecture, or a
torch module, as an eval-mode ``torch.nn.Module`` plus its input shape.

ONNX files (gzipped or not: detected by their first bytes) go through robustlab's own converter
(``robustlab._onnx``) and every conversion is checked against onnxruntime on random inputs.
Pickles are never unpickled with code execution. A normalisation ``(x - mean) / std`` can be
prepended as a layer, so that inputs, eps, bounds and corruptions stay in pixel space.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from robustlab import zoo
from robustlab.errors import RobustlabError
from robustlab.lazy import lazy_module

onnx = lazy_module("onnx")  # about 0.7 s to import: executed only when an ONNX model is loaded
_onnx = lazy_module("robustlab._onnx")

ONNX_TOLERANCE = 1e-4  # relative to the output scale: max |torch - onnxruntime| / (1 + max |out|)
MAX_MODEL_BYTES = 4 << 30  # a gzipped model may not expand beyond this
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class LoadedModel:
    """An eval-mode module with what robustlab knows about it."""

    module: nn.Module
    input_shape: tuple[int, ...] | None  # per sample, without the batch dimension
    name: str
    digest: str  # sha256 of the file, or of the parameters for an in-memory module
    kind: str  # "onnx" | "torchscript" | "state_dict" | "zoo" | "module"
    onnx_max_abs_error: float | None = None
    onnx_max_rel_error: float | None = None  # relative to the output scale
    preprocessing: dict | None = None  # {"mean": [...], "std": [...]} when prepended
    onnx_bytes: bytes | None = field(default=None, repr=False)  # what onnxruntime runs (gunzipped)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "digest": self.digest,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "onnx_max_abs_error": self.onnx_max_abs_error,
            "onnx_max_rel_error": self.onnx_max_rel_error,
            "preprocessing": self.preprocessing,
        }


@dataclass(frozen=True)
class ModelSource:
    """A model to load with its preprocessing: what ``--model M --mean ... --std ...`` names."""

    source: str | Path | nn.Module
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __str__(self) -> str:
        return str(self.source)


def parse_floats(text: str | None, name: str) -> tuple[float, ...] | None:
    """``"0.49,0.48,0.45"`` -> a tuple of floats (None stays None)."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise RobustlabError(
            f"{name} expects numbers separated by commas; found {text!r}"
        ) from None
    if not values:
        raise RobustlabError(f"{name} expects at least one number; found {text!r}")
    return values


class Normalized(nn.Module):
    """``model((x - mean) / std)``: the preprocessing a network expects, as its first layer."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def _values(name: str, values: float | Sequence[float]) -> list[float]:
    items = [values] if isinstance(values, (int, float)) else list(values)
    try:
        out = [float(v) for v in items]
    except (TypeError, ValueError):
        raise RobustlabError(f"{name} must be numbers; found {values!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise RobustlabError(f"{name} must be finite numbers; found {values!r}")
    return out


def normalized(
    module: nn.Module,
    input_shape: tuple[int, ...] | None,
    mean: float | Sequence[float] | None,
    std: float | Sequence[float] | None,
) -> tuple[nn.Module, dict | None]:
    """``module`` behind ``(x - mean) / std`` per channel: dim 0 of the per-sample shape for images
    (rank >= 2), the last dim for flat vectors; one value for all. Constants in the model's dtype
    (the forward pass runs as before; bound engines use exactly these values)."""
    if mean is None and std is None:
        return module, None
    m = _values("mean", 0.0 if mean is None else mean)
    s = _values("std", 1.0 if std is None else std)
    if any(v <= 0 for v in s):
        raise RobustlabError(f"std must be positive; found {s}")
    channels = (
        None if not input_shape else input_shape[0] if len(input_shape) >= 2 else input_shape[-1]
    )
    for name, v in (("mean", m), ("std", s)):
        if len(v) != 1 and len(v) != channels:
            where = (
                "the model's input shape is unknown"
                if channels is None
                else (f"the input has {channels} channels (shape {tuple(input_shape)})")
            )
            raise RobustlabError(f"{name} has {len(v)} values; expected 1 or {channels} ({where})")
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    rank = len(input_shape) if input_shape else 1
    view = (-1,) + (1,) * (rank - 1) if rank >= 2 else (-1,)
    tm = torch.tensor(m, dtype=dtype).reshape(view if len(m) > 1 else ())
    ts = torch.tensor(s, dtype=dtype).reshape(view if len(s) > 1 else ())
    return Normalized(module, tm, ts).eval(), {"mean": m, "std": s}


def read_model_bytes(path: str | Path) -> bytes:
    """A model file's bytes, gunzipped when they start with gzip's magic bytes (whatever the
    file's name)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RobustlabError(f"cannot read model file {path} ({e.strerror or e})") from None
    return _gunzip(path, data)


def _gunzip(path: Path, data: bytes) -> bytes:
    if not data.startswith(GZIP_MAGIC):
        return data
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, MAX_MODEL_BYTES + 1)
    except zlib.error as e:
        raise RobustlabError(f"{path}: corrupt gzip data ({e})") from None
    if len(out) > MAX_MODEL_BYTES:
        raise RobustlabError(f"{path}: gzipped model expands beyond {MAX_MODEL_BYTES} bytes")
    if not d.eof:
        raise RobustlabError(f"{path}: truncated gzip data")
    return out


def module_digest(module: nn.Module) -> str:
    """sha256 over a module's parameter and buffer names and values."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _guess_input_shape(module: nn.Module) -> tuple[int, ...] | None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return (m.in_features,)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Flatten)):
            return None
    return None


def _checkable(proto):
    """A copy for onnx's checker when graph inputs / outputs declare a tensor type without a
    shape (valid for onnxruntime, refused by the checker); None when none does."""
    values = [*proto.graph.input, *proto.graph.output]
    if all(v.type.tensor_type.HasField("shape") for v in values if v.type.HasField("tensor_type")):
        return None
    copy = type(proto)()
    copy.CopyFrom(proto)
    for v in [*copy.graph.input, *copy.graph.output]:
        if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape"):
            v.type.tensor_type.shape.SetInParent()
    return copy


def _load_onnx(path: Path, data: bytes, digest: str) -> LoadedModel:
    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(_checkable(proto) or data)  # bytes: no second serialization
    except Exception as e:  # onnx raises several types for corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RobustlabError(f"{path}: not a valid ONNX model ({first[:300]})") from None
    module, input_shape = _onnx.onnx_to_torch(proto)
    runtime = _onnx.check.widen_initializers(proto)
    if runtime is not proto:
        data = runtime.SerializeToString()
    check = _onnx.check_against_onnxruntime(runtime, module, input_shape, data=data)
    if not check.agrees(ONNX_TOLERANCE):
        raise RobustlabError(
            f"{path}: converted model disagrees with onnxruntime (max abs error "
            f"{check.max_abs:.3g}, output scale {check.scale:.3g})"
        )
    return LoadedModel(
        module.eval(),
        tuple(input_shape),
        path.name,
        digest,
        "onnx",
        float(check.max_abs),
        float(check.relative()),
        onnx_bytes=data,
    )


def _load_pt(path: Path, data: bytes, arch: str | None, input_shape) -> LoadedModel:
    digest = hashlib.sha256(data).hexdigest()
    if not zipfile.is_zipfile(path):
        raise RobustlabError(f"{path}: not a TorchScript archive or torch state dict")
    if arch is None:
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception:
            raise RobustlabError(
                f"{path}: not a TorchScript file; for a state dict, name its zoo architecture "
                f"(arch=..., one of {', '.join(zoo.ARCHITECTURES)})"
            ) from None
        return LoadedModel(module.eval(), input_shape, path.name, digest, "torchscript")
    module = zoo.build(arch)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as e:
        first = str(e).strip().splitlines()[0]
        raise RobustlabError(f"{path}: cannot load as a '{arch}' state dict ({first})") from None
    return LoadedModel(
        module.eval(), input_shape or zoo.INPUT_SHAPE, path.name, digest, "state_dict"
    )


def load_model(
    source: str | Path | nn.Module | ModelSource,
    *,
    arch: str | None = None,
    input_shape: tuple[int, ...] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> LoadedModel:
    """Load ``source``: an ``nn.Module``, ``zoo:mlp`` / ``zoo:cnn``, an ONNX file (``.onnx`` or
    gzipped), or a ``.pt`` file (TorchScript, or with ``arch`` a state dict loaded with
    ``weights_only=True``). With ``mean`` / ``std`` the model gets ``(x - mean) / std`` (per
    channel) as its first layer; a ``ModelSource`` carries its own ``mean`` / ``std``."""
    if isinstance(source, ModelSource):
        mean = source.mean if mean is None else mean
        std = source.std if std is None else std
        source = source.source
    loaded = _load(source, arch, input_shape)
    if mean is None and std is None:
        return loaded
    module, pre = normalized(loaded.module, loaded.input_shape, mean, std)
    return replace(loaded, module=module, preprocessing=pre)


def _load(source: str | Path | nn.Module, arch: str | None, input_shape) -> LoadedModel:
    if isinstance(source, nn.Module):
        shape = input_shape or _guess_input_shape(source)
        return LoadedModel(
            source.eval(), shape, type(source).__name__, module_digest(source), "module"
        )
    text = str(source)
    if text.startswith("zoo:"):
        module = zoo.pretrained(text[4:])
        return LoadedModel(module, zoo.INPUT_SHAPE, text, module_digest(module), "zoo")
    path = Path(text)
    if not path.is_file():
        raise RobustlabError(f"model file not found: {path}")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    suffixes = [x.lower() for x in path.suffixes]
    if raw.startswith(GZIP_MAGIC) or ".onnx" in suffixes:
        return _load_onnx(path, _gunzip(path, raw), digest)
    if path.suffix.lower() in (".pt", ".pth", ".ts"):
        return _load_pt(path, raw, arch, input_shape)
    raise RobustlabError(
        f"{path}: unknown model format '{path.suffix}' (expected .onnx, .onnx.gz, .pt, or "
        "zoo:mlp / zoo:cnn)"
    )
