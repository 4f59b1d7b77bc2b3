"""Small transformations: exact shifts and rotations, crop mode never fills, and the metrics."""

import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab.corruptions.transforms import evaluate_transformations, resolve_border, warp
from robustlab.data import Dataset, load_digits_split
from robustlab.errors import RobustlabError


def test_warp_is_exact_for_identity_shifts_and_quarter_turns():
    x = torch.rand(2, 3, 6, 6)
    assert torch.allclose(warp(x), x, atol=1e-6)
    right = warp(x, shift=(0, 1), border="zero")
    assert (
        torch.allclose(right[..., 1:], x[..., :-1], atol=1e-6) and right[..., 0].abs().max() < 1e-6
    )
    down = warp(x, shift=(2, 0), border="replicate")
    assert torch.allclose(down[..., 2:, :], x[..., :-2, :], atol=1e-6)
    assert torch.allclose(down[..., 0, :], x[..., 0, :], atol=1e-6)
    assert torch.allclose(warp(x, angle=90, border="zero"), x.transpose(-2, -1).flip(-2), atol=1e-5)


def test_crop_mode_resamples_only_inside_the_image():
    # a frame of ones around zeros: any fill from outside would be visible as a wrong value
    x = torch.zeros(1, 1, 40, 40)
    x[..., :, 0] = x[..., :, -1] = x[..., 0, :] = x[..., -1, :] = 1
    for angle in (3, 10, -7):
        out = warp(x, angle=angle, border="crop")
        assert out.max() <= 1 and out.min() >= 0
        # the view is strictly inside the frame: it can not touch the border pixels' centres much
        assert out[..., 1:-1, 1:-1].max() < 0.9
    assert resolve_border("auto", (1, 32, 32)) == "crop"
    assert resolve_border("auto", (1, 8, 8)) == "reflect"
    with pytest.raises(RobustlabError, match="border must be one of"):
        resolve_border("wrap", (1, 8, 8))


class Mean(nn.Module):
    """Predicts from the mean intensity only: invariant to shifts in reflect mode? no; constant."""

    def forward(self, x):
        return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([3]), 1.0)


def test_metrics_of_a_constant_and_of_the_zoo_cnn():
    data = load_digits_split(train=False).subset(80)
    r = evaluate_transformations(Mean(), data, max_shift=1)
    acc = float((data.y == 3).float().mean())
    for f in r.families:
        assert f["consistency"] == 1.0 and f["worst_case_accuracy"] == pytest.approx(acc)
        assert all(v["changed"] == 0.0 for v in f["views"])
    assert [len(f["views"]) for f in r.families] == [8, 6, 4]
    cnn = zoo.pretrained("cnn")
    r = evaluate_transformations(cnn, data)
    for f in r.families:
        assert 0 <= f["worst_case_accuracy"] <= min(v["accuracy"] for v in f["views"])
        assert f["worst_case_accuracy"] <= f["reference_accuracy"]
        assert 0 <= f["consistency"] <= 1
    big = Dataset("rgb", torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    assert evaluate_transformations(Mean(), big, max_shift=2).border == "crop"
    with pytest.raises(RobustlabError, match="max shift must be"):
        evaluate_transformations(Mean(), data, max_shift=4)
