"""Octave-band noise: its spectrum, thresholds, the channel fit, and an end-to-end run."""

import math

import numpy as np
import pytest
import torch

from robustlab import zoo
from robustlab.corruptions.frequency import (
    band_noise,
    evaluate_frequency,
    fit_channel,
    octave_centres,
    threshold,
)
from robustlab.data import load_digits_split


def test_band_noise_lies_in_its_octave():
    assert octave_centres(32, 32) == [1, 2, 4, 8, 16]
    assert octave_centres(8, 12) == [1, 2, 4]
    gen = torch.Generator().manual_seed(0)
    noise = band_noise(16, 32, 32, 4.0, gen)
    assert noise.shape == (16, 1, 32, 32)
    assert torch.allclose(noise.pow(2).mean((1, 2, 3)), torch.ones(16), atol=1e-4)
    power = torch.fft.fft2(noise.double()).abs().pow(2).mean((0, 1))
    fy = torch.fft.fftfreq(32)[:, None] * 32
    fx = torch.fft.fftfreq(32)[None] * 32
    r = torch.sqrt(fy**2 + fx**2)
    inside = (r >= 4 / math.sqrt(2)) & (r < 4 * math.sqrt(2))
    assert float(power[~inside].sum() / power.sum()) < 1e-12


def test_threshold_interpolates_in_log_strength():
    s = [0.1, 0.2, 0.4]
    assert threshold(s, [0.9, 0.7, 0.3], 0.5) == (pytest.approx(math.sqrt(0.2 * 0.4)), None)
    assert threshold(s, [0.9, 0.8, 0.7], 0.5) == (0.4, "above")
    assert threshold(s, [0.4, 0.3, 0.2], 0.5) == (0.1, "below")


def test_fit_recovers_a_known_channel():
    centres = [1, 2, 4, 8, 16]
    peak, centre, width = 20.0, 5.0, 1.5  # dB, cycles / image, octaves (FWHM of the power)
    a = -10 * math.log10(2) / (width / 2) ** 2
    sens = [peak + a * (math.log2(c) - math.log2(centre)) ** 2 for c in centres]
    ch = fit_channel(centres, sens)
    assert ch["fitted"]
    assert ch["centre_frequency"] == pytest.approx(centre)
    assert ch["bandwidth_octaves"] == pytest.approx(width)
    assert ch["peak_sensitivity_db"] == pytest.approx(peak)
    flat = fit_channel(centres, [1, 2, 3, 4, 5])  # no peak: the best band
    assert not flat["fitted"] and flat["centre_frequency"] == 16
    censored = fit_channel(centres, sens, [None, "above", "above", "below", None])
    assert not censored["fitted"]


def test_zoo_cnn_channel():
    data = load_digits_split(train=False).subset(100)
    r = evaluate_frequency(zoo.pretrained("cnn"), data, strengths=(0.08, 0.32, 1.28))
    assert [b["centre"] for b in r.bands] == [1, 2, 4]
    for b in r.bands:
        assert len(b["accuracy"]) == 3 and b["threshold"] > 0
        assert np.isfinite(b["sensitivity_db"])
    assert r.forward_passes == 100 * (1 + 3 * 3)
    assert {"centre_frequency", "bandwidth_octaves", "peak_sensitivity_db"} <= set(r.channel)
