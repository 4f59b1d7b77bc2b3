"""Small random networks covering every supported operation, for the soundness tests."""

import torch
from torch import nn


class Residual(nn.Module):
    """Linear layers with a residual add, a subtraction, constant mul/div/add and a view."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        x = (x - 0.3) / 0.7
        h = torch.relu(self.a(x)) + x * 0.5
        g = torch.tanh(self.b(h)) - 0.2 * h
        return self.c(g.view(g.size(0), -1))


class ConvResidual(nn.Module):
    """A residual conv block with batch norm, leaky ReLU, pooling and sigmoid."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.down = nn.Conv2d(2, 4, 1)
        self.pool = nn.AvgPool2d(2)
        self.mpool = nn.MaxPool2d(2, stride=1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        h = nn.functional.leaky_relu(self.bn(self.conv1(x)), 0.1)
        h = self.conv2(h) + self.down(x)
        h = torch.sigmoid(self.pool(h))
        h = self.mpool(h)
        return self.fc(torch.flatten(h, 1))


class Concat(nn.Module):
    """Two convolutional branches concatenated along channels, then two linear branches of the
    flattened features concatenated (DenseNet / Inception-style joins)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 1)
        self.c = nn.Conv2d(5, 4, 3, stride=2, padding=1)
        self.f1, self.f2 = nn.Linear(36, 5), nn.Linear(36, 3)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(torch.cat([self.a(x), self.b(x)], dim=1))
        h = torch.relu(self.c(h)).flatten(1)
        return self.out(torch.tanh(torch.cat((self.f1(h), self.f2(h)), -1)))


def make(kind: str, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    if kind == "mlp":
        net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(6, 16),
            nn.ReLU(),
            nn.Linear(16, 16),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(16, 4),
        )
        return net.eval(), (6,)
    if kind == "cnn":
        net = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(6 * 2 * 2, 8),
            nn.ReLU(),
            nn.Identity(),
            nn.Linear(8, 3),
        )
        return net.eval(), (2, 7, 7)
    if kind == "smooth":
        net = nn.Sequential(
            nn.Linear(5, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2)
        )
        return net.eval(), (5,)
    if kind == "residual":
        return Residual().eval(), (6,)
    if kind == "conv-residual":
        return ConvResidual().eval(), (2, 5, 5)
    if kind == "concat":
        return Concat().eval(), (2, 5, 5)
    raise ValueError(kind)


KINDS = ("mlp", "cnn", "smooth", "residual", "conv-residual", "concat")
