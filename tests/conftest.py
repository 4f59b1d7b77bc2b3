import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

SHARED = Path(__file__).resolve().parents[2] / "shared"

try:  # the fuzz suite's profiles: "ci" (seeded, fast; the default) and "long" (ROBUSTLAB_FUZZ=long)
    from hypothesis import HealthCheck, settings

    _quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    settings.register_profile(
        "ci", max_examples=40, derandomize=True, database=None, deadline=None,
        suppress_health_check=_quiet, print_blob=True,
    )  # fmt: skip
    settings.register_profile(
        "long", max_examples=2000, database=None, deadline=None,
        suppress_health_check=_quiet, print_blob=True,
    )  # fmt: skip
    settings.load_profile(os.environ.get("ROBUSTLAB_FUZZ", "ci"))
except ImportError:  # the fuzz tests skip themselves
    pass


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """``robustlab ARGS`` in-process: (exit code, stdout, stderr)."""
    from robustlab import cli

    monkeypatch.setattr(sys, "argv", ["robustlab", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


# The zoo cache, the digits split and the run history of the tests stay out of the user's home: set
# when this file is imported, before any test module is (some load data at import), and inherited
# by every subprocess; removed at the end of the session.
_HOME = Path(tempfile.mkdtemp(prefix="robustlab-home-"))
_SAVED = {k: os.environ.get(k) for k in ("ROBUSTLAB_HOME", "ROBUSTLAB_DB")}
os.environ["ROBUSTLAB_HOME"] = str(_HOME)
os.environ["ROBUSTLAB_DB"] = str(_HOME / "runs.sqlite")


@pytest.fixture(autouse=True, scope="session")
def _isolated_home():
    yield _HOME
    for k, v in _SAVED.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def mlp():
    from robustlab import zoo

    return zoo.pretrained("mlp")


@pytest.fixture(scope="session")
def digits():
    from robustlab.data import load_digits_split

    return load_digits_split(train=False)


def pytest_terminal_summary(terminalreporter, config):
    """The random order's seed, also under -q (which hides pytest-randomly's header line)."""
    seed = getattr(config.option, "randomly_seed", None)
    if isinstance(seed, int):
        terminalreporter.write_line(f"test order: pytest-randomly --randomly-seed={seed}")
