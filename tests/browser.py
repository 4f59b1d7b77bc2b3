"""Open a report in headless Chromium and check it: console errors, network requests, images;
take a screenshot. Talks the DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, messages ended by a NUL byte), so it needs only the standard library and
opens no port; every host name resolves to nothing, so a page cannot reach the network."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from robustlab.errors import RobustlabError

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND", "--remote-debugging-pipe",
)  # fmt: skip
# puts the pipe ends on the descriptors Chromium expects (3: commands in, 4: messages out)
TRAMPOLINE = (
    "import os, sys; a, b = int(sys.argv[1]), int(sys.argv[2]); os.dup2(a, 3); os.dup2(b, 4); "
    "os.close(a); os.close(b); os.execv(sys.argv[3], sys.argv[3:])"
)
PROBE = """JSON.stringify({images: document.images.length,
  decoded: Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length,
  title: document.title, height: document.documentElement.scrollHeight})"""


def find_chromium() -> str | None:
    """The first Chromium-like browser on PATH (``$ROBUSTLAB_CHROMIUM`` first when set)."""
    env = os.environ.get("ROBUSTLAB_CHROMIUM")
    if env and shutil.which(env):
        return shutil.which(env)
    return next((shutil.which(n) for n in NAMES if shutil.which(n)), None)


@dataclass(frozen=True)
class PageCheck:
    """What the browser saw while loading a page."""

    url: str
    console_errors: list[str]
    requests: list[str]  # every URL the page asked for other than itself and data: URLs
    images: int
    decoded_images: int
    title: str
    height: int
    screenshot: str | None = None
    events: int = field(default=0, repr=False)


class _Pipe:
    """One Chromium process and its DevTools pipe."""

    def __init__(self, chrome: str, profile: str, width: int, height: int) -> None:
        cmd_r, cmd_w = os.pipe()  # we write commands; Chromium reads fd 3
        out_r, out_w = os.pipe()  # Chromium writes fd 4; we read
        # numbers above 9, so that moving them onto 3 and 4 cannot clobber one with the other
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (cmd_r, out_w)]
        os.close(cmd_r)
        os.close(out_w)
        args = [
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", TRAMPOLINE, str(high[0]), str(high[1]), chrome, *args],
            pass_fds=tuple(high),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for fd in high:
            os.close(fd)
        self.out = os.fdopen(cmd_w, "wb", buffering=0)
        self.inbox: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self.next_id = 0
        threading.Thread(target=self._read, args=(out_r,), daemon=True).start()

    def _read(self, fd: int) -> None:
        buf = b""
        with os.fdopen(fd, "rb", buffering=0) as f:
            while chunk := f.read(65536):
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for m in messages:
                    self.inbox.put(json.loads(m))
        self.inbox.put(None)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:  # fmt: skip
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.out.write(json.dumps(msg).encode() + b"\0")
        while True:
            m = self._get(timeout)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RobustlabError(f"Chromium {method}: {m['error'].get('message')}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float) -> dict:
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._get(timeout)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                m = self.inbox.get(timeout=left)
            except queue.Empty:
                return
            if m is not None:
                self.events.append(m)

    def _get(self, timeout: float) -> dict:
        try:
            m = self.inbox.get(timeout=timeout)
        except queue.Empty:
            raise RobustlabError(f"Chromium did not answer within {timeout:g} s") from None
        if m is None:
            raise RobustlabError("Chromium closed the DevTools pipe (did it start?)")
        return m

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(
                "console: "
                + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))
            )
        elif method == "Runtime.exceptionThrown":
            out.append("exception: " + p.get("exceptionDetails", {}).get("text", ""))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
    return out


def check_page(
    html: Path | str,
    screenshot: Path | str | None = None,
    *,
    chrome: str | None = None,
    width: int = 1200,
    height: int = 900,
    full_page: bool = False,
    timeout: float = 60.0,
) -> PageCheck:
    """Load ``html`` (a file) in headless Chromium; report console errors, requests for anything
    but the page itself and data: URLs, and the images; save a PNG screenshot when asked (the
    viewport, or the whole page with ``full_page``)."""
    chrome = chrome or find_chromium()
    if chrome is None:
        raise RobustlabError(f"no Chromium found on PATH (looked for {', '.join(NAMES)})")
    if shutil.which(chrome) is None:
        raise RobustlabError(f"expected a Chromium executable; found no program at {chrome}")
    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="robustlab-chromium-") as profile:
        pipe = _Pipe(chrome, profile, width, height)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
            sid = pipe.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                      "flatten": True})["sessionId"]  # fmt: skip
            for domain in ("Runtime", "Log", "Network", "Page"):
                pipe.send(f"{domain}.enable", session=sid)
            pipe.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                      "deviceScaleFactor": 1, "mobile": False}, session=sid)  # fmt: skip
            pipe.events.clear()
            pipe.send("Page.navigate", {"url": url}, session=sid, timeout=timeout)
            pipe.wait_event("Page.loadEventFired", timeout)
            pipe.drain(0.5)
            probe = json.loads(pipe.send("Runtime.evaluate", {"expression": PROBE, "returnByValue": True},
                                         session=sid)["result"]["value"])  # fmt: skip
            shot = None
            if screenshot is not None:
                params: dict = {"format": "png"}
                if full_page:
                    params.update(captureBeyondViewport=True, clip={
                        "x": 0, "y": 0, "width": width, "height": probe["height"], "scale": 1})  # fmt: skip
                data = pipe.send("Page.captureScreenshot", params, session=sid, timeout=timeout)
                Path(screenshot).write_bytes(base64.b64decode(data["data"]))
                shot = str(screenshot)
            pipe.drain(0.2)
            events = [e for e in pipe.events if e.get("sessionId") in (sid, None)]
        finally:
            pipe.close()
    requests = [
        e["params"]["request"]["url"]
        for e in events
        if e.get("method") == "Network.requestWillBeSent"
    ]
    outside = [u for u in requests if u != url and not u.startswith("data:")]
    return PageCheck(url, _errors(events), outside, probe["images"], probe["decoded"],
                     probe["title"], probe["height"], shot, len(events))  # fmt: skip
