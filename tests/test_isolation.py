"""The tests write nothing into the user's home: every default path of robustlab lies in the
session's temporary ROBUSTLAB_HOME (tests/conftest.py), also for subprocesses, which inherit it."""

import os
from pathlib import Path

from robustlab import store, zoo
from robustlab.data import digits_cache
from robustlab.paths import home


def test_default_paths_are_in_the_temporary_home(monkeypatch):
    tmp_home = Path(os.environ["ROBUSTLAB_HOME"])
    assert tmp_home != Path.home() / ".robustlab" and home() == tmp_home
    for path in (store.default_path(), zoo.cache_dir(), digits_cache()):
        assert tmp_home in path.parents, path
    monkeypatch.delenv("ROBUSTLAB_DB")  # the run history follows ROBUSTLAB_HOME too
    assert store.default_path() == tmp_home / "runs.sqlite"


def test_collecting_the_tests_writes_nothing_into_home(tmp_path):
    """Test modules that load the digits at import (tests/corruptions) run before any fixture:
    the temporary home must be set when conftest.py is imported."""
    import subprocess
    import sys

    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("ROBUSTLAB_HOME"), env.pop("ROBUSTLAB_DB")
    tests = Path(__file__).parent
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
         str(tests / "corruptions" / "test_conformance.py")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / ".robustlab").exists()
