"""What each command prints (application layer): a report dict in, the terminal's tables and lines
out, so ``cli.py`` only parses options, calls a job and prints what it gets here. Only ``rich``
is imported (``robustlab --help`` and ``runs list`` must not load torch).

A presenter returns a list of items: a ``rich`` table, a ``str`` for stdout (printed as rich
prints it), or a ``Note`` for stderr (warnings, notes; printed verbatim, one line)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.table import Table


@dataclass(frozen=True)
class Note:
    """One line for stderr (a warning, a note, a verdict sentence)."""

    text: str


Item = Table | str | Note


def fmt(v, spec: str = ".3g") -> str:
    """A number, or '-' for none."""
    return "-" if v is None else format(v, spec)


def flags(report: dict) -> list[Note]:
    """A stderr line per flag of the report."""
    return [Note(f"warning: {f.get('message', f)}") for f in report.get("flags", [])]


def curve_table(report: dict) -> Table:
    """eps against robust and / or certified accuracy."""
    table = Table(
        title=f"{report['model']['name']} on {report['data']['name']} "
        f"(clean accuracy {report['clean_accuracy']:.3f})"
    )
    keys = [k for k in ("robust_accuracy", "certified_accuracy") if k in report["curve"][0]]
    table.add_column("eps", justify="right")
    for k in keys:
        table.add_column(k.replace("_", " "), justify="right")
    for p in report["curve"]:
        table.add_row(f"{p['eps']:g}", *[f"{p[k]:.3f}" for k in keys])
    return table


def attack(report: dict) -> list[Item]:
    return [curve_table(report), *flags(report)]


def corrupt(report: dict) -> list[Item]:
    title = f"{report['model']['name']} on {report['data']['name']}"
    table = Table(
        "corruption",
        "accuracy",
        "CE",
        title=f"{title} (clean accuracy {report['clean_accuracy']:.3f})",
    )
    for p in report["per_corruption"]:
        ce = "-" if p["ce"] is None else f"{p['ce']:.3f}"
        table.add_row(p["corruption"], f"{p['accuracy']:.3f}", ce)
    mce = "" if report["mce"] is None else f", mCE {report['mce']:.3f}"
    return [table, f"mean corruption accuracy {report['mean_corruption_accuracy']:.3f}{mce}"]


def certify(report: dict) -> list[Item]:
    items: list[Item] = [curve_table(report)]
    if len(report["per_method"]) > len(report["curve"]):
        table = Table("method", "eps", "certified accuracy", "seconds", title="per method")
        for r in report["per_method"]:
            table.add_row(r["method"], f"{r['eps']:g}", f"{r['certified_accuracy']:.3f}",
                          f"{r['seconds']:.2f}")  # fmt: skip
        items.append(table)
    for p in (report.get("proof_features") or {}).get("points", []):
        found = ", ".join(map(str, p["features"])) or "none (the head's bias terms alone)"
        items.append(f"input {p['index']}: proof features {found} of {p['n_neurons']} neurons "
                     f"in {p['layer']}")  # fmt: skip
    return items


def explain(report: dict) -> list[Item]:
    return [
        f"{report['settings']['method']} on {len(report['attributions'])} inputs: "
        f"{report['n_forward']} forward, {report['n_backward']} backward passes, "
        f"{report['seconds']:.2f} s"
    ]


def verify_benchmark(summary: dict, instances) -> list[Item]:
    """The answers' counts, the time, and the wrong answers when expected ones were given."""
    table = Table("answer", "count", title=f"{instances} ({summary['instances']} instances)")
    for k, v in sorted(summary["counts"].items()):
        table.add_row(k, str(v))
    items: list[Item] = [
        table,
        f"total {summary['total_seconds']:.1f} s, median {summary['median_seconds']:.2f} s "
        "per instance",
    ]
    if "wrong" in summary:
        items.append(f"wrong answers: {summary['wrong']}")
        items += [f"  WRONG: {w}" for w in summary["wrong_instances"]]
    return items


def train(report: dict) -> list[Item]:
    l2 = report["settings"].get("l2_eps")
    columns = ["method", "clean", "robust", "certified", "train s"]
    columns[4:4] = ["robust L2", "certified L2"] if l2 is not None else []
    title = f"Linf eps {report['settings']['eps']:g}" + (f", L2 {l2:g}" if l2 is not None else "")
    table = Table(*columns, title=title)
    for r in report["comparison"]:
        keys = ["clean_accuracy", "robust_accuracy", "certified_accuracy"]
        keys += ["robust_l2_accuracy", "certified_l2_accuracy"] if l2 is not None else []
        table.add_row(r["method"], *(f"{r[k]:.3f}" for k in keys), f"{r['train_seconds']:.1f}")
    items: list[Item] = [table]
    if report.get("training_certificate"):
        c = report["training_certificate"]
        items.append(
            f"FullCert: {c['certified_share']:.3f} of {c['n']} test predictions certified "
            f"against training data moved by {c['delta']:g} per feature"
        )
    return items + flags(report)


def smooth(report: dict) -> list[Item]:
    items: list[Item] = []
    if report.get("availability"):
        av = report["availability"]
        t = Table("inputs", "abstain", "no certificate", "accuracy", title=(
            f"availability attack, {av['norm']} eps {av['eps']:g}"))  # fmt: skip
        for cond in ("clean", "attacked"):
            d = av[cond]
            t.add_row(cond, *(f"{d[k]:.3f}" for k in ("abstain_rate", "uncertified_rate",
                                                     "accuracy")))  # fmt: skip
        items.append(t)
    table = Table("L2 radius", "certified accuracy", title=(
        f"smoothed clean accuracy {report['clean_accuracy']:.3f}, "
        f"abstain rate {report['abstain_rate']:.3f}"
    ))  # fmt: skip
    for p in report["curve"]:
        table.add_row(f"{p['radius']:g}", f"{p['certified_accuracy']:.3f}")
    return [*items, table]


def sensitivity(report: dict) -> list[Item]:
    table = Table("layer", "params", "Hessian trace (95% CI)", "top eigenvalue", "Fisher trace",
                  title=f"{report['model']['name']} on {report['data']['name']} "
                  f"(clean accuracy {report['clean_accuracy']:.3f})")  # fmt: skip
    for r in report["layers"]:
        lo, hi = r["hessian_trace_ci"]
        ci = "" if lo is None else f" ({lo:.3g}..{hi:.3g})"
        table.add_row(r["name"] or "(model)", str(r["parameters"]), f"{r['hessian_trace']:.3g}{ci}",
                      fmt(r["top_eigenvalue"]), fmt(r["fisher_trace"]))  # fmt: skip
    return [table] + [
        f"Spearman rank correlation, Hessian trace vs measured {c['format']} loss increase "
        f"per layer: {fmt(c['trace_vs_loss_increase'], '.2f')}"
        for c in report["correlations"]
    ]


def prune(report: dict) -> list[Item]:
    table = Table("method", "sparsity", "clean", "robust", "certified", "train s",
                  title=f"{report['settings']['structure']} pruning, "
                  f"Linf eps {report['eps']:g}")  # fmt: skip
    d = report["dense"]
    table.add_row("dense", "0", f"{d['clean_accuracy']:.3f}", f"{d['robust_accuracy']:.3f}",
                  f"{d['certified_accuracy']:.3f}", "-")  # fmt: skip
    for r in report["rows"]:
        table.add_row(r["method"], f"{r['sparsity']:.3f}", f"{r['clean_accuracy']:.3f}",
                      f"{r['robust_accuracy']:.3f}", f"{r['certified_accuracy']:.3f}",
                      f"{r['train_seconds']:.1f}")  # fmt: skip
    return [table, *flags(report)]


_ACC = ("clean_accuracy", "robust_accuracy", "certified_accuracy")


def patch(report: dict) -> list[Item]:
    table = Table("model / scale", "clean", "robust", "certified",
                  title=f"patched layers {', '.join(report['layers'])}; "
                  f"Linf eps {report['eps']:g}")  # fmt: skip
    for name in ("standard", "robust", "target"):
        table.add_row(name, *[f"{report[name][k]:.3f}" for k in _ACC])
    for r in report["rows"]:
        table.add_row(f"A = {r['scale']:g}", *[f"{r[k]:.3f}" for k in _ACC])
    return [table]


def mix(report: dict) -> list[Item]:
    table = Table("mixture", "alpha", "scale", "power", "bias", "clean", "robust",
                  title=f"{report['norm']} eps {report['eps']:g}, "
                  f"{report['n_eval']} held-out examples")  # fmt: skip
    for i, r in enumerate(report["frontier"]):
        t = r["transform"] or {}
        mark = " *" if i == report["chosen"] else ""
        table.add_row(r["name"] + mark, f"{r['alpha']:.3f}",
                      *(f"{t[k]:g}" if k in t else "-" for k in ("scale", "power", "bias")),
                      f"{r['clean_accuracy']:.3f}", f"{r['robust_accuracy']:.3f}")  # fmt: skip
    return [table] + ([Note(f"note: {report['note']}")] if report.get("note") else [])


def conformal(report: dict) -> list[Item]:
    table = Table("method", "condition", "coverage", "mean size",
                  title=f"alpha {report['alpha']:g}, {report['norm']} eps {report['eps']:g}, "
                  f"{report['n_test']} test examples")  # fmt: skip
    for r in report["rows"]:
        table.add_row(r["method"], r["condition"], f"{r['coverage']:.3f}", f"{r['mean_size']:.2f}")
    return [table]


def detect(report: dict) -> list[Item]:
    table = Table("attack", "fools", "AUROC", f"TPR@{report['fpr']:g}", "fools + passes",
                  title=f"{report['norm']} eps {report['eps']:g}, {report['n_clean']} inputs")  # fmt: skip
    for r in report["rows"]:
        table.add_row(r["attack"], f"{r['success_rate']:.3f}", fmt(r["auroc"]),
                      fmt(r["tpr"]), f"{r['undetected_success_rate']:.3f}")  # fmt: skip
    return [table, Note(f"verdict: {report['note']}")]


def repair(report: dict) -> list[Item]:
    r = report["repair"]
    acc = ""
    if r["accuracy_before"] is not None:
        acc = f"; accuracy {r['accuracy_before']:.4f} -> {r['accuracy_after']:.4f}"
    kept = report.get("decisions_kept")
    if kept and kept["n"]:
        acc += (f"; decisions kept outside the properties (of {kept['n']} samples): largest "
                f"output {kept['argmax']:.4f}, smallest {kept['argmin']:.4f}")  # fmt: skip
    return [
        f"{r['holds_before']} -> {r['holds_after']} of {r['n_properties']} properties hold "
        f"(fixed {r['fixed']}, violated after {r['violated_after']}){acc}"
    ]


def blindspots(report: dict) -> list[Item]:
    ls = report["levelset"]
    items: list[Item] = [
        f"level-set traversal: {ls['mean_fraction']:.3f} of the way to the target on average "
        f"(Linf {ls['mean_linf']:.3f}, L2 {ls['mean_l2']:.3f}); prediction unchanged on "
        f"{sum(ls['unchanged'])} of {len(ls['unchanged'])} paths"
    ]
    sb = report["shape_bias"]
    if sb is not None and sb["shape_bias"] is not None:
        items.append(f"shape bias: {sb['shape_bias']:.3f} ({sb['shape_decisions']} shape, "
                     f"{sb['texture_decisions']} texture, {sb['other_decisions']} neither)")  # fmt: skip
    return items


def runs_list(runs: list, metrics: bool, format_value) -> list[Item]:
    """The run history's rows (``store.list_runs``), with every metric when asked."""
    table = Table("id", "created", "command", "model", "data", "clean acc.")
    if metrics:
        table.add_column("metrics")
    for r in runs:
        clean = r.metrics.get("clean_accuracy")
        row = [str(r.id), r.created, r.command, str(r.model), str(r.data),
               "-" if clean is None else f"{clean:.3f}"]  # fmt: skip
        if metrics:
            row.append("\n".join(f"{k} {format_value(v)}" for k, v in r.metrics.items()))
        table.add_row(*row)
    return [table]


def rows(header: list[str], body: list[list[str]]) -> list[Item]:
    """A plain table (``runs compare``)."""
    table = Table(*header)
    for row in body:
        table.add_row(*row)
    return [table]
