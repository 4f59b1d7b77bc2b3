"""Level-set traversal and the shape-bias probe."""

import pytest
import torch
from torch import nn

from robustlab import zoo
from robustlab.blindspots import (
    cue_conflict,
    level_set_traversal,
    pairs,
    patch_shuffle,
    shape_bias,
)
from robustlab.errors import RobustlabError

from ..conftest import run_cli


@pytest.fixture(scope="module")
def cnn():
    return zoo.pretrained("cnn")


def test_traversal_goes_half_way_at_unchanged_prediction(cnn, digits):
    """Issue 21: on the zoo CNN the path ends at least half way to the target image with the
    prediction unchanged at every step (each accepted step is checked; re-checked here)."""
    s, t = pairs(digits.y, 12, seed=1)
    r = level_set_traversal(cnn, digits.x[s], digits.x[t], n_steps=150, snapshots=151)
    assert r.unchanged.all()
    assert (r.fraction >= 0.5).all(), r.fraction
    assert ((r.end_confidence - r.confidence).abs() <= 0.02 + 1e-6).all()
    with torch.no_grad():  # every recorded step: the source class, the input range
        preds = cnn(r.path.flatten(0, 1)).argmax(1).view(len(s), -1)
    assert (preds == r.source_class[:, None]).all()
    assert r.path.min() >= 0 and r.path.max() <= 1
    assert torch.equal(r.path[:, 0], digits.x[s])
    end = r.path[:, -1]
    torch.testing.assert_close(r.l2, (end - digits.x[s]).flatten(1).norm(dim=1))
    assert (r.target_class != r.source_class).any()


def test_traversal_on_a_linear_model_is_exact():
    """A linear score: the orthogonal step never changes the logits' margin."""
    lin = nn.Linear(4, 2, bias=False)
    lin.weight.data = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    src = torch.tensor([[0.8, 0.1, 0.1, 0.1]])
    tgt = torch.tensor([[0.8, 0.9, 0.9, 0.9]])  # the same first coordinate: reachable
    r = level_set_traversal(lin, src, tgt, n_steps=50, step=1.0)
    assert r.fraction.item() > 0.99 and r.unchanged.all()


def test_traversal_bad_input(cnn, digits):
    with pytest.raises(RobustlabError, match="one shape"):
        level_set_traversal(cnn, digits.x[:2], digits.x[:3])
    with pytest.raises(RobustlabError, match="0 < step <= 1"):
        level_set_traversal(cnn, digits.x[:2], digits.x[2:4], step=2.0)
    with pytest.raises(RobustlabError, match="two classes"):
        pairs(torch.zeros(5, dtype=torch.long), 3)


def test_patch_shuffle_keeps_the_tiles():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    y = patch_shuffle(x, 2, torch.Generator().manual_seed(0))
    tiles = lambda a: sorted(a.unfold(2, 2, 2).unfold(3, 2, 2).permute(0, 2, 3, 1, 4, 5)  # noqa: E731
                             .reshape(2, 4, -1)[0].tolist())  # fmt: skip
    assert tiles(x) == tiles(y) and not torch.equal(x, y)
    with pytest.raises(RobustlabError, match="patch must divide"):
        patch_shuffle(x, 3, torch.Generator())
    mixed = cue_conflict(x, x, 4, 0.25, torch.Generator())  # one tile: nothing moves
    torch.testing.assert_close(mixed, x)


def test_shape_bias_counts(cnn, digits):
    r = shape_bias(cnn, digits.x, digits.y, n_pairs=200, seed=0)
    d = r.to_dict()
    assert d["shape_decisions"] + d["texture_decisions"] + d["other_decisions"] == 200
    assert 0.5 < d["shape_bias"] <= 1  # digits are shapes: the CNN follows them
    assert r.examples.shape == (4, 3, 1, 8, 8)
    assert [m.name for m in r.metrics()] == ["shape_bias"]
    with pytest.raises(RobustlabError, match=r"alpha must lie in \(0, 1\)"):
        shape_bias(cnn, digits.x, digits.y, alpha=1.0)


def test_blindspots_command(monkeypatch, capsys, tmp_path):
    out = tmp_path / "bs.json"
    code, stdout, _ = run_cli(monkeypatch, capsys, "blindspots", "--model", "zoo:cnn", "--data",
                              "digits", "--pairs", "3", "--steps", "30", "--shape-pairs", "50",
                              "--out", out)  # fmt: skip
    assert code == 0, stdout
    assert "prediction unchanged on 3 of 3 paths" in stdout and "shape bias" in stdout
    html = (tmp_path / "bs.html").read_text()
    assert "Level-set traversal" in html and html.count("data:image/png") >= 2
    code, _, err = run_cli(monkeypatch, capsys, "blindspots", "--model", "zoo:cnn", "--data",
                           "digits", "--tol", "-1", "--out", out)  # fmt: skip
    assert code == 2 and "tol > 0" in err
