"""The stage loop, the time budget and the profile table, on fake stages (no model work)."""

import json
import time
from dataclasses import replace

import pytest
import torch

from robustlab.audit.budget import RESERVE, BudgetExceeded, Clock, Deadline
from robustlab.audit.common import Chunks, proportion_ci
from robustlab.audit.profiles import PROFILES, QUICK, default_eps, get_profile, headline_eps
from robustlab.audit.runner import Context, run_stages
from robustlab.data import Dataset
from robustlab.errors import RobustlabError


def test_profiles_table():
    assert list(PROFILES) == ["quick", "standard", "full"]
    assert QUICK.budget < PROFILES["standard"].budget < PROFILES["full"].budget
    assert PROFILES["full"].n is None and PROFILES["full"].suite == "standard"
    assert "alpha-crown" not in QUICK.methods and "alpha-crown" in PROFILES["standard"].methods
    with pytest.raises(RobustlabError, match="unknown profile 'fast'; known: quick, standard"):
        get_profile("fast")


def test_default_and_headline_eps():
    assert default_eps("inf") == [0.0, 0.01, 0.02, 0.05, 0.1, 0.2]
    assert default_eps("2", 2.0)[-1] == 4.0
    assert headline_eps([0.0, 0.01, 0.02, 0.05, 0.1, 0.2]) == 0.05
    assert headline_eps([0.3, 0.1]) == 0.1 and headline_eps([0.0]) == 0.0


def test_clock_shares_the_time_left_by_weight():
    clock = Clock(100.0)
    d = clock.share(1.0, 3.0)
    assert d.seconds == pytest.approx((100 - RESERVE) / 4, abs=0.1)
    assert d.soft < d.hard <= clock.start + 100
    d.check()  # not past the hard deadline
    with pytest.raises(BudgetExceeded):
        Deadline(0.0, 0.0, 0.0).check()


def test_chunks_fit_the_deadline():
    now = time.perf_counter()
    chunks = Chunks(100, Deadline(now, now + 0.25, now + 1), first=10)
    for _a, b in chunks:
        time.sleep(0.005 * (b - _a))  # 5 ms per item: about 50 items fit
    assert chunks.stopped and 20 <= chunks.done < 100
    assert proportion_ci(0, 10)[0] == 0 and proportion_ci(10, 10)[1] == 1


def _ctx(weights=None) -> Context:
    data = Dataset("d", torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    profile = replace(QUICK, weights=weights or {"a": 1, "b": 1, "c": 1})
    return Context(None, data, profile, [0.0, 0.1], "inf", 0.1)


def test_failed_stage_is_recorded_and_the_others_run(tmp_path):
    seen = []

    def boom(ctx, deadline, say):
        raise ValueError("bad thing")

    def fine(ctx, deadline, say):
        seen.append(json.loads((tmp_path / "report.json").read_text())["stages"][-1]["name"])
        return {"value": 1}

    report = run_stages(_ctx(), {}, [("a", boom, None), ("b", fine, None), ("c", None, "why")],
                        Clock(60.0), out=tmp_path)  # fmt: skip
    st = {s["name"]: s for s in report["stages"]}
    assert st["a"]["status"] == "failed" and "ValueError: bad thing" in st["a"]["error"]
    assert st["b"]["status"] == "ok" and report["b"] == {"value": 1} and report["a"] is None
    assert st["c"]["status"] == "skipped" and st["c"]["note"] == "why"
    assert seen == ["a"]  # the report on disk already held stage a when b ran
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["schema_version"] == 2 and len(on_disk["stages"]) == 3


def test_slow_stage_is_stopped_within_the_budget(tmp_path):
    def slow(ctx, deadline, say):
        while True:  # an engine that reports progress but never ends
            say("working")
            time.sleep(0.01)

    def fine(ctx, deadline, say):
        return {"ok": True}

    start = time.perf_counter()
    report = run_stages(_ctx({"a": 1, "b": 1}), {}, [("a", slow, None), ("b", fine, None)],
                        Clock(RESERVE + 2.0), out=tmp_path)  # fmt: skip
    assert time.perf_counter() - start < RESERVE + 2.0
    st = {s["name"]: s for s in report["stages"]}
    assert st["a"]["status"] == "timeout" and "time budget" in st["a"]["error"]
    assert st["b"]["status"] in ("ok", "skipped")


def test_interrupt_saves_the_report_and_propagates(tmp_path):
    def stop(ctx, deadline, say):
        raise KeyboardInterrupt

    report = {}
    with pytest.raises(KeyboardInterrupt):
        run_stages(
            _ctx(), report, [("a", stop, None), ("b", stop, None)], Clock(60.0), out=tmp_path
        )
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["status"] == "interrupted" and on_disk["stages"][0]["status"] == "interrupted"
