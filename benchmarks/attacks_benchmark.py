"""robustlab's attack suites side by side with torchattacks and the original AutoAttack code
(pyautoattack), on CPU (2 threads; BENCH_THREADS=1 for one).

Models: a standard and a PGD-adversarially-trained CNN on the bundled digits set, the MNIST conv
nets of the VeriVital benchmark (ONNX) on 100 MNIST test images, and zoo:vit when the zoo has it.
Columns: robustlab `standard` and `rapid` (MALT targeting) against AutoAttack's standard version
in pyautoattack (the original code) and in torchattacks (which ships it with 10 iterations per
gradient attack instead of 100), and robustlab `fast` against torchattacks' PGD-20. Every peer's
adversarial examples are re-checked here (plain forward pass, inside the threat model and the
data range). Runs are interleaved (a different column order in each repetition) and the table
shows medians; `rapid ok` says whether rapid's robust accuracy is at most pyautoattack's and its
time at most a third of it. Each result is appended to ``--out`` as it is produced; a rerun
resumes. A peer that cannot be imported is skipped. The peers live outside the repository, in
their own environment (torch==2.13.0, then `pip install --no-deps pyautoattack==0.2.0
torchattacks==3.5.1`): ``--peers`` (or BENCH_PEERS) names its site-packages folder, appended to
the import path (this environment's torch and robustlab come first).

    python benchmarks/attacks_benchmark.py [--shared ../shared] [--reps 3] [--out r.jsonl]
        [--peers /work/peers/attack-venv/lib/python3.11/site-packages] [--columns A,B]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

THREADS = int(os.environ.get("BENCH_THREADS", "2"))  # before torch starts its thread pool
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


COLUMNS = [
    "robustlab standard",
    "pyautoattack standard",
    "robustlab rapid",
    "torchattacks AutoAttack",
    "robustlab fast",
    "torchattacks PGD-20",
]


def runner(column, peers, model, data, eps, norm):
    """A function running ``column`` once: (robust accuracy re-checked here, wall seconds); None
    when the peer is missing."""
    threat = LpBall(norm, eps, data.lower, data.upper)
    x, y = data.x, data.y
    pnorm = "Linf" if norm == "inf" else "L2"
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[1])
    if column.startswith("robustlab"):
        suite = column.split()[1]

        def ours():
            res = evaluate(
                model, data, [eps], norm, suite=suite, batch_size=len(data), checks=False
            )
            parts = ", ".join(
                f"{r['attack']} {r['n_broken']}/{r['n_attacked']} {r['seconds']:.1f}s"
                for r in res.per_attack
            )
            return res.robust_accuracy, parts

        (acc, parts), s = timed(ours)
        return acc, s, parts
    ta, pa = peers.get("torchattacks"), peers.get("pyautoattack")
    if column == "pyautoattack standard" and pa is not None:
        import logging

        logging.getLogger("auto-attack").setLevel(logging.ERROR)
        aa = pa.AutoAttack(model, norm=pnorm, eps=eps, version="standard", seed=0)
        adv, s = timed(lambda: aa.run_standard_evaluation(x, y, batch_size=len(x))[0])
    elif column == "torchattacks AutoAttack" and ta is not None:
        aa = ta.AutoAttack(
            model, norm=pnorm, eps=eps, version="standard", n_classes=n_classes, seed=0
        )
        adv, s = timed(lambda: aa(x, y))
    elif column == "torchattacks PGD-20" and ta is not None:
        pgd_cls = ta.PGD if norm == "inf" else ta.PGDL2
        pgd = pgd_cls(model, eps=eps, alpha=2.5 * eps / 20, steps=20, random_start=True)
        torch.manual_seed(0)
        adv, s = timed(lambda: pgd(x, y))
    else:
        return None
    return recheck(model, data, adv, threat), s, ""


def done_keys(path: Path) -> dict:
    """Results already written (a rerun resumes where an interrupted one stopped)."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                out[(r["case"], r["column"], r["rep"])] = r
    return out


def table(results: list[dict], cases: list[str]) -> str:
    """Medians over the repetitions: robust accuracy (%) and seconds per column, the peers' time
    over robustlab's (standard and rapid against the AutoAttack peers, fast against PGD-20), and
    whether rapid meets its bar (robust accuracy <= pyautoattack's, time <= a third of it)."""
    head = (
        "| model | threat | "
        + " | ".join(COLUMNS)
        + " | pyaa / rl std | pyaa / rl rapid | ta AA / rl std | ta PGD-20 / rl fast | rapid ok |"
    )
    lines = [head, "|" + " --- |" * (len(COLUMNS) + 7)]
    for case in cases:
        rows = [r for r in results if r["case"] == case]
        if not rows:
            continue
        med, accs = {}, {}
        cells = []
        for col in COLUMNS:
            got = [r for r in rows if r["column"] == col]
            if not got:
                cells.append("n/a")
                continue
            acc = statistics.median(r["robust_accuracy"] for r in got)
            sec = statistics.median(r["seconds"] for r in got)
            med[col], accs[col] = sec, acc
            cells.append(f"{100 * acc:.2f}% / {sec:.1f} s")

        def ratio(peer, ours, med=med):
            return f"{med[peer] / med[ours]:.2f}x" if peer in med and ours in med else "n/a"

        ratios = [
            ratio("pyautoattack standard", "robustlab standard"),
            ratio("pyautoattack standard", "robustlab rapid"),
            ratio("torchattacks AutoAttack", "robustlab standard"),
            ratio("torchattacks PGD-20", "robustlab fast"),
        ]
        pa, ra = "pyautoattack standard", "robustlab rapid"
        ok = "n/a"
        if pa in med and ra in med:
            ok = "yes" if accs[ra] <= accs[pa] and 3 * med[ra] <= med[pa] else "NO"
        ratios.append(ok)
        threat = rows[0]["threat"]
        lines.append(f"| {case} | {threat} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def load_cases(shared: Path, cache: Path) -> list[tuple]:
    """(name, threat, model, data, eps, norm) for every benchmark case; the PGD-AT model is
    trained once and kept in ``cache``."""
    digits = load_digits_split(train=False)
    standard = zoo.pretrained("cnn")
    robust = zoo.build("cnn")
    if cache.exists():
        robust.load_state_dict(torch.load(cache, weights_only=True))
    else:
        print("PGD adversarial training of the digits CNN (Linf 0.1) ...", flush=True)
        robust, s = timed(lambda: adversarial_training("cnn", 0.1))
        print(f"  took {s:.1f} s", flush=True)
        torch.save(robust.state_dict(), cache)
    cases = [
        ("digits CNN", standard, digits, 0.1, "inf"),
        ("digits CNN PGD-AT", robust, digits, 0.1, "inf"),
        ("digits CNN", standard, digits, 0.5, "2"),
        ("digits CNN PGD-AT", robust, digits, 0.5, "2"),
    ]
    if "vit" in zoo.ARCHITECTURES:
        vit = zoo.pretrained("vit")
        cases += [("digits ViT", vit, digits, 0.1, "inf"), ("digits ViT", vit, digits, 0.5, "2")]
    verivital = shared / "benchmarks" / "verivital"
    mnist = shared / "datasets" / "mnist_test_100.csv"
    if verivital.exists() and mnist.exists():
        data = load_data(mnist, (1, 28, 28))
        for net in ("avgpool", "maxpool"):
            module = load_model(verivital / f"Convnet_{net}.onnx").module
            cases.append((f"MNIST Convnet_{net}", module, data, 0.04, "inf"))
            cases.append((f"MNIST Convnet_{net}", module, data, 1.0, "2"))
    else:
        print(f"(no VeriVital models or MNIST data under {shared}: skipped)")
    out = []
    for name, model, data, eps, norm in cases:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        out.append((f"{name} L{norm} {eps:g}", f"L{norm} {eps:g}", model, data, eps, norm))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parents[1]
    parser.add_argument("--shared", type=Path, default=here.parent / "shared")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (medians reported)")
    parser.add_argument(
        "--out", type=Path, default=Path("attacks_benchmark.jsonl"), help="results, one per line"
    )
    parser.add_argument(
        "--peers",
        default=os.environ.get("BENCH_PEERS"),
        help="site-packages folder of the peers' environment (appended to the import path)",
    )
    parser.add_argument(
        "--columns", default=",".join(COLUMNS), help="the columns to run, comma-separated"
    )
    parser.add_argument(
        "--cases",
        default="",
        help="run only the cases whose name contains one of these (comma-separated)",
    )
    args = parser.parse_args()
    columns = [c.strip() for c in args.columns.split(",") if c.strip()]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        parser.error(f"unknown columns {unknown}; known: {', '.join(COLUMNS)}")
    if args.peers:
        sys.path.append(args.peers)
    os.environ.setdefault("ROBUSTLAB_HOME", str(Path.home() / ".robustlab"))
    peers = import_peers()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"peers: {', '.join(peers) or 'none'}; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    cases = load_cases(args.shared, args.out.with_suffix(".pgdat.pt"))
    wanted = [w.strip() for w in args.cases.split(",") if w.strip()]
    if wanted:
        cases = [c for c in cases if any(w in c[0] for w in wanted)]
    done = done_keys(args.out)
    for rep in range(args.reps):
        for name, threat, model, data, eps, norm in cases:
            if rep == 0 and not any(k[0] == name for k in done):
                flags = evaluate(model, data, [eps], norm, suite="fast", batch_size=len(data)).flags
                print(f"{name}: flags {[f['name'] for f in flags]}", flush=True)
            k = rep % len(columns)
            for column in columns[k:] + columns[:k]:  # a different order each repetition
                if (name, column, rep) in done:
                    continue
                got = runner(column, peers, model, data, eps, norm)
                if got is None:
                    continue
                acc, s, parts = got
                rec = {
                    "case": name, "threat": threat, "column": column, "rep": rep,
                    "robust_accuracy": acc, "seconds": s, "n": len(data),
                    "threads": torch.get_num_threads(), "load": os.getloadavg()[0],
                    "detail": parts,
                }  # fmt: skip
                done[(name, column, rep)] = rec
                with args.out.open("a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(
                    f"[{rep}] {name:<28} {column:<24} robust {100 * acc:6.2f}%  {s:7.2f} s  "
                    f"load {rec['load']:.1f}  {parts}",
                    flush=True,
                )
    print()
    print(table(list(done.values()), [c[0] for c in cases]))


if __name__ == "__main__":
    main()
