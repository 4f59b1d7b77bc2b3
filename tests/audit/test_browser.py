"""The audit and compare pages in headless Chromium: no console errors, no network requests,
every figure decoded; a screenshot of each (``$ROBUSTLAB_SCREENSHOTS`` keeps them)."""

import struct

import pytest

from tests.audit.conftest import cli
from tests.browser import check_page


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_audit_page_in_chromium(audited, chromium, screenshots):
    out, _, _ = audited
    shot = screenshots / "audit.png"
    page = check_page(out / "report.html", shot, chrome=chromium, full_page=True)
    assert page.console_errors == []
    assert page.requests == []  # nothing but the file itself and its data: URLs
    assert page.images >= 7 and page.decoded_images == page.images
    assert page.title == "robustlab audit: zoo:mlp on digits"
    width, height = _png_size(shot)
    assert width == 1200 and height == page.height > 2000


def test_compare_page_in_chromium(audited, chromium, screenshots, tmp_path):
    out, db, _ = audited
    html = tmp_path / "compare.html"
    assert cli("runs", "compare", 1, 1, "--out", html, "--db", db).returncode == 0
    page = check_page(html, screenshots / "compare.png", chrome=chromium)
    assert page.console_errors == [] and page.requests == []
    assert page.images > 0 and page.decoded_images == page.images


def test_checker_sees_errors_and_requests(chromium, tmp_path):
    """The checks above can fail: a page that logs an error and asks the network for an image."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<html><body><img src="https://example.invalid/x.png"><link rel="stylesheet" '
        'href="other.css"><script>console.error("boom")</script></body></html>'
    )
    page = check_page(bad, chrome=chromium)
    assert "https://example.invalid/x.png" in page.requests
    assert any(u.endswith("/other.css") for u in page.requests)
    assert any("boom" in e for e in page.console_errors)
    assert page.images == 1 and page.decoded_images == 0


def test_missing_browser_is_one_line(tmp_path):
    from robustlab.errors import RobustlabError

    with pytest.raises(RobustlabError, match="expected a Chromium executable; found no program"):
        check_page(tmp_path / "x.html", chrome=str(tmp_path / "no-such-browser"))
