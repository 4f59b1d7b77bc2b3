import json

from robustlab.report import render_html, write_report_dir

REPORT = {
    "kind": "demo",
    "created": "now",
    "model": {"name": "m"},
    "data": {"name": "digits", "n": 10},
    "norm": "inf",
    "clean_accuracy": 0.9,
    "curve": [
        {"eps": 0.0, "robust_accuracy": 0.9, "certified_accuracy": 0.9},
        {"eps": 0.1, "robust_accuracy": 0.5, "certified_accuracy": 0.2},
    ],
}


def test_write_report_dir(tmp_path):
    j, h = write_report_dir(REPORT, tmp_path / "out")
    data = json.loads(j.read_text())
    assert data["schema_version"] == 2 and data["curve"][1]["robust_accuracy"] == 0.5
    html = h.read_text()
    assert html.count("data:image/png;base64,") == 1
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")


def test_html_without_certified_series():
    html = render_html({**REPORT, "curve": [{"eps": 0.1, "robust_accuracy": 0.4}]})
    assert "40.0%" in html and "<img" in html


def test_html_escapes_names():
    html = render_html({**REPORT, "model": {"name": "<script>alert(1)</script>"}})
    assert "<script>alert" not in html
