"""Load a model from an ONNX file, a TorchScript file, a state dict of a zoo architecture, or a
torch module, as an eval-mode ``torch.nn.Module`` plus its input shape.

ONNX files go through robustlab's own converter (``robustlab._onnx``) and every conversion is
checked against onnxruntime on random inputs. Pickles are never unpickled with code execution.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustlab import zoo
from robustlab.errors import RobustlabError

ONNX_TOLERANCE = 1e-4  # relative to the output scale: max |torch - onnxruntime| / (1 + max |out|)


@dataclass(frozen=True)
class LoadedModel:
    """An eval-mode module with what robustlab knows about it."""

    module: nn.Module
    input_shape: tuple[int, ...] | None  # per sample, without the batch dimension
    name: str
    digest: str  # sha256 of the file, or of the parameters for an in-memory module
    kind: str  # "onnx" | "torchscript" | "state_dict" | "zoo" | "module"
    onnx_max_abs_error: float | None = None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "digest": self.digest,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "onnx_max_abs_error": self.onnx_max_abs_error,
        }


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


def _load_onnx(path: Path, data: bytes) -> LoadedModel:
    import onnx

    from robustlab._onnx import check_against_onnxruntime, onnx_to_torch

    try:
        proto = onnx.load_model_from_string(data)
        onnx.checker.check_model(proto)
    except Exception as e:  # onnx raises several types for corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RobustlabError(f"{path}: not a valid ONNX model ({first})") from None
    module, input_shape = onnx_to_torch(proto)
    err = check_against_onnxruntime(proto, module, input_shape)
    with torch.no_grad():
        scale = module(torch.rand(4, *input_shape)).abs().max().item()
    if not err <= ONNX_TOLERANCE * (1 + scale):
        raise RobustlabError(
            f"{path}: converted model disagrees with onnxruntime (max abs error {err:.3g})"
        )
    return LoadedModel(
        module.eval(),
        tuple(input_shape),
        path.name,
        hashlib.sha256(data).hexdigest(),
        "onnx",
        float(err),
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
    source: str | Path | nn.Module,
    *,
    arch: str | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> LoadedModel:
    """Load ``source``: an ``nn.Module``, ``zoo:mlp`` / ``zoo:cnn``, an ``.onnx`` file, or a ``.pt``
    file (TorchScript, or with ``arch`` a state dict loaded with ``weights_only=True``)."""
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
    data = path.read_bytes()
    if path.suffix.lower() == ".onnx":
        return _load_onnx(path, data)
    if path.suffix.lower() in (".pt", ".pth", ".ts"):
        return _load_pt(path, data, arch, input_shape)
    raise RobustlabError(
        f"{path}: unknown model format '{path.suffix}' (expected .onnx, .pt, or zoo:mlp / zoo:cnn)"
    )
