import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Keep the zoo cache and run history of the tests out of the user's home."""
    home = tmp_path_factory.mktemp("robustlab-home")
    old = {k: os.environ.get(k) for k in ("ROBUSTLAB_HOME", "ROBUSTLAB_DB")}
    os.environ["ROBUSTLAB_HOME"] = str(home)
    os.environ["ROBUSTLAB_DB"] = str(home / "runs.sqlite")
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def mlp():
    from robustlab import zoo

    return zoo.pretrained("mlp")


@pytest.fixture(scope="session")
def digits():
    from robustlab.data import load_digits_split

    return load_digits_split(train=False)
