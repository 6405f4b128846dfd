"""Acceptance: report.html renders in headless Chromium (Debian's package) with its plots, offline.

Chromium runs with every request sent to a local proxy that notes the host asked for and refuses them
all, so the page is shown as it would be with no network. Chromium's own background services ask for
Google hosts whatever the page (time, accounts: seen even for an empty page, whatever the
``--disable-*`` flags), so those are allowed; any other host would be the page's. A control page (the
same one fetching its plots from an address) shows that both checks bite: its plots are missing from the
screenshot, and the proxy sees the fetch. Chromium missing is a failure, not a skip: ``.ci/run``
installs it (``apt-get install -y chromium``).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from slimkit.report_html import write_html

from report_samples import ALL_PLOTS, full_report

mpimage = pytest.importorskip("matplotlib.image")

WINDOW = (1200, 2000)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "/usr/bin/chromium"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is not installed: the report.html acceptance test needs it "
                "(Debian: apt-get install -y chromium; .ci/run installs it when missing)")


class RefusingProxy:
    """A proxy address that accepts each connection, notes the host it asks for and closes it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hosts: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            try:
                conn.settimeout(2)
                head = conn.recv(1024).decode("latin-1")
            except OSError:
                head = ""
            finally:
                conn.close()
            # "CONNECT host:443 HTTP/1.1" or "GET http://host/path HTTP/1.1"
            match = re.match(r"[A-Z]+ (?:[a-z]+://)?([^/:\s]+)", head)
            self.hosts.append(match.group(1) if match else f"? {head[:40]!r}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def proxy():
    p = RefusingProxy()
    yield p
    p.close()


def screenshot(page: Path, out: Path, proxy: RefusingProxy) -> np.ndarray:
    """The first WINDOW of ``page`` as Chromium draws it, RGB in [0, 1]."""
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={out.parent / (out.stem + '-profile')}", f"--proxy-server=127.0.0.1:{proxy.port}",
               "--proxy-bypass-list=<-loopback>", f"--screenshot={out}", f"--window-size={WINDOW[0]},{WINDOW[1]}",
               page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and out.exists(), done.stderr[-2000:]
    return mpimage.imread(str(out))[..., :3]


def own_service(host: str) -> bool:
    """Chromium's background requests (network time, accounts, variations)."""
    return host == "google.com" or host.endswith((".google.com", ".googleapis.com", ".gvt1.com"))


def coloured(pixels: np.ndarray) -> float:
    """Share of saturated pixels: the plots' bars, lines and markers (the page's own styling is grey)."""
    return float(((pixels.max(axis=-1) - pixels.min(axis=-1)) > 0.25).mean())


def test_report_html_renders_its_plots_offline(tmp_path, proxy):
    page = write_html(full_report(), tmp_path / "report.html")
    text = page.read_text(encoding="utf-8")
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == len(ALL_PLOTS)
    assert not re.search(r"(?i)https?:", text)

    start = len(proxy.hosts)
    shot = screenshot(page, tmp_path / "report.png", proxy)
    asked = proxy.hosts[start:]
    assert all(own_service(host) for host in asked), f"the page asked the network for {asked}"
    assert shot.shape == (WINDOW[1], WINDOW[0], 3)
    assert shot.std() > 0.15  # text, tables and plots, not a blank page
    drawn = coloured(shot)

    # control: the same page with its plots fetched from an address (and no policy refusing it)
    control = tmp_path / "control.html"
    control.write_text(re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "http://plots.slimkit.invalid/p.png",
                              re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)),
                       encoding="utf-8")
    start = len(proxy.hosts)
    missing = coloured(screenshot(control, tmp_path / "control.png", proxy))
    assert "plots.slimkit.invalid" in proxy.hosts[start:], "the control's fetch did not reach the proxy"
    print(f"\ncoloured pixels: report {drawn:.2%}, control without its plots {missing:.2%}; asked: {sorted(set(asked))}; "
          f"screenshot std {shot.std():.3f}")
    assert drawn > 0.03 and drawn > 20 * missing
