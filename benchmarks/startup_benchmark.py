"""Start-up cost of the ``robustlab`` command line, hyperfine-like: each command runs N times as a
fresh process (after one unmeasured warm-up that also trains the zoo model on first use), the table
gives the median and the spread of the wall times next to the numbers measured before the imports
were made lazy (``BEFORE``, same machine, same commands).

- ``--help``: the typer app alone (no torch).
- ``import robustlab``: the public API package (lazy: torch only when a name is used).
- ``to first batch``: process start to the first batch of a command (imports, zoo:mlp and digits
  loaded and checked: ``robustlab.jobs.prepare``).
- ``attack --n 1``: one example of zoo:mlp on digits, fast suite at eps 0.05: the whole fixed cost of
  a command that computes (process start, imports, model and data, one batch, report, run history).
- ``verify small``: ``../shared/benchmarks/test/test_small.onnx`` and its VNN-LIB file.

    python benchmarks/startup_benchmark.py [--runs 7] [--before DIR]

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
# (other engineers' jobs running). With --before, the same run measures both (fairer under load):
# at load 6-8, median of 5, before / after: --help 4.34 / 0.32 s, import 2.95 / 0.03 s, to first
# batch 4.97 / 3.00 s, attack --n 1 8.37 / 4.79 s, verify small 5.81 / 4.96 s.
BEFORE = {
    "--help": 2.60,
    "import robustlab": 1.66,
    "to first batch": None,
    "attack --n 1": 4.60,
    "verify small": 4.25,
}


def commands(tmp: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-c", "from robustlab.cli import main; main()"]  # the console script
    return {
        "--help": [*cli, "--help"],
        "import robustlab": [sys.executable, "-c", "import robustlab"],
        "to first batch": [  # process start to the first batch: imports, model and data loaded
            sys.executable,
            "-c",
            "from robustlab.jobs import prepare; prepare('zoo:mlp', 'digits', 1)",
        ],
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
    parser.add_argument(
        "--before",
        type=Path,
        help="a folder with the old src/ (git archive 65c51bc src | tar -x -C DIR): measured in "
        "the same run, interleaved, instead of the recorded BEFORE numbers",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "ROBUSTLAB_HOME": str(tmp / "home"),
            "ROBUSTLAB_DB": str(tmp / "runs.sqlite"),
        }
        sides = {"after": env}
        if args.before:
            sides["before"] = {**env, "PYTHONPATH": str(args.before.resolve() / "src")}
        cmds = commands(tmp)
        if not SMALL.exists():
            del cmds["verify small"]
        for side_env in sides.values():  # warm-up: the zoo model, the file cache
            for cmd in cmds.values():
                timed(cmd, side_env)
        times = {(side, k): [] for side in sides for k in cmds}
        for _ in range(args.runs):  # interleaved, so a burst of load hits every command alike
            for name, cmd in cmds.items():
                for side, side_env in sides.items():
                    times[side, name].append(timed(cmd, side_env))
    load = os.getloadavg()
    source = "measured now, interleaved" if args.before else "recorded (BEFORE)"
    print(
        f"median of {args.runs} runs per command; before: {source}; load {load[0]:.2f} {load[1]:.2f}"
    )
    print("| command | before s | after s | after min-max s | speed-up |")
    print("|---|---|---|---|---|")
    for name in cmds:
        ts = times["after", name]
        med = statistics.median(ts)
        before = statistics.median(times["before", name]) if args.before else BEFORE.get(name)
        ratio = f"{before / med:.1f}x" if before else "-"
        b = f"{before:.2f}" if before else "-"
        print(f"| {name} | {b} | {med:.2f} | {min(ts):.2f}-{max(ts):.2f} | {ratio} |")


if __name__ == "__main__":
    main()
