import pytest
import torch
from torch import nn

from robustlab import zoo


class Reused(nn.Module):
    """A CNN that calls one convolution twice and one in-place ReLU three times."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.mid = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(6 * 8 * 8, 10)

    def forward(self, x):
        h = self.relu(self.conv(x))
        h = self.relu(self.mid(h))
        h = self.relu(self.mid(h))
        return self.fc(h.flatten(1))


@pytest.fixture(scope="session")
def cnn():
    """The zoo CNN after a few epochs (fast; accurate enough to explain)."""
    return zoo.train_digits("cnn", epochs=4)


@pytest.fixture(scope="session")
def reused():
    return Reused().eval()


@pytest.fixture(scope="session")
def linear():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
