"""The audit's stage loop: each stage gets a share of the time left, a failed stage is recorded
with its error while the others run, and ``report.json`` is rewritten after every stage."""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from robustlab.audit.budget import BudgetExceeded, Clock, Deadline
from robustlab.audit.profiles import Profile
from robustlab.data import Dataset
from robustlab.model import LoadedModel
from robustlab.results import SCHEMA_VERSION
from robustlab.shards import Backend

Progress = Callable[[str], None]


@dataclass
class Context:
    """What the stages share: the inputs, the settings, and per-example results so far."""

    model: LoadedModel
    data: Dataset
    profile: Profile
    eps: list[float]  # ascending, 0 included when given
    norm: str
    headline: float
    seed: int = 0
    batch_size: int = 256
    sigma: float | None = None  # randomized smoothing when set
    baseline: LoadedModel | None = None
    backend: Backend = Backend()  # where the stages that shard (attacks, bounds, ...) run
    # what a stage leaves for the later ones (None until the stage that makes it has run)
    pred: torch.Tensor | None = None  # clean predictions (clean stage)
    correct: torch.Tensor | None = None  # bool[n] (clean stage)
    num_classes: int | None = None  # (clean stage)
    robust: dict[float, torch.Tensor] | None = None  # eps: bool[attacked], no attack broke it
    attacked: int | None = None  # the first examples the attack stage finished
    certified: dict[float, torch.Tensor] | None = None  # eps: bool[n], any method proved it

    @property
    def n(self) -> int:
        return len(self.data)

    def subset(self, idx: torch.Tensor | slice) -> Dataset:
        d = self.data
        return Dataset(d.name, d.x[idx], d.y[idx], d.lower, d.upper)


Stage = Callable[[Context, Deadline, Progress], dict]


def _error(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:500]


def write_json(report: dict, path: Path) -> None:
    """Write atomically, so an interrupted run leaves the last complete version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"schema_version": SCHEMA_VERSION, **report}, indent=1))
    os.replace(tmp, path)


def run_stages(
    ctx: Context,
    report: dict,
    stages: list[tuple[str, Stage | None, str | None]],
    clock: Clock,
    *,
    out: Path | None = None,
    progress: Progress | None = None,
    on_stage: Callable[[dict], None] | None = None,
) -> dict:
    """Run ``stages`` (name, function or None with the reason it is skipped) in order; each
    stage's dict goes to ``report[name]`` and its record to ``report["stages"]``."""
    tell = progress or (lambda _m: None)
    planned = [s for s in stages if s[1] is not None]
    report.setdefault("stages", [])

    def save() -> None:
        if out is not None:
            write_json(report, out / "report.json")

    for name, fn, reason in stages:
        rec: dict = {"name": name, "status": "skipped", "seconds": 0.0, "budget_s": 0.0}
        if fn is None:
            rec["note"] = reason
            report["stages"].append(rec)
            report[name] = None
            save()
            continue
        k = planned.index((name, fn, reason))
        later = sum(ctx.profile.weights.get(s[0], 0.1) for s in planned[k + 1 :])
        deadline = clock.share(ctx.profile.weights.get(name, 0.1), later)
        rec["budget_s"] = round(deadline.seconds, 2)
        if clock.left() <= 0:
            rec["note"] = "no time left in the budget"
            report["stages"].append(rec)
            report[name] = None
            save()
            continue

        def say(msg: str, check: bool = True, _k=k, _name=name, _d=deadline) -> None:
            tell(f"[{_k + 1}/{len(planned)} {_name}] {msg}")
            if check:  # engines report progress through this: stopped past the hard deadline
                _d.check()

        say("starting", False)
        t0 = time.perf_counter()
        try:
            section = fn(ctx, deadline, say)
            report[name] = section
            rec["status"] = "partial" if section.get("partial") else "ok"
            if section.get("note"):
                rec["note"] = section["note"]
        except BudgetExceeded as e:
            rec.update(status="timeout", error=str(e))
            report[name] = None
        except KeyboardInterrupt:
            rec.update(status="interrupted", seconds=round(time.perf_counter() - t0, 2))
            report["stages"].append(rec)
            report[name] = None
            report["status"] = "interrupted"
            save()
            raise
        except Exception as e:  # a failed stage is recorded; the others continue
            rec.update(status="failed", error=_error(e))
            rec["traceback"] = traceback.format_exc(limit=-3).strip().splitlines()[-6:]
            report[name] = None
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        report["stages"].append(rec)
        report["elapsed_s"] = round(clock.elapsed(), 2)
        save()
        if on_stage:
            on_stage(rec)
    return report
