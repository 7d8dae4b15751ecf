"""The app in a real browser: `streamlit run` on a free port, headless Chromium via Playwright.

Needs Debian's chromium (`apt-get install chromium`; never `playwright install`) and the
playwright Python package (the dev extra); skipped with the reason when either is missing.
"""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
APP = Path(__file__).resolve().parent.parent / "apps" / "app.py"
LOCAL = ("http://127.0.0.1", "ws://127.0.0.1", "about:", "data:", "blob:")

if not Path(CHROMIUM).exists():
    pytest.skip(f"no {CHROMIUM}: apt-get install -y chromium", allow_module_level=True)
pytest.importorskip("streamlit", reason="pip install -e '.[app]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(planted_dir, tmp_path_factory):
    """The app on a LAPE run of the planted model, served on a free local port."""
    from test_app import make_run

    run = make_run(planted_dir, tmp_path_factory.mktemp("browser"), everything=False)
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    command = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    command += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log, "w") as out:
        server = subprocess.Popen(
            [*command, "--", "--run", str(run)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.time() > deadline:
                pytest.fail(f"the app did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_app_renders_a_circuitsvis_view_offline(app_url, tmp_path):
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            page.on("request", lambda request: requests.append(request.url))
            page.goto(app_url)
            page.wait_for_selector(
                "[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=60_000
            )
            frame = page.frame_locator('[data-testid="stIFrame"]').first
            # circuitsvis renders its React view into the div named after the view's id
            frame.locator("[id^='circuits-vis-'] span").first.wait_for(timeout=180_000)
            page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            assert page.title() == "mlneurons"
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000
    outside = [url for url in requests if not url.startswith(LOCAL)]
    assert not outside, f"requests left 127.0.0.1: {outside}"
    assert any(url.startswith(app_url) for url in requests)
