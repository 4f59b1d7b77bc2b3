"""A shape-bias probe: cue-conflict images from one class's shape and another's texture.

After Geirhos et al. (2019) and "The shape and simplicity biases of adversarially robust
ImageNet-trained CNNs" (Chen et al. 2020): the texture image's patches are shuffled, which keeps
its local statistics (its texture) and destroys its global shape; blended into the shape image,
the result carries two conflicting cues. The shape bias is the share of the decisions that follow
one of the cues that follow the shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robustlab.errors import RobustlabError
from robustlab.results import Metric


def patch_shuffle(x: Tensor, patch: int, generator: torch.Generator) -> Tensor:
    """Each image's ``patch`` x ``patch`` tiles (H and W multiples of ``patch``) in a random
    order, drawn per image: (N, C, H, W) -> same shape."""
    n, c, h, w = x.shape
    if patch < 1 or h % patch or w % patch:
        raise RobustlabError(f"patch must divide the image size {h} x {w}; found {patch}")
    gh, gw = h // patch, w // patch
    tiles = (
        x.reshape(n, c, gh, patch, gw, patch)
        .permute(0, 2, 4, 1, 3, 5)
        .reshape(n, gh * gw, c, patch, patch)
    )
    order = torch.stack([torch.randperm(gh * gw, generator=generator) for _ in range(n)])
    tiles = tiles[torch.arange(n)[:, None], order]
    return tiles.reshape(n, gh, gw, c, patch, patch).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def cue_conflict(shape: Tensor, texture: Tensor, patch: int, alpha: float, generator) -> Tensor:
    """alpha * shape + (1 - alpha) * patch-shuffled texture."""
    return alpha * shape + (1 - alpha) * patch_shuffle(texture, patch, generator)


@dataclass(frozen=True)
class ShapeBiasResult:
    """Decisions on cue-conflict images; texture-only accuracy as a control."""

    shape_decisions: int  # predicted the shape image's class
    texture_decisions: int  # predicted the texture image's class
    other_decisions: int
    texture_only_accuracy: float  # the shuffled texture images alone, their own class
    patch: int
    alpha: float
    examples: Tensor  # (k, 3, *shape): shape image, texture image, cue-conflict image

    @property
    def shape_bias(self) -> float | None:
        cue = self.shape_decisions + self.texture_decisions
        return self.shape_decisions / cue if cue else None

    def to_dict(self) -> dict:
        return {
            "shape_bias": self.shape_bias,
            "shape_decisions": self.shape_decisions,
            "texture_decisions": self.texture_decisions,
            "other_decisions": self.other_decisions,
            "texture_only_accuracy": self.texture_only_accuracy,
            "patch": self.patch,
            "alpha": self.alpha,
        }

    def metrics(self) -> list[Metric]:
        return [Metric("shape_bias", self.shape_bias, True)]


def shape_bias(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    n_pairs: int = 500,
    patch: int = 2,
    alpha: float = 0.5,
    seed: int = 0,
    n_examples: int = 4,
) -> ShapeBiasResult:
    """The shape bias of ``model`` on ``n_pairs`` cue-conflict images made from pairs of images
    ``x`` of different labels ``y``, both correctly classified (so each cue alone is known to
    carry its class)."""
    if x.dim() != 4:
        raise RobustlabError(
            f"the shape-bias probe expects images (N, C, H, W); found {tuple(x.shape)}"
        )
    if not 0 < alpha < 1:
        raise RobustlabError(f"alpha must lie in (0, 1); found {alpha!r}")
    gen = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            right = model(x).argmax(1) == y
        idx = right.nonzero()[:, 0]
        if len(idx) < 2 or len(y[idx].unique()) < 2:
            raise RobustlabError("the shape-bias probe needs correct predictions of two classes")
        s = idx[torch.randint(len(idx), (4 * n_pairs,), generator=gen)]
        t = idx[torch.randint(len(idx), (4 * n_pairs,), generator=gen)]
        keep = y[s] != y[t]
        s, t = s[keep][:n_pairs], t[keep][:n_pairs]
        conflict = cue_conflict(x[s], x[t], patch, alpha, gen)
        texture_only = patch_shuffle(x[t], patch, gen)
        with torch.no_grad():
            pred = model(conflict).argmax(1)
            tex_pred = model(texture_only).argmax(1)
    finally:
        model.train(was_training)
    by_shape = int((pred == y[s]).sum())
    by_texture = int((pred == y[t]).sum())
    k = min(n_examples, len(s))
    return ShapeBiasResult(
        by_shape,
        by_texture,
        len(s) - by_shape - by_texture,
        float((tex_pred == y[t]).float().mean()),
        patch,
        alpha,
        torch.stack([x[s[:k]], x[t[:k]], conflict[:k]], 1),
    )
