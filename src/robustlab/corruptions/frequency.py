"""Frequency-band noise and the network's spatial-frequency channel, after critical band masking
(Subramanian et al. 2023, "Spatial-frequency channels, shape bias, and adversarial robustness",
arXiv:2309.13190).

Gaussian noise is filtered to one-octave bands ``[c / sqrt 2, c sqrt 2)`` cycles per image around
centres ``c = S/2, S/4, ... >= 1`` (``S`` the short side), scaled to a root-mean-square strength
``sigma``, added to every channel alike and clipped to [0, 1]. Per band, the threshold is the
strength at which accuracy falls halfway from clean to chance (interpolated in log strength);
sensitivity is ``-20 log10(threshold)`` dB. The channel is a parabola fitted to sensitivity
against log2 frequency (a Gaussian in log frequency of the inverse threshold power): its peak gives
the centre frequency and the peak sensitivity, its full width where the power sensitivity halves
(3 dB below the peak) the bandwidth in octaves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from robustlab.corruptions.base import check_images, stable_seed
from robustlab.corruptions.evaluate import from_unit, to_unit
from robustlab.data import Dataset
from robustlab.errors import RobustlabError

STRENGTHS = (0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
HALF_POWER_DB = 10 * math.log10(2)


@dataclass(frozen=True)
class FrequencyResult:
    """Accuracy per band and strength, thresholds, and the fitted channel."""

    clean_accuracy: float
    strengths: tuple[float, ...]
    bands: tuple[dict, ...]  # {centre, low, high, accuracy, threshold, sensitivity_db, censored}
    channel: dict  # {centre_frequency, bandwidth_octaves, peak_sensitivity_db, fitted}
    forward_passes: int
    seconds: float

    def to_dict(self) -> dict:
        return {
            "clean_accuracy": self.clean_accuracy,
            "strengths": list(self.strengths),
            "bands": list(self.bands),
            "channel": self.channel,
            "forward_passes": self.forward_passes,
            "seconds": self.seconds,
        }


def octave_centres(h: int, w: int) -> list[float]:
    """Band centres in cycles per image: S/2, S/4, ... down to at least 1 (S the short side)."""
    top = min(h, w) / 2
    return [top / 2**k for k in range(int(math.log2(top)) + 1)][::-1] if top >= 1 else []


def band_noise(
    n: int, h: int, w: int, centre: float, gen: torch.Generator, dtype=torch.float32
) -> Tensor:
    """Gaussian noise (n, 1, h, w) restricted to the octave band around ``centre`` cycles per
    image, scaled to unit root-mean-square per image."""
    white = torch.randn((n, 1, h, w), generator=gen, dtype=torch.float64, device=gen.device)
    fy = torch.fft.fftfreq(h, device=gen.device, dtype=torch.float64)[:, None] * h
    fx = torch.fft.rfftfreq(w, device=gen.device, dtype=torch.float64)[None] * w
    radius = torch.sqrt(fy**2 + fx**2)
    mask = (radius >= centre / math.sqrt(2)) & (radius < centre * math.sqrt(2))
    noise = torch.fft.irfft2(torch.fft.rfft2(white) * mask, s=(h, w))
    rms = noise.pow(2).mean((1, 2, 3), keepdim=True).sqrt().clamp(min=1e-12)
    return (noise / rms).to(dtype)


def threshold(strengths: Sequence[float], accuracy: Sequence[float], criterion: float):
    """The strength where accuracy falls to ``criterion`` (log-linear interpolation) and whether it
    is censored (``below``: already at the weakest strength, ``above``: never reached)."""
    for j, a in enumerate(accuracy):
        if a <= criterion:
            if j == 0:
                return float(strengths[0]), "below"
            s0, s1, a0, a1 = strengths[j - 1], strengths[j], accuracy[j - 1], a
            frac = (a0 - criterion) / (a0 - a1) if a0 > a1 else 1.0
            return float(math.exp(math.log(s0) + frac * (math.log(s1) - math.log(s0)))), None
    return float(strengths[-1]), "above"


def fit_channel(
    centres: Sequence[float], sensitivity_db: Sequence[float], censored: Sequence | None = None
) -> dict:
    """A parabola in log2 frequency through the sensitivities (least squares) of the bands whose
    threshold was reached; ``fitted`` is False (and the best band is reported) when fewer than
    three were, or when the parabola has no peak within an octave of the measured bands."""
    keep = [i for i in range(len(centres)) if censored is None or not censored[i]]
    x = np.log2(np.asarray(centres, float))[keep]
    s = np.asarray(sensitivity_db, float)[keep]
    if len(keep) == 0:
        x, s = np.log2(np.asarray(centres, float)), np.asarray(sensitivity_db, float)
        centres = list(centres)
    else:
        centres = [centres[i] for i in keep]
    best = int(np.argmax(s))
    fallback = {
        "centre_frequency": float(centres[best]),
        "bandwidth_octaves": None,
        "peak_sensitivity_db": float(s[best]),
        "fitted": False,
    }
    if len(x) < 3:
        return fallback
    a, b, c = np.polyfit(x, s, 2)
    if a >= 0:
        return fallback
    peak = -b / (2 * a)
    if not x.min() - 1 <= peak <= x.max() + 1:  # an extrapolated peak is not a measurement
        return fallback
    return {
        "centre_frequency": float(2**peak),
        "bandwidth_octaves": float(2 * math.sqrt(HALF_POWER_DB / -a)),
        "peak_sensitivity_db": float(c - b * b / (4 * a)),
        "fitted": True,
    }


def evaluate_frequency(
    model: nn.Module,
    data: Dataset,
    *,
    strengths: Sequence[float] = STRENGTHS,
    centres: Sequence[float] | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> FrequencyResult:
    """Accuracy under octave-band noise at each strength, thresholds and the fitted channel."""
    start = time.perf_counter()
    check_images(data.x)
    strengths = sorted(float(s) for s in strengths)
    if not strengths or strengths[0] <= 0:
        raise RobustlabError(f"noise strengths must be positive; found {strengths}")
    h, w = data.x.shape[-2:]
    centres = list(centres) if centres is not None else octave_centres(h, w)
    x01, y, n = to_unit(data), data.y, len(data)
    with torch.no_grad():
        out = torch.cat([model(data.x[i : i + batch_size]) for i in range(0, n, batch_size)])
    clean = float((out.argmax(1) == y).float().mean())
    chance = 1.0 / out.shape[1]
    criterion = chance + (clean - chance) / 2
    bands, passes = [], n
    for centre in centres:
        acc = []
        for sigma in strengths:
            correct = 0
            for b, i in enumerate(range(0, n, batch_size)):
                xb = x01[i : i + batch_size]
                gen = torch.Generator(device=xb.device).manual_seed(
                    stable_seed(seed, "band", centre, b)
                )
                noise = band_noise(len(xb), h, w, centre, gen, xb.dtype)  # same noise per strength
                xn = from_unit((xb + sigma * noise).clamp(0, 1), data)
                with torch.no_grad():
                    correct += int((model(xn).argmax(1) == y[i : i + batch_size]).sum())
            acc.append(correct / n)
            passes += n
        thr, censored = threshold(strengths, acc, criterion)
        bands.append(
            {
                "centre": centre,
                "low": centre / math.sqrt(2),
                "high": centre * math.sqrt(2),
                "accuracy": acc,
                "threshold": thr,
                "sensitivity_db": -20 * math.log10(thr),
                "censored": censored,
            }
        )
    channel = fit_channel(
        [b["centre"] for b in bands],
        [b["sensitivity_db"] for b in bands],
        [b["censored"] for b in bands],
    )
    channel["criterion_accuracy"] = criterion
    return FrequencyResult(
        clean, tuple(strengths), tuple(bands), channel, passes, time.perf_counter() - start
    )
