"""What every API function accepts: a model as ``load_model`` returns it, an ``nn.Module`` or a
path; data matched to the model's input shape; a threat model on the data's value range.

One place for these rules, so that ``rl.run_attack(rl.load_model(p), ...)``, the same call with
``model.module`` or with the path, and the command line see the same model and the same data.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from robustlab.data import Dataset
from robustlab.errors import RobustlabError, unknown
from robustlab.model import LoadedModel, ModelSource, _guess_input_shape, load_model

ModelLike = LoadedModel | nn.Module | str | Path | ModelSource


DEVICES = ("cpu", "cuda", "auto")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``cpu``, ``cuda`` (or ``cuda:K``) or ``auto`` (cuda when available, else cpu) as a torch
    device; cuda on a machine without CUDA is an error naming the parameter."""
    if isinstance(device, torch.device):
        name = device.type
    else:
        name = str(device).strip().lower()
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name.split(":")[0] not in ("cpu", "cuda"):
            raise unknown("device", str(device), DEVICES)
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RobustlabError(
            f"device {str(device)!r} is not available: this torch finds no CUDA device "
            "(use cpu or auto)",
            param="device",
        )
    return device if isinstance(device, torch.device) else torch.device(name)


def to_device(module: nn.Module, data: Dataset, device) -> tuple[nn.Module, Dataset]:
    """The module (moved in place) and the data on ``resolve_device(device)``; ``None``: both
    as they are."""
    if device is None:
        return module, data
    dev = resolve_device(device)
    return module.to(dev), data.to(dev)


def as_loaded(model: ModelLike) -> LoadedModel:
    """``model`` as a ``LoadedModel``: loaded from a path or ``zoo:`` name; an ``nn.Module`` is
    wrapped as it is (its mode and parameters untouched, its input shape unknown: ``fit`` takes
    the data's)."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):  # the input shape: the data's (see fit)
        return LoadedModel(model, None, type(model).__name__, "", "module")
    if isinstance(model, (str, Path, ModelSource)):
        return load_model(model)
    raise RobustlabError(
        "expected a model: what load_model returns, a torch nn.Module, or a path / zoo name; "
        f"found {type(model).__name__}"
    )


def as_module(model: ModelLike) -> nn.Module:
    """The ``nn.Module`` behind ``model`` (see ``as_loaded``)."""
    return model if isinstance(model, nn.Module) else as_loaded(model).module


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Evaluate ``module`` in eval mode, and restore every submodule's own mode afterwards (a
    mixed state too: ``module.train(was_training)`` would not)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


_eval = eval_mode


@contextmanager
def no_parameter_gradients(module: nn.Module) -> Iterator[None]:
    """Switch off ``requires_grad`` on the parameters (a smaller autograd graph, no gradient can
    land on a parameter) while attacking or explaining, and restore it afterwards."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients (attacking, explaining, auditing); both restored."""
    with eval_mode(module), no_parameter_gradients(module):
        yield


T = TypeVar("T")

# per model, per kind of work: the largest batch known to fit (after an out-of-memory error)
_FITTING: weakref.WeakKeyDictionary[nn.Module, dict[str, int]] = weakref.WeakKeyDictionary()


def out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` says an allocation failed (CUDA, or the CPU allocator)."""
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and (
        "out of memory" in str(e) or "can't allocate memory" in str(e)
    )


def in_batches(
    work: Callable[[int, int], T], n: int, batch_size: int, module: nn.Module, kind: str
) -> list[T]:
    """``work(start, stop)`` over consecutive batches of ``range(n)``. A batch that runs out of
    memory is halved and retried; the size that worked is remembered for ``module`` and ``kind``
    (the next call starts from it). ``batch_size`` is the upper limit."""
    try:
        sizes = _FITTING.setdefault(module, {})
    except TypeError:  # a module that cannot be weakly referenced: nothing is remembered
        sizes = {}
    size = max(1, min(batch_size, sizes.get(kind, batch_size)))
    out, start = [], 0
    while start < n:
        try:
            out.append(work(start, min(start + size, n)))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            if not out_of_memory(e) or size == 1:
                raise
            size //= 2
            sizes[kind] = size
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start += size
    return out


def batched_logits(module: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The outputs for ``x``, computed in batches without gradients (halved when out of memory,
    ``in_batches``)."""
    with torch.no_grad():
        parts = in_batches(lambda a, b: module(x[a:b]), len(x), batch_size, module, "logits")
    return torch.cat(parts) if parts else module(x)


def check_fits(
    module: nn.Module,
    data: Dataset,
    role: str = "model",
    expected: tuple[int, ...] | None = None,
) -> None:
    """Check that ``module`` maps the data's inputs to (batch, classes) logits with an output for
    every label (one forward pass of two examples in eval mode; every module's mode restored)."""
    found = tuple(data.x.shape[1:])
    try:
        with torch.no_grad(), _eval(module):
            out = module(data.x[:2])
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        guess = expected or _guess_input_shape(module)
        want = f"; it expects inputs of shape {tuple(guess)}" if guess else ""
        raise RobustlabError(
            f"{role} failed on data '{data.name}' of shape {found} ({first}){want}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RobustlabError(f"expected the {role} to output (batch, classes); found {shape}")
    if data.num_classes > out.shape[1]:
        raise RobustlabError(
            f"data '{data.name}' has labels up to {data.num_classes - 1} but the {role} has "
            f"{out.shape[1]} outputs"
        )


def fit(
    model: ModelLike, data: Dataset, role: str = "model", device=None
) -> tuple[nn.Module, Dataset]:
    """The module and the data reshaped to its input shape (known from the file, or inferred:
    the data's own shape for a module), checked to fit; a mismatch names both shapes.
    ``device`` (``cpu``, ``cuda``, ``auto``; see ``resolve_device``): both moved there (None:
    where they are)."""
    if not isinstance(data, Dataset):
        raise RobustlabError(
            f"expected data as a robustlab Dataset (rl.load_data(...)); found {type(data).__name__}"
        )
    loaded = as_loaded(model)
    module, data = to_device(loaded.module, data.matched_to(loaded.input_shape), device)
    check_fits(module, data, role, loaded.input_shape)
    return module, data
