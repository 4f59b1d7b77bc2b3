"""Start-up cost of the ``robustlab`` command line, hyperfine-like: each command runs N times as a
fresh process (after one unmeasured warm-up that also trains the zoo model on first use), the table
gives the median and the spread of the wall times next to the numbers measured before the imports
were made lazy (``BEFORE``, same machine, same commands).

- ``--help``: the typer app alone (no torch).
- ``import robustlab``: the public API package (lazy: torch only when a name is used).
- ``attack --n 1``: one example of zoo:mlp on digits, fast suite at eps 0.05: the fixed cost of a
  command that computes (process start, imports, model and data, one batch, report, run history).
- ``verify small``: ``../shared/benchmarks/test/test_small.onnx`` and its VNN-LIB file.

    python benchmarks/startup_benchmark.py [--runs 7]

Each command runs with OMP_NUM_THREADS=1 and a temporary ROBUSTLAB_HOME / ROBUSTLAB_DB, so nothing
is written into ~/.robustlab. The load average is printed: on a busy machine every number grows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT.parent / "shared" / "benchmarks" / "test"

# Measured with this script on the 2-core development machine before the lazy imports (commit
# 65c51bc: torch, matplotlib, jinja2 and every capability imported before the command was known;
# scikit-learn for the digits, onnx for its version string), median of 7 runs, load average 1.5-2.8
# (other engineers' jobs running).
BEFORE = {
    "--help": 2.60,
    "import robustlab": 1.66,
    "attack --n 1": 4.60,
    "verify small": 4.25,
}


def commands(tmp: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-c", "from robustlab.cli import main; main()"]  # the console script
    return {
        "--help": [*cli, "--help"],
        "import robustlab": [sys.executable, "-c", "import robustlab"],
        "attack --n 1": [
            *cli,
            "attack",
            "--model",
            "zoo:mlp",
            "--data",
            "digits",
            "--eps",
            "0.05",
            "--n",
            "1",
            "--out",
            str(tmp / "attack.json"),
        ],
        "verify small": [
            *cli,
            "verify",
            str(SMALL / "test_small.onnx"),
            str(SMALL / "test_small.vnnlib"),
            "--timeout",
            "60",
        ],
    }


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "ROBUSTLAB_HOME": str(tmp / "home"),
            "ROBUSTLAB_DB": str(tmp / "runs.sqlite"),
        }
        cmds = commands(tmp)
        if not SMALL.exists():
            del cmds["verify small"]
        for cmd in cmds.values():  # warm-up: the zoo model, the file cache
            timed(cmd, env)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        for _ in range(args.runs):  # interleaved, so a burst of load hits every command alike
            for name, cmd in cmds.items():
                times[name].append(timed(cmd, env))
    load = os.getloadavg()
    print(f"median of {args.runs} runs per command; load average {load[0]:.2f} {load[1]:.2f}")
    print(f"{'command':<18} {'before s':>9} {'after s':>9} {'min-max s':>13} {'ratio':>7}")
    for name, ts in times.items():
        med = statistics.median(ts)
        before = BEFORE.get(name)
        ratio = f"{before / med:6.1f}x" if before else "      -"
        b = f"{before:9.2f}" if before else "        -"
        print(f"{name:<18} {b} {med:9.2f} {min(ts):6.2f}-{max(ts):<6.2f} {ratio}")


if __name__ == "__main__":
    main()
