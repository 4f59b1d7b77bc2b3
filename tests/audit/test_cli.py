"""``robustlab audit``, ``robustlab demo`` output and ``robustlab runs compare`` as a user runs them."""

import json

import pytest

from tests.audit.conftest import cli


def test_audit_command(audited):
    out, db, proc = audited
    assert f"report: {out / 'report.json'}" in proc.stdout and "run id: 1" in proc.stdout
    assert "at eps 0.05: clean" in proc.stdout
    for stage in ("clean", "attacks", "certified", "corruptions", "smoothing", "examples"):
        assert any(line.startswith(stage) for line in proc.stderr.splitlines()), proc.stderr
    html = (out / "report.html").read_text()
    assert html.count("<img") >= 7 and "<script" not in html
    assert "http://" not in html and "https://" not in html


def test_runs_compare_page(audited, tmp_path):
    out, db, _ = audited
    proc = cli("attack", "--model", "zoo:mlp", "--data", "digits", "--eps", "0.05", "--n", 20,
               "--out", tmp_path / "a.json", "--db", db)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    page = tmp_path / "compare.html"
    proc = cli("runs", "compare", 1, 2, 1, "--out", page, "--db", db)
    assert proc.returncode == 0, proc.stderr
    assert f"page: {page}" in proc.stdout
    html = page.read_text()
    assert "3 runs side by side" in html and "run 2: zoo:mlp" in html
    assert html.count("<img") >= 5 and "http://" not in html


def test_audit_bad_input_is_one_line():
    proc = cli("audit", "--model", "zoo:mlp", "--data", "digits", "--profile", "slow")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown profile 'slow'; known: quick, standard, full"
    proc = cli("runs", "compare", 1)
    assert proc.returncode == 2 and "at least two run ids" in proc.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backend", "spark"], "error: unknown backend 'spark'; known: local, dask"),
        (["--shard-size", "0"], "--shard-size"),
    ],
)
def test_audit_bad_backend_is_one_line(extra, message, tmp_path):
    proc = cli("audit", "--model", "zoo:mlp", "--data", "digits", "--out", tmp_path / "a", *extra)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_report_json_is_the_source_of_truth(audited):
    """The page is rendered from report.json alone: rendering the file again gives the same page."""
    from robustlab.report import render_html

    out, _, _ = audited
    report = json.loads((out / "report.json").read_text())
    assert render_html(report) == (out / "report.html").read_text()
