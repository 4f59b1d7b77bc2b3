"""Shared fixtures: one small audit run (zoo MLP, 40 digits, quick profile) recorded in a run
history, and a headless Chromium (installed with apt-get when missing and possible)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import find_chromium


def cli(*args) -> subprocess.CompletedProcess:
    """The console script in a fresh process (as a user runs it)."""
    return subprocess.run(
        [sys.executable, "-c", "from robustlab.cli import main; main()", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="session")
def audited(tmp_path_factory):
    """``robustlab audit`` on zoo:mlp (40 examples, quick profile): (out dir, db, process)."""
    root = tmp_path_factory.mktemp("audit")
    db = root / "runs.sqlite"
    proc = cli("audit", "--model", "zoo:mlp", "--data", "digits", "--n", 40, "--smoothing", 0.25,
               "--out", root / "mlp", "--db", db)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return root / "mlp", db, proc


def _install_chromium() -> str:
    """Try ``apt-get install chromium`` (Debian's package); the reason when it cannot be done."""
    if os.environ.get("ROBUSTLAB_NO_BROWSER_INSTALL"):
        return "ROBUSTLAB_NO_BROWSER_INSTALL is set"
    apt = shutil.which("apt-get")
    if apt is None:
        return "no apt-get to install Debian's chromium package"
    if os.geteuid() != 0:
        return "installing chromium needs root (apt-get install -y chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:  # stale package lists: refresh once
            subprocess.run([apt, "update"], capture_output=True, env=env, timeout=600)
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"apt-get failed: {e}"
    tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
    return "" if r.returncode == 0 else f"apt-get install chromium failed: {tail[0]}"


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless Chromium; the tests that need it are skipped only when none can be installed."""
    path = find_chromium()
    if path is None:
        reason = _install_chromium()
        path = find_chromium()
        if path is None:
            pytest.skip(f"no Chromium to render the report: {reason or 'not found after install'}")
    return path


@pytest.fixture
def screenshots(tmp_path) -> Path:
    """Where screenshots go: ``$ROBUSTLAB_SCREENSHOTS`` when set, else a temporary folder."""
    where = Path(os.environ.get("ROBUSTLAB_SCREENSHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where
