"""What ``robustlab detect`` does: load, train the encoder, measure the detector, assemble the
report."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from robustlab.data import Dataset, load_data, load_digits_split
from robustlab.detect.evaluate import ATTACKS, detection
from robustlab.errors import RobustlabError
from robustlab.jobs.common import check_eps, prepare, report_head
from robustlab.threat import parse_norm

Progress = Callable[[str], None]


def _halves(data: Dataset) -> tuple[Dataset, Dataset]:
    h = len(data) // 2
    name = data.name
    return (Dataset(f"{name} (encoder half)", data.x[:h], data.y[:h], data.lower, data.upper),
            Dataset(f"{name} (evaluation half)", data.x[h:], data.y[h:], data.lower, data.upper))  # fmt: skip


def detect_job(
    model_src,
    data_src,
    eps: float,
    norm: str = "inf",
    *,
    train_data=None,
    attacks: str | Sequence[str] = ATTACKS,
    k: int = 16,
    fpr: float = 0.05,
    encoder_epochs: int = 40,
    adaptive_steps: int = 50,
    n: int | None = None,
    seed: int = 0,
    device="cpu",
    progress: Progress | None = None,
) -> dict:
    """BEYOND on a model (``robustlab.detect.detection``). The encoder is trained on
    ``train_data``; by default on the digits training split for ``digits``, else on the first
    half of the data (the second half is then evaluated). Keys ``rows``, ``note``, ``encoder``,
    ``threshold``, ``metrics``."""
    (eps,) = check_eps([eps])
    norm = parse_norm(norm)
    names = (
        [a for a in attacks.split(",") if a.strip()] if isinstance(attacks, str) else list(attacks)
    )
    if not names:
        raise RobustlabError("attacks must name at least one attack")
    if encoder_epochs < 1 or adaptive_steps < 1:
        raise RobustlabError(f"encoder_epochs and adaptive_steps must be >= 1; found "
                             f"{encoder_epochs}, {adaptive_steps}")  # fmt: skip
    model, data = prepare(model_src, data_src, n, device)
    if train_data is not None:
        enc_data = load_data(train_data, model.input_shape)
    elif str(data_src) == "digits":
        enc_data = load_digits_split(train=True)
    else:
        enc_data, data = _halves(data)
    if model.input_shape is not None:
        enc_data = enc_data.matched_to(model.input_shape)
    enc_data = enc_data.to(data.x.device)
    result = detection(model.module, data, enc_data, eps, norm, attacks=names, k=k, fpr=fpr,
                       encoder_epochs=encoder_epochs, adaptive_steps=adaptive_steps, seed=seed,
                       progress=progress)  # fmt: skip
    settings = {
        "eps": eps, "norm": norm, "attacks": names, "k": k, "fpr": fpr,
        "encoder_epochs": encoder_epochs, "adaptive_steps": adaptive_steps, "seed": seed,
        "encoder_data": enc_data.name,
    }  # fmt: skip
    report = report_head("detect", model, data, settings)
    report.update(result.to_dict())
    report["metrics"] = result.metric_dicts()
    return report
