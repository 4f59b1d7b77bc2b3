"""BEYOND: encoder training, relations, calibration, AUROC by hand, the evaluation with the
adaptive attack."""

import pytest
import torch

from robustlab.detect import Beyond, auroc, detection, relations, train_encoder
from robustlab.errors import RobustlabError


@pytest.fixture(scope="module")
def encoder(digits):
    from robustlab.data import load_digits_split

    return train_encoder(load_digits_split(train=True).subset(256), epochs=2, seed=0)


def test_auroc_by_hand():
    neg, pos = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.25, 0.4])
    assert auroc(neg, pos) == pytest.approx((2 + 3) / 6)
    assert auroc(torch.tensor([0.5]), torch.tensor([0.5])) == 0.5
    assert auroc(neg, torch.tensor([])) is None


def test_encoder_and_relations(mlp, digits, encoder):
    assert encoder.to_dict()["train_n"] == 256 and 0 <= encoder.head_accuracy <= 1
    rel = relations(mlp, encoder, digits.x[:5], 4, generator=torch.Generator().manual_seed(0))
    assert rel.label_consistency.shape == (5,) and bool((rel.score >= 0).all())
    assert bool(((rel.similarity >= -1 - 1e-6) & (rel.similarity <= 1 + 1e-6)).all())
    with pytest.raises(RobustlabError, match="k must"):
        relations(mlp, encoder, digits.x[:5], 0)


def test_calibrated_threshold_gives_the_false_positive_rate(mlp, digits, encoder):
    x = digits.x[:100]
    det = Beyond(mlp, encoder, k=4).calibrated(x, 0.1, seed=0)
    assert float(det.detect(x, seed=0).double().mean()) <= 0.1 + 1e-9
    with pytest.raises(RobustlabError, match="fpr"):
        det.calibrated(x, 1.0)


def test_detection_reports_each_attack_and_the_adaptive_one(mlp, digits, encoder):
    r = detection(mlp, digits.subset(40), digits, 0.1, attacks=["fgsm", "pgd"], k=4,
                  adaptive_steps=5, encoder=encoder)  # fmt: skip
    assert [row["attack"] for row in r.rows][:2] == ["fgsm", "pgd"]
    assert [row["adaptive"] for row in r.rows] == [False, False, True]
    for row in r.rows:
        assert 0 <= row["undetected_success_rate"] <= row["success_rate"] <= 1
        assert row["auroc"] is None or 0 <= row["auroc"] <= 1
    assert "adaptive attack" in r.note and r.to_dict()["encoder"]["train_n"] == 256
    assert {"pgd auroc", "pgd tpr@0.05fpr"} <= {m.name for m in r.metrics()}


def test_encoder_training_stops_at_its_time_limit(digits):
    from robustlab.data import load_digits_split

    enc = train_encoder(load_digits_split(train=True).subset(64), epochs=50, max_seconds=0.0)
    assert enc.epochs == 1  # one epoch always runs; the limit stops it after
