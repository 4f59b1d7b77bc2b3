"""Results describe themselves (issue 18): a metric one result type adds reaches the run history
(``runs list --metrics``, ``runs compare``) and the HTML pages with no change anywhere else."""

from __future__ import annotations

import json

from robustlab.attacks.ensemble import SuiteResult
from robustlab.results import Metric, curve_metrics, flat_metrics, metric_dicts
from tests.conftest import run_cli


def test_a_new_metric_of_one_result_type_shows_everywhere(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COLUMNS", "300")  # rich: no column squeezed out of the tables
    before = SuiteResult.metrics

    def metrics(self):
        return [*before(self), Metric("zz_new_metric", 0.125, False)]

    monkeypatch.setattr(SuiteResult, "metrics", metrics)
    db, out = tmp_path / "runs.sqlite", tmp_path / "a.json"
    code, _, err = run_cli(monkeypatch, capsys, "attack", "--model", "zoo:mlp", "--data",
                           "digits", "--eps", "0.05", "--n", "16", "--attacks", "fgsm",
                           "--out", out, "--db", db)  # fmt: skip
    assert code == 0, err
    report = json.loads(out.read_text())
    assert {"name": "zz_new_metric", "value": 0.125, "higher_is_better": False} in report["metrics"]
    assert "zz_new_metric" in out.with_suffix(".html").read_text()

    code, listed, _ = run_cli(monkeypatch, capsys, "runs", "list", "--metrics", "--db", db)
    assert code == 0 and "zz_new_metric" in listed and "0.1250" in listed
    page = tmp_path / "compare.html"
    code, compared, _ = run_cli(monkeypatch, capsys, "runs", "compare", "1", "1", "--db", db,
                                "--out", page)  # fmt: skip
    assert code == 0 and "zz_new_metric" in compared
    assert "zz_new_metric" in page.read_text()


def test_curve_metrics_name_each_point():
    curve = [{"eps": 0.0, "robust_accuracy": 0.9}, {"eps": 0.1, "robust_accuracy": 0.5,
             "certified_accuracy": None}, {"radius": 0.25, "certified_accuracy": 0.4}]  # fmt: skip
    names = [m.name for m in curve_metrics(curve)]
    assert names == ["robust_accuracy@0", "robust_accuracy@0.1", "certified_accuracy@0.1",
                     "certified_accuracy@radius 0.25"]  # fmt: skip
    assert len(metric_dicts(curve_metrics(curve))) == 3  # the missing value left out
    assert len(metric_dicts(curve_metrics(curve), keep_missing=True)) == 4


def test_flat_metrics_put_clean_accuracy_first():
    report = {"metrics": [{"name": "a", "value": 1.0, "higher_is_better": True}]}
    assert list(flat_metrics(report).items()) == [("clean_accuracy", None), ("a", 1.0)]


def test_schema_1_smoothing_reports_read_in_todays_words(tmp_path):
    """Report schema 2: smoothing's ``n`` counts examples, ``samples`` the Monte-Carlo draws
    (schema 1: ``n`` the draws, ``samples`` the records); older reports and runs still read."""
    from robustlab import store
    from robustlab.report.compare import load_report
    from robustlab.results import SCHEMA_VERSION, upgrade

    recs = [{"label": 1, "prediction": 1, "count_top": 90, "radius": 0.3}] * 3
    old = {"kind": "smooth", "sigma": 0.25, "n": 1000, "n0": 10, "samples": recs}
    new = upgrade(old)
    assert (new["n"], new["samples"], new["per_input"]) == (3, 1000, recs)
    assert new["schema_version"] == SCHEMA_VERSION == 2 and old["n"] == 1000  # not modified
    audit = {"kind": "audit", "smoothing": {"n": 500, "examples": 40, "samples": recs}}
    assert upgrade(audit)["smoothing"] == {"n": 40, "samples": 500, "per_input": recs}
    assert upgrade(new) is new
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert load_report(str(path))["samples"] == 1000
    db = tmp_path / "db.sqlite"
    for settings in ({"sigma": 0.25, "n0": 10, "n": 1000}, {"n0": 10, "samples": 99, "n": 5}):
        store.record("robustlab smooth", model="m", model_hash="h", data="d",
                     settings=settings, metrics={}, report=None, db=db)  # fmt: skip
    new_run, old_run = store.list_runs(db)
    assert old_run.settings == {"sigma": 0.25, "n0": 10, "samples": 1000}
    assert new_run.settings == {"n0": 10, "samples": 99, "n": 5}
