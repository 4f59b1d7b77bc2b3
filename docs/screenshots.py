"""Regenerate the README's screenshots with headless Chromium (the same checker as the tests):
an audit of zoo:cnn and the side-by-side page of zoo:mlp against zoo:cnn.

    python docs/screenshots.py          # writes docs/audit-report.png and docs/runs-compare.png
"""

import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checker lives with the tests: tests/browser.py

from tests.browser import check_page  # noqa: E402


def robustlab(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-c", "from robustlab.cli import main; main()", *args], check=True
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "runs.sqlite")
        for model in ("zoo:mlp", "zoo:cnn"):
            robustlab("audit", "--model", model, "--data", "digits", "--profile", "quick",
                      "--out", f"{tmp}/{model[4:]}", "--db", db)  # fmt: skip
        robustlab("runs", "compare", "1", "2", "--out", f"{tmp}/compare.html", "--db", db)
        pages = [
            (f"{tmp}/cnn/report.html", "audit-report.png", 1200, 1700),
            (f"{tmp}/compare.html", "runs-compare.png", 1400, 1500),
        ]
        for html, png, width, height in pages:
            page = check_page(html, DOCS / png, width=width, height=height)
            assert not page.console_errors and not page.requests, page
            assert page.images and page.decoded_images == page.images, page
            print(f"{png}: {page.images} figures, no console errors, no requests")


if __name__ == "__main__":
    main()
