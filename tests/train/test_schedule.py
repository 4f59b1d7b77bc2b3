"""Eps schedules: warm-up, smooth and linear ramps (Shi et al. 2021; Gowal et al. 2018)."""

import pytest

from robustlab.errors import RobustlabError
from robustlab.train.schedule import EpsSchedule, default_schedule


def test_smooth_ramp_warmup_monotone_continuous():
    s = EpsSchedule(0.1, warmup=1, ramp=4)
    assert s(0) == 0 and s(0.99) == 0
    values = [s(1 + k / 100) for k in range(0, 401)]
    assert values == sorted(values)
    assert values[-1] == pytest.approx(0.1) and s(7) == pytest.approx(0.1)
    steps = [b - a for a, b in zip(values, values[1:], strict=False)]
    assert max(steps) < 0.1 / 100 * 1.5  # continuous, no jump at the mid point
    assert s(2) < 0.1 * 0.25  # slower than linear in the first quarter


def test_linear_and_constant():
    assert EpsSchedule(0.2, warmup=0, ramp=2, shape="linear")(1) == pytest.approx(0.1)
    assert EpsSchedule(0.2, shape="constant")(0) == 0.2


def test_defaults_per_method():
    cert = default_schedule("ibp", 0.1, 20)
    assert cert(0.5) == 0 and cert(20) == pytest.approx(0.1) and cert(5) < 0.1
    assert default_schedule("pgd-at", 0.1, 20)(0) == 0.1


@pytest.mark.parametrize(
    "kwargs", [{"eps": -1.0}, {"eps": 0.1, "shape": "cosine"}, {"eps": 0.1, "mid": 1.5}]
)
def test_bad_schedule(kwargs):
    with pytest.raises(RobustlabError):
        EpsSchedule(**kwargs)
