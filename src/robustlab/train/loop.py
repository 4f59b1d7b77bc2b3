"""The training loop shared by every method: eps schedule, Adam with cosine decay (or SGD with step
decay), a log entry per epoch (loss, clean / robust / certified accuracy), and for fast
adversarial training the catastrophic-overfitting check of Wong et al. 2020 (arXiv:2001.03994)."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from robustlab.attacks.base import Counted
from robustlab.data import Dataset
from robustlab.errors import RobustlabError
from robustlab.results import Metric
from robustlab.threat import LpBall
from robustlab.train.adversary import pgd
from robustlab.train.certified import check_trainable, margin_lower_bounds
from robustlab.train.init import ibp_init
from robustlab.train.methods import StepContext, get_method, is_certified
from robustlab.train.schedule import EpsSchedule, default_schedule

OVERFIT_DROP = 0.2  # Wong et al.: stop when PGD accuracy on a training batch falls this far
CHECK_N = 256  # examples for the per-epoch evaluation and the overfitting check
OPTIMIZERS = ("adam", "sgd")
SELECTS = ("last", "best")  # which epoch's weights train() returns
SGD_MOMENTUM, SGD_DECAY = 0.9, 1e-4  # the step schedule of Madry et al. and Lamb et al.


def make_optimizer(name: str, params, lr: float, epochs: int):
    """``"adam"``: Adam with cosine decay over the epochs; ``"sgd"``: SGD with momentum 0.9 and
    weight decay 1e-4, the rate divided by 10 at half and at three quarters of the epochs (the
    schedule of Madry et al. 2018 and Lamb et al. 2019: 100 and 150 of 200). (optimizer, the
    scheduler stepped once per epoch)."""
    if name == "adam":
        opt = torch.optim.Adam(params, lr=lr)
        return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    if name == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=SGD_MOMENTUM, weight_decay=SGD_DECAY)
        steps = sorted({max(1, epochs // 2), max(1, 3 * epochs // 4)})
        return opt, torch.optim.lr_scheduler.MultiStepLR(opt, steps, 0.1)
    raise RobustlabError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; found {name!r}")


@dataclass(frozen=True)
class TrainResult:
    """A finished training run: the per-epoch log and its cost (the model is trained in place)."""

    method: str
    eps: float
    epochs: int  # epochs run (fewer than asked when fast-AT stopped at catastrophic overfitting)
    schedule: dict
    log: list[dict]  # per epoch
    flags: list[dict]
    seconds: float
    n_forward: int  # per-example forward passes through the model
    n_backward: int
    n_bounded: int  # per-example bound computations (certified training)
    best_epoch: int | None = None  # the epoch whose weights were kept (fast-AT), else the last
    hyperparameters: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def metrics(self) -> list[Metric]:
        """Per epoch: the loss and clean / robust / certified accuracy (null where not
        evaluated), named ``<method> <key>@epoch <e>``."""
        keys = {"loss": False, "clean_accuracy": True, "robust_accuracy": True,
                "certified_accuracy": True}  # fmt: skip
        return [Metric(f"{e['method']} {key}@epoch {e['epoch']}", e.get(key), higher)
                for e in self.log for key, higher in keys.items()]  # fmt: skip


def _batched_accuracy(model, x, y, fn, batch_size=256) -> float:
    if len(y) == 0:
        return float("nan")
    hits = [
        fn(model, x[i : i + batch_size], y[i : i + batch_size])
        for i in range(0, len(y), batch_size)
    ]
    return float(torch.cat(hits).float().mean())


def evaluate_epoch(model: nn.Module, data: Dataset, eps: float, seed: int = 0) -> dict:
    """Quick per-epoch evaluation at the target eps: clean accuracy, PGD-10 robust accuracy and
    IBP certified accuracy (training-time numbers; the final ones use the attack suite and the
    sound bound engine)."""
    gen = torch.Generator().manual_seed(seed)
    threat = LpBall("inf", eps, data.lower, data.upper)
    with torch.no_grad():
        k = int(model(data.x[:1]).shape[1])

    def clean(m, x, y):
        with torch.no_grad():
            return m(x).argmax(1) == y

    def robust(m, x, y):
        xa = pgd(m, x, y, threat, steps=10, generator=gen)
        with torch.no_grad():
            return m(xa).argmax(1) == y

    def certified(m, x, y):
        lo, hi = threat.box(x)
        with torch.no_grad():
            lb = margin_lower_bounds(m, lo, hi, y, k)
        own = nn.functional.one_hot(y, lb.shape[1]).bool()
        return ((lb > 0) | own).all(1)

    out = {"clean_accuracy": _batched_accuracy(model, data.x, data.y, clean)}
    out["robust_accuracy"] = _batched_accuracy(model, data.x, data.y, robust)
    try:
        out["certified_accuracy"] = _batched_accuracy(model, data.x, data.y, certified)
    except RobustlabError:  # a model the bound engine does not support: no training-time number
        out["certified_accuracy"] = None
    return out


def _mean(values: list[torch.Tensor]) -> float | None:
    return float(torch.cat(values).float().mean()) if values else None


def train(
    model: nn.Module,
    data: Dataset,
    method: str | object = "standard",
    eps: float = 0.0,
    *,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 1e-2,
    seed: int = 0,
    schedule: EpsSchedule | None = None,
    init: str = "auto",
    eval_data: Dataset | None = None,
    grad_clip: float | None = 10.0,
    optimizer: str = "adam",
    on_epoch: Callable[[dict], None] | None = None,
    select: str = "last",
    val_data: Dataset | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` with a registered ``method`` at Linf radius ``eps``.

    ``init``: "auto" (IBP initialisation for certified methods, Shi et al. 2021; orthogonal for
    lipschitz; the weights as they are otherwise), "ibp", or "keep". A method with ``prepare`` /
    ``finish`` (lipschitz) turns the model's layers into its own before training and back into
    plain layers holding the trained weights after. ``schedule`` defaults to a short warm-up and
    a smooth ramp for certified methods and the target eps from the start for the others. After
    each epoch the model is evaluated on up to 256 examples of ``eval_data`` (default: the
    training data), the entry appended to the log and passed to ``on_epoch`` (to save it as it
    is produced). ``optimizer``: ``"adam"`` (cosine decay) or ``"sgd"`` (momentum, step decay;
    see :func:`make_optimizer`). ``select``: ``"last"`` keeps the last epoch's weights;
    ``"best"`` the epoch with the highest PGD-10 accuracy at ``eps`` on ``val_data`` (a split held
    out of the training data, never the test set; ties to the higher clean accuracy, then the
    earlier epoch: the early stopping of Rice et al. 2020, arXiv:2002.11569), the same rule for
    every method; the log entries get ``val_clean_accuracy`` / ``val_robust_accuracy``.
    """
    if isinstance(method, str):
        method = get_method(method)
    name = getattr(method, "name", type(method).__name__)
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise RobustlabError(
            f"expected epochs >= 1, batch size >= 1 and lr > 0; found {epochs}, {batch_size}, {lr}"
        )
    LpBall("inf", eps)  # validates eps
    if len(data) == 0:
        raise RobustlabError(f"training data '{data.name}' is empty")
    schedule = schedule or default_schedule(name, eps, epochs)
    certified = is_certified(method)
    if certified:
        check_trainable(model)
    if optimizer not in OPTIMIZERS:
        raise RobustlabError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}; found {optimizer!r}"
        )
    if select not in SELECTS:
        raise RobustlabError(f"select must be one of {', '.join(SELECTS)}; found {select!r}")
    if select == "best" and (val_data is None or len(val_data) == 0):
        raise RobustlabError("select 'best' chooses the epoch on held-out data: expected val_data")
    if init not in ("auto", "ibp", "keep"):
        raise RobustlabError(f"init must be auto, ibp or keep; found {init!r}")
    gen = torch.Generator().manual_seed(seed)
    if init == "ibp" or (init == "auto" and certified):
        ibp_init(model, generator=gen)
    if hasattr(method, "prepare"):  # a method with its own layers (lipschitz): in place
        method.prepare(model, data.x[:2], gen, keep_weights=init != "auto")
    num_classes = _num_classes(model, data)
    check = (eval_data or data).subset(CHECK_N)
    train_check = Dataset(data.name, data.x[:CHECK_N], data.y[:CHECK_N], data.lower, data.upper)
    opt, sched = make_optimizer(optimizer, model.parameters(), lr, epochs)
    counted = Counted(model)
    steps_per_epoch = math.ceil(len(data) / batch_size)
    log: list[dict] = []
    n_bounded = 0
    flags: list[dict] = []
    best_state, best_check, best_epoch = None, -1.0, None
    chosen: tuple[tuple[float, float], int, dict] | None = None  # (key, epoch, state) for "best"
    start = time.perf_counter()
    was_training = model.training
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(data), generator=gen)
        losses, clean, robust, cert = [], [], [], []
        for s in range(steps_per_epoch):
            idx = order[s * batch_size : (s + 1) * batch_size]
            x, y = data.x[idx], data.y[idx]
            e = schedule(epoch + s / steps_per_epoch)
            ctx = StepContext(
                e, schedule.progress(epoch + s / steps_per_epoch), data.lower, data.upper,
                num_classes, gen, model,
            )  # fmt: skip
            out = method.step(counted, x, y, ctx)
            opt.zero_grad()
            out.loss.backward()
            if grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            losses.append(float(out.loss.detach()) * len(y))
            clean.append(out.clean_correct)
            if out.robust_correct is not None:
                robust.append(out.robust_correct)
            if out.certified is not None:
                cert.append(out.certified)
                n_bounded += len(y)
        sched.step()
        model.eval()
        entry = {
            "method": name,
            "epoch": epoch + 1,
            "eps": schedule(epoch + 1 - 1e-9),
            "lr": opt.param_groups[0]["lr"],
            "loss": sum(losses) / len(data),
            "train_clean_accuracy": _mean(clean),
            "train_robust_accuracy": _mean(robust),
            "train_certified_accuracy": _mean(cert),
            **evaluate_epoch(_plain(method, model), check, eps, seed),
        }
        stop = False
        if getattr(method, "watch_overfitting", False) and eps > 0:
            value = evaluate_epoch(model, train_check, eps, seed)["robust_accuracy"]
            entry["overfitting_check"] = value
            if value > best_check:
                best_check, best_epoch = value, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
            elif value < best_check - OVERFIT_DROP:
                flags.append(_overfit_flag(epoch + 1, value, best_check, best_epoch))
                stop = True
        if select == "best":
            val = evaluate_epoch(_plain(method, model), val_data, eps, seed)
            entry["val_clean_accuracy"] = val["clean_accuracy"]
            entry["val_robust_accuracy"] = val["robust_accuracy"]
            key = (val["robust_accuracy"], val["clean_accuracy"])
            if chosen is None or key > chosen[0]:
                chosen = (key, epoch + 1, copy.deepcopy(model.state_dict()))
        entry["seconds"] = time.perf_counter() - t0
        log.append(entry)
        if on_epoch:
            on_epoch(entry)
        if stop:
            break
    if best_state is not None and flags:
        model.load_state_dict(best_state)  # in place: cached bound graphs keep working
    elif chosen is not None:
        model.load_state_dict(chosen[2])
        best_epoch = chosen[1]
    if hasattr(method, "finish"):
        method.finish(model)  # plain layers holding the trained weights
    model.train(was_training)
    return TrainResult(
        method=name,
        eps=eps,
        epochs=len(log),
        schedule=schedule.to_dict(),
        log=log,
        flags=flags,
        seconds=time.perf_counter() - start,
        n_forward=counted.n_forward,
        n_backward=counted.n_backward,
        n_bounded=n_bounded,
        best_epoch=best_epoch if flags or chosen is not None else len(log),
        hyperparameters={
            **asdict(method),
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "optimizer": optimizer,
            "seed": seed,
            "init": init,
            "grad_clip": grad_clip,
            "select": select,
        },
    )


def hold_out(data: Dataset, share: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A fixed random split of ``data`` into (training, held-out ``share``) for ``select="best"``
    (the same split for every method of a comparison with the same ``seed``)."""
    if not 0 < share < 1:
        raise RobustlabError(f"held-out share must be in (0, 1); found {share}")
    cut = len(data) - max(1, round(len(data) * share))
    if cut < 1:
        raise RobustlabError(f"data '{data.name}' has {len(data)} examples; too few to hold out")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))

    def part(idx: torch.Tensor, suffix: str) -> Dataset:
        return Dataset(f"{data.name}{suffix}", data.x[idx], data.y[idx], data.lower, data.upper)

    return part(order[:cut], ""), part(order[cut:], f" (held-out {share:.0%})")


def _plain(method, model: nn.Module) -> nn.Module:
    """The model as plain layers for evaluation: a finished copy for methods with their own
    layers (cached bound graphs would hold a snapshot of parametrized weights)."""
    if not hasattr(method, "finish"):
        return model
    plain = copy.deepcopy(model)
    method.finish(plain)
    return plain.eval()


def _overfit_flag(epoch: int, value: float, best: float, best_epoch: int | None) -> dict:
    return {
        "name": "catastrophic_overfitting",
        "message": (
            f"PGD accuracy on a training batch fell to {value:.3f} at epoch {epoch} from "
            f"{best:.3f} at epoch {best_epoch}: catastrophic overfitting (Wong et al. 2020); "
            f"stopped and kept the weights of epoch {best_epoch}"
        ),
        "value": value,
    }


def _num_classes(model: nn.Module, data: Dataset) -> int:
    with torch.no_grad():
        k = int(model(data.x[:2]).shape[1])
    if data.num_classes > k:
        raise RobustlabError(
            f"data '{data.name}' has labels up to {data.num_classes - 1} but the model has {k} outputs"
        )
    return k
