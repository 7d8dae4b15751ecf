"""`mlneurons app` as a real process: it serves, a stop signal ends it and its Streamlit child;
the wheel ships the app (apps/ becomes mlneurons/app/) and the installed copy runs."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("streamlit", reason="the app needs streamlit: pip install -e '.[app]'")

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as reply:
        return reply.status, reply.read().decode(errors="replace")


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc; empty elsewhere)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    """Running, not a zombie waiting for its new parent to reap it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    "signum",
    [
        signal.SIGTERM,
        pytest.param(
            signal.SIGKILL,
            marks=pytest.mark.skipif(
                not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only"
            ),
        ),
    ],
    ids=["SIGTERM", "SIGKILL"],
)
def test_a_signal_to_mlneurons_app_stops_the_server(tmp_path, signum):
    """SIGTERM is forwarded to Streamlit (exit 0); after SIGKILL, which no handler sees, the
    kernel sends the child SIGTERM (PR_SET_PDEATHSIG). Either way nothing serves the port."""
    run, port = tmp_path / "run", free_port()
    run.mkdir()
    log = tmp_path / "app.log"
    with open(log, "w") as out:
        app = subprocess.Popen(
            [sys.executable, "-m", "mlneurons", "app", "--run", str(run), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,  # outside the checkout: the app is found through the package
            env=ENV,
        )
    url, servers = f"http://127.0.0.1:{port}", []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(f"{url}/_stcore/health") == (200, "ok"):
                    break
            except OSError:
                pass
            if app.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the app did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        status, page = get(url)
        assert status == 200 and "<html" in page.lower()
        servers = children(app.pid)
        if sys.platform.startswith("linux"):
            assert len(servers) == 1, servers

        app.send_signal(signum)
        code = app.wait(timeout=15)
        assert code == (0 if signum == signal.SIGTERM else -signal.SIGKILL), log.read_text()
        deadline = time.monotonic() + 10
        while (listening(port) or any(alive(pid) for pid in servers)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.1)
        assert not listening(port), f"port {port} still serves after {signum!r}"
        assert not any(alive(pid) for pid in servers), f"orphaned streamlit: {servers}"
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        for pid in servers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_wheel_ships_the_app_and_the_installed_app_runs(tmp_path):
    """A wheel of a copy of the sources holds every file of mlneurons/ and apps/ (the app
    under mlneurons/app/); its app.py finds common.py and views/ where it is installed."""
    pytest.importorskip("setuptools", reason="builds with the venv's setuptools")
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*")
    for name in ("mlneurons", "apps"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True,
        text=True,
        env={**ENV, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("mlneurons-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")

    views = sorted(p.name for p in (ROOT / "apps" / "views").glob("*.py"))
    assert views and {"mlneurons/app/app.py", "mlneurons/app/common.py"} <= names
    assert {f"mlneurons/app/views/{v}" for v in views} <= names
    expected = {
        f"mlneurons/{p.relative_to(source / 'mlneurons').as_posix()}"
        for p in (source / "mlneurons").rglob("*")
        if p.is_file()
    } | {
        f"mlneurons/app/{p.relative_to(source / 'apps').as_posix()}"
        for p in source.glob("apps/**/*.py")
    }
    missing = sorted(expected - names)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert not missing, (
        f"the wheel lacks {missing[:10]}: add a new package folder to [tool.setuptools] packages "
        f"(now {packages['packages']}) or its files to package-data in pyproject.toml"
    )

    # the installed copy: app_script() finds it; app.py imports common and runs its first page
    site = tmp_path / "site"
    check = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from mlneurons.interfaces.app_server import app_script; script = app_script(); "
        "assert script.is_relative_to(sys.argv[1]), script; "
        "from streamlit.testing.v1 import AppTest; "
        "at = AppTest.from_file(str(script), default_timeout=60); at.run(); "
        "assert not at.exception, at.exception; "
        "import common; assert common.__file__.startswith(sys.argv[1]), common.__file__; "
        "print(script)"
    )
    ran = subprocess.run(
        [sys.executable, "-c", check, str(site)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ENV,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip() == str(site / "mlneurons" / "app" / "app.py")
