"""What the audit prints on the terminal: a line per finished stage, then the summary."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def stage_line(rec: dict) -> str:
    """One line for a finished stage (printed as the stages end)."""
    extra = rec.get("error") or rec.get("note") or ""
    return (
        f"{rec['name']:<12} {rec['status']:<9} {rec['seconds']:6.1f} s"
        f" (budget {rec['budget_s']:.0f} s)" + (f"  {extra}" if extra else "")
    )


def print_summary(out: Console, err: Console, report: dict) -> None:
    """The curve, the headline verdict and the flags."""
    h = report.get("headline") or {}
    table = Table(
        "eps",
        "empirical",
        "certified",
        title=f"{report['model']['name']} on {report['data']['name']} ({h.get('n')} examples), "
        f"profile {report.get('profile')} (clean accuracy {_pct(h.get('clean_accuracy'))})",
    )
    for p in report.get("curve") or []:
        table.add_row(f"{p['eps']:g}", _pct(p["robust_accuracy"]), _pct(p["certified_accuracy"]))
    out.print(table)
    out.print(
        f"at eps {h.get('eps', 0):g}: clean {_pct(h.get('clean_accuracy'))}, empirical "
        f"{_pct(h.get('robust_accuracy'))}, certified {_pct(h.get('certified_accuracy'))}, "
        f"gap {_pct(h.get('gap'))}: {h.get('verdict_text', '')}",
        markup=False,
        highlight=False,
    )
    for f in report.get("flags") or []:
        if f.get("level") in ("error", "warning"):
            err.print(
                f"{f['level']}: {f['message']}", markup=False, highlight=False, soft_wrap=True
            )
