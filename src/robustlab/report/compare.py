"""``robustlab runs compare``: the reports of several recorded runs on one offline page."""

from __future__ import annotations

import json
from pathlib import Path

from robustlab import store
from robustlab.report.audit import render_compare
from robustlab.results import upgrade


def load_report(path: str | None) -> dict | None:
    """A run's report.json, or None when it is gone or unreadable."""
    if not path:
        return None
    try:
        return upgrade(json.loads(Path(path).read_text()))
    except (OSError, ValueError, AttributeError):
        return None


def write_compare(run_ids: list[int], html: Path | str, db=None) -> Path:
    """Render the runs side by side into ``html`` (one file, figures embedded)."""

    runs = [store.get_run(i, db) for i in run_ids]
    reports = [load_report(r.report) for r in runs]
    page = render_compare(runs, reports, store.compare(run_ids, db))
    html = Path(html)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(page, encoding="utf-8")
    return html
