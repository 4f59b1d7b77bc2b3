"""The audit's smoothing section carries the availability attack's abstention rates."""

import json


def test_audit_smoothing_reports_abstention_clean_and_attacked(audited):
    out, _, _ = audited
    report = json.loads((out / "report.json").read_text())
    av = report["smoothing"]["availability"]
    assert av["eps"] == report["headline"]["eps"] and av["examples"] == 40
    assert av["attacked"]["abstain_rate"] >= av["clean"]["abstain_rate"]
    assert "Availability: abstention under attack" in (out / "report.html").read_text()
