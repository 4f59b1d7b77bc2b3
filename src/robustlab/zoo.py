"""Small reference models trained in seconds on the bundled digits set (demo, tests, examples)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from robustlab.data import load_digits_split
from robustlab.errors import RobustlabError

INPUT_SHAPE = (1, 8, 8)


def mlp(num_classes: int = 10) -> nn.Sequential:
    """A 64-128-64-10 ReLU perceptron for (1, 8, 8) inputs."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def cnn(num_classes: int = 10) -> nn.Sequential:
    """A two-convolution ReLU network for (1, 8, 8) inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


class ViT(nn.Module):
    """A small vision transformer (Dosovitskiy et al. 2021, arXiv:2010.11929) for (1, 8, 8)
    inputs: 4 x 4 patches embedded by a convolution, learned position embeddings, pre-norm
    encoder layers (multi-head attention, GELU perceptron), a final layer norm, mean pooling."""

    def __init__(
        self,
        num_classes: int = 10,
        *,
        dim: int = 16,
        heads: int = 2,
        depth: int = 1,
        patch: int = 4,
    ) -> None:
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.randn(1, (8 // patch) ** 2, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.encoder(tokens)).mean(1))


def vit(num_classes: int = 10) -> ViT:
    """A one-layer vision transformer on 4 x 4 patches of (1, 8, 8) inputs."""
    return ViT(num_classes)


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"mlp": mlp, "cnn": cnn, "vit": vit}


def build(arch: str) -> nn.Module:
    """An untrained zoo architecture by name."""
    if arch not in ARCHITECTURES:
        raise RobustlabError(
            f"unknown zoo architecture '{arch}'; known: {', '.join(ARCHITECTURES)}"
        )
    return ARCHITECTURES[arch]()


def train_digits(
    arch: str = "mlp", *, seed: int = 0, epochs: int = 60, lr: float = 3e-3, batch_size: int = 64
) -> nn.Module:
    """Train a zoo architecture on the digits training split (Adam, cross-entropy); deterministic."""
    data = load_digits_split(train=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build(arch)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), batch_size):
            idx = order[i : i + batch_size]
            loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def cache_dir() -> Path:
    """Where trained zoo weights are kept (``$ROBUSTLAB_HOME/zoo``, default ``~/.robustlab/zoo``)."""
    return Path(os.environ.get("ROBUSTLAB_HOME", Path.home() / ".robustlab")) / "zoo"


def pretrained(arch: str = "mlp", *, seed: int = 0) -> nn.Module:
    """A trained zoo model, reused from the cache when present (loaded with ``weights_only=True``)."""
    key = hashlib.sha256(f"{arch}-{seed}-v1-torch{torch.__version__[:4]}".encode()).hexdigest()[:12]
    path = cache_dir() / f"{arch}-digits-{key}.pt"
    model = build(arch)
    if path.exists():
        try:
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        except Exception:  # a corrupt cache entry is retrained below
            pass
    model = train_digits(arch, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model
