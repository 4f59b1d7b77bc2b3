"""robustlab's attack suites side by side with torchattacks and the original AutoAttack code
(pyautoattack), on CPU.

Models: a standard and a PGD-adversarially-trained CNN on the bundled digits set, and the MNIST
conv nets of the VeriVital benchmark (ONNX) on 100 MNIST test images. Rows: robustlab `standard`
against AutoAttack's standard version in both peers (torchattacks ships it with 10 iterations
per gradient attack, so it also runs with the original budgets), and robustlab `fast` against the
peers' 20-step attacks (torchattacks PGD-20; pyautoattack has no PGD, its APGD-CE with 20
iterations stands in). Every peer's adversarial examples are re-checked here (plain forward pass,
inside the threat model and the data range). A peer that cannot be imported is skipped.

    python benchmarks/attacks_benchmark.py [--shared ../shared] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

THREADS = 2
torch.set_num_threads(THREADS)

from robustlab import load_data, load_model, zoo  # noqa: E402
from robustlab.attacks import PGD, evaluate  # noqa: E402
from robustlab.data import Dataset, load_digits_split  # noqa: E402
from robustlab.threat import LpBall  # noqa: E402


def import_peers() -> dict[str, object]:
    """torchattacks and pyautoattack, when importable. torchattacks is installed without its
    torchvision requirement; if it imports torchvision, a stub module stands in (this process
    only)."""
    peers: dict[str, object] = {}
    try:
        import torchattacks
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("torchvision"):
            sys.modules["torchvision"] = types.ModuleType("torchvision")
            try:
                import torchattacks
            except Exception:
                torchattacks = None
        else:
            torchattacks = None
    if torchattacks is not None:
        peers["torchattacks"] = torchattacks
    try:
        import pyautoattack

        peers["pyautoattack"] = pyautoattack
    except ImportError:
        pass
    return peers


def adversarial_training(arch: str = "cnn", eps: float = 0.1, epochs: int = 30) -> nn.Module:
    """PGD adversarial training (Madry et al. 2018) on the digits training split, deterministic."""
    data = load_digits_split(train=True)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = zoo.build(arch)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    attack = PGD(steps=7, step_size=2.5 * eps / 7)
    threat = LpBall("inf", eps)
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        for i in range(0, len(data), 64):
            idx = order[i : i + 64]
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            x_adv = attack(model, data.x[idx], data.y[idx], threat) if epoch >= 3 else data.x[idx]
            for p in model.parameters():
                p.requires_grad_(True)
            model.train()
            loss = nn.functional.cross_entropy(model(x_adv), data.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


def recheck(model: nn.Module, data: Dataset, x_adv: torch.Tensor, threat: LpBall) -> float:
    """Robust accuracy of given adversarial examples: a point is broken only if its example is
    inside the threat model and the data range and misclassified by a plain forward pass."""
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != data.y
    broken = wrong & threat.contains(data.x, x_adv, tol=1e-5)
    with torch.no_grad():
        correct = model(data.x).argmax(1) == data.y
    return float((correct & ~broken).float().mean())


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def peer_rows(
    peers, model, data, eps, norm, n_classes, quick
) -> list[tuple[str, str, float, float]]:
    """(row, peer, robust accuracy, seconds) for every peer attack."""
    rows = []
    threat = LpBall(norm, eps, data.lower, data.upper)
    x, y = data.x, data.y
    pnorm = "Linf" if norm == "inf" else "L2"
    ta = peers.get("torchattacks")
    if ta is not None:
        aa = ta.AutoAttack(
            model, norm=pnorm, eps=eps, version="standard", n_classes=n_classes, seed=0
        )
        adv, s = timed(lambda: aa(x, y))
        rows.append(
            (
                "standard",
                "torchattacks AutoAttack (shipped: 10 it.)",
                recheck(model, data, adv, threat),
                s,
            )
        )
        if not quick:
            full = ta.MultiAttack(
                [
                    ta.APGD(model, norm=pnorm, eps=eps, steps=100, n_restarts=1, loss="ce", seed=0),
                    ta.APGDT(model, norm=pnorm, eps=eps, steps=100, n_restarts=1, n_classes=n_classes, seed=0),
                    ta.FAB(model, norm=pnorm, eps=eps, steps=100, n_restarts=1, multi_targeted=True, n_classes=n_classes, seed=0),
                    ta.Square(model, norm=pnorm, eps=eps, n_queries=5000, n_restarts=1, resc_schedule=False, seed=0),
                ]
            )  # fmt: skip
            adv, s = timed(lambda: full(x, y))
            rows.append(
                (
                    "standard",
                    "torchattacks AutoAttack (100 it.)",
                    recheck(model, data, adv, threat),
                    s,
                )
            )
        pgd_cls = ta.PGD if norm == "inf" else ta.PGDL2
        pgd = pgd_cls(model, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)
        torch.manual_seed(0)
        adv, s = timed(lambda: pgd(x, y))
        rows.append(("fast", "torchattacks PGD-20", recheck(model, data, adv, threat), s))
    pa = peers.get("pyautoattack")
    if pa is not None:
        import logging

        logging.getLogger("auto-attack").setLevel(logging.ERROR)
        aa = pa.AutoAttack(model, norm=pnorm, eps=eps, version="standard", seed=0)
        adv, s = timed(lambda: aa.run_standard_evaluation(x, y, batch_size=len(x))[0])
        rows.append(("standard", "pyautoattack AutoAttack", recheck(model, data, adv, threat), s))
        from pyautoattack.autopgd_base import APGDAttack

        apgd = APGDAttack(model, n_iter=20, norm=pnorm, eps=eps, loss="ce", seed=0, device="cpu")
        adv, s = timed(lambda: apgd.perturb(x, y))
        rows.append(("fast", "pyautoattack APGD-CE (20 it.)", recheck(model, data, adv, threat), s))
    return rows


def benchmark(name, model, data, eps, norm, peers, quick) -> list[tuple]:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        n_classes = int(model(data.x[:1]).shape[1])
    out = []
    for suite in ("standard", "fast"):
        res, s = timed(
            lambda suite=suite: evaluate(model, data, [eps], norm, suite=suite, batch_size=len(data), checks=False)
        )  # fmt: skip
        out.append(
            (
                name,
                eps,
                norm,
                res.clean_accuracy,
                suite,
                f"robustlab {suite}",
                res.robust_accuracy,
                s,
            )
        )
        parts = ", ".join(
            f"{r['attack']} {r['n_broken']}/{r['n_attacked']} {r['seconds']:.1f}s"
            for r in res.per_attack
        )
        print(f"  robustlab {suite}: {parts}", flush=True)
    flags = evaluate(model, data, [eps], norm, suite="fast", batch_size=len(data)).flags
    for row, peer, acc, s in peer_rows(peers, model, data, eps, norm, n_classes, quick):
        out.append((name, eps, norm, None, row, peer, acc, s))
    for r in out:
        print(f"  {r[5]:<42} robust {100 * r[6]:6.2f}%  {r[7]:8.2f} s", flush=True)
    if flags:
        print("  flags:", ", ".join(f["name"] for f in flags))
    return out


def table(rows) -> str:
    lines = [
        "| model | eps | suite | attack | robust acc. (%) | seconds | robustlab speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for model, eps, norm, _clean, suite, who, acc, s in rows:
        ours = next(
            r for r in rows if r[0] == model and r[1] == eps and r[5] == f"robustlab {suite}"
        )
        ratio = "" if who.startswith("robustlab") else f"{s / ours[7]:.1f}x"
        lines.append(
            f"| {model} | L{norm} {eps:g} | {suite} | {who} | {100 * acc:.2f} | {s:.2f} | {ratio} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--shared", type=Path, default=here.parent / "shared")
    parser.add_argument("--quick", action="store_true", help="skip the slowest peer configuration")
    args = parser.parse_args()
    os.environ.setdefault("ROBUSTLAB_HOME", str(Path.home() / ".robustlab"))
    peers = import_peers()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; peers: {', '.join(peers) or 'none'}"
    )
    rows = []
    digits = load_digits_split(train=False)
    print("training the digits models (standard and PGD-AT at Linf 0.1) ...", flush=True)
    standard = zoo.train_digits("cnn", seed=0)
    robust, s = timed(lambda: adversarial_training("cnn", 0.1))
    print(f"  PGD-AT took {s:.1f} s")
    cases = [
        ("digits CNN", standard, digits, 0.1, "inf"),
        ("digits CNN PGD-AT", robust, digits, 0.1, "inf"),
        ("digits CNN PGD-AT", robust, digits, 0.5, "2"),
    ]
    verivital = args.shared / "benchmarks" / "verivital"
    mnist = args.shared / "datasets" / "mnist_test_100.csv"
    if verivital.exists() and mnist.exists():
        data = load_data(mnist, (1, 28, 28))
        for net in ("avgpool", "maxpool"):
            module = load_model(verivital / f"Convnet_{net}.onnx").module
            cases.append((f"MNIST Convnet_{net}", module, data, 0.04, "inf"))
    else:
        print(f"(no VeriVital models or MNIST data under {args.shared}: skipped)")
    for name, model, data, eps, norm in cases:
        print(f"{name}, L{norm} eps={eps:g}, {len(data)} points", flush=True)
        rows += benchmark(name, model, data, eps, norm, peers, args.quick)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
