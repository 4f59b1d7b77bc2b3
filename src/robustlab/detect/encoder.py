"""A small self-supervised encoder trained on the data in minutes on a CPU (SimCLR, Chen et al.
2020, arXiv:2002.05709: two augmented views of each image, NT-Xent loss on a projection head),
and a linear classification head fitted on its frozen representation (BEYOND labels an input's
neighbours with it)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustlab.data import Dataset
from robustlab.detect.augment import Augment
from robustlab.errors import RobustlabError


def backbone(channels: int, width: int = 32, dim: int = 64) -> nn.Sequential:
    """Two 3x3 convolutions (the second strided), global average pooling, a linear layer."""
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, dim),
    )


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """SimCLR's normalised-temperature cross-entropy over 2N views (positives: the pairs)."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.t() / temperature
    n = len(a)
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), -torch.inf)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


@dataclass(frozen=True)
class Encoder:
    """The trained encoder (eval mode), its linear head, and how they were trained."""

    net: nn.Module  # images -> representation (N, dim)
    head: nn.Linear  # representation -> class logits
    augment: Augment
    epochs: int
    seconds: float
    train_n: int
    head_accuracy: float  # of the linear head on its training data (clean)

    def represent(self, x: Tensor) -> Tensor:
        return self.net(x)

    def to_dict(self) -> dict:
        return {
            "method": "simclr",
            "epochs": self.epochs,
            "seconds": self.seconds,
            "train_n": self.train_n,
            "dim": self.head.in_features,
            "head_accuracy": self.head_accuracy,
        }


def train_encoder(
    data: Dataset,
    *,
    epochs: int = 40,
    batch_size: int = 128,
    lr: float = 3e-3,
    temperature: float = 0.5,
    augment: Augment | None = None,
    seed: int = 0,
    max_seconds: float | None = None,
) -> Encoder:
    """SimCLR on ``data``'s images (labels unused), then a linear head on the frozen
    representation (logistic regression by Adam on the clean images). ``max_seconds``: stop
    after the first epoch that ends past this time (the encoder records the epochs run)."""
    if data.x.dim() != 4:
        raise RobustlabError(
            f"the detector needs images (N, C, H, W); found data of shape {tuple(data.x.shape[1:])}"
        )
    if epochs < 1 or len(data) < 4:
        raise RobustlabError(f"expected epochs >= 1 and 4+ examples; found {epochs}, {len(data)}")
    aug = augment or Augment(lower=data.lower, upper=data.upper)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = backbone(data.x.shape[1])
        proj = nn.Sequential(nn.ReLU(), nn.Linear(net[-1].out_features, 64))
        head = nn.Linear(net[-1].out_features, int(data.y.max()) + 1)
    params = [*net.parameters(), *proj.parameters()]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-6)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    net.train()
    done = 0
    for _ in range(epochs):
        if max_seconds is not None and done and time.perf_counter() - start > max_seconds:
            break
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data) - 1, batch_size):
            x = data.x[order[i : i + batch_size]]
            if len(x) < 2:
                continue
            loss = nt_xent(proj(net(aug(x, gen))), proj(net(aug(x, gen))), temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        done += 1
    net.eval().requires_grad_(False)
    with torch.no_grad():
        feats = torch.cat([net(data.x[i : i + 512]) for i in range(0, len(data), 512)])
    opt_h = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        loss = F.cross_entropy(head(feats), data.y)
        opt_h.zero_grad()
        loss.backward()
        opt_h.step()
    head.eval().requires_grad_(False)
    with torch.no_grad():
        acc = float((head(feats).argmax(1) == data.y).double().mean())
    return Encoder(net, head, aug, done, time.perf_counter() - start, len(data), acc)
