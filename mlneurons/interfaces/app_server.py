"""Start the Streamlit app (``mlneurons app``) and stop it with the command.

The app's source is ``apps/`` in the repository; pyproject.toml installs it as the package
``mlneurons.app`` (a wheel and an editable install alike), so :func:`app_script` finds it through
the package wherever mlneurons is installed.

:func:`serve` runs ``python -m streamlit run`` as a child process and forwards SIGTERM, SIGINT
and SIGHUP to it, then waits for it: ``kill``, a process manager's stop or Ctrl-C on
``mlneurons app`` stops the server too, and no Streamlit process is left serving the port. On
Linux the child also asks the kernel for SIGTERM when ``mlneurons app`` dies without running a
handler (SIGKILL).
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from mlneurons.errors import UserError

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, name)
)
"""The signals that stop the server: forwarded to the Streamlit child."""


def app_script() -> Path:
    """The installed app's ``app.py`` (``apps/app.py`` of the checkout in an editable install)."""
    try:
        script = importlib.resources.files("mlneurons.app").joinpath("app.py")
    except ModuleNotFoundError:
        script = None
    if not isinstance(script, Path) or not script.is_file():
        raise UserError(
            f"the app script {script or 'mlneurons/app/app.py'} is missing: reinstall mlneurons "
            "(pip install 'mlneurons[app]', or pip install -e . in a checkout)"
        )
    return script


def streamlit_command(
    script: Path, run: Path, *, model: str | None = None, port: int = 8501
) -> list[str]:
    """``python -m streamlit run SCRIPT`` on 127.0.0.1:PORT with ``-- --run RUN [--model M]``."""
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.headless", "true", "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false", "--", "--run", str(run),
    ]  # fmt: skip
    if model:
        command += ["--model", model]
    return command


def serve(run: Path, *, model: str | None = None, port: int = 8501) -> int:
    """Serve the app on ``run`` at http://127.0.0.1:PORT until it is stopped; the exit status.

    SIGTERM, SIGINT (Ctrl-C) and SIGHUP stop it: each is forwarded to the Streamlit process,
    and the call returns when that process has ended, with 0 for a stop asked by a signal and
    otherwise Streamlit's exit status (128 + N when it died of signal N).
    """
    if importlib.util.find_spec("streamlit") is None:
        raise UserError("the app needs streamlit: pip install 'mlneurons[app]'")
    run = Path(run)
    if not run.is_dir():
        raise UserError(
            f"--run {str(run)!r} is not a directory; write one with `mlneurons report --out "
            f"{run}` (or `make demo`), or name any directory written by mlneurons"
        )
    command = streamlit_command(app_script(), run, model=model, port=port)
    print(f"app on http://127.0.0.1:{port} (Ctrl-C stops it)", file=sys.stderr, flush=True)
    return run_until_stopped(command)


def run_until_stopped(command: list[str]) -> int:
    """Run ``command`` as a child that our stop signals reach; wait for it; its exit status.

    The handlers are installed before the child starts (a signal in between is delivered once
    it runs) and the previous ones are restored afterwards. Off the main thread, where Python
    cannot install handlers, the child is waited for as it is.
    """
    stops: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, frame: object) -> None:
        stops.append(signum)
        if child is not None:
            _send(child, signum)

    previous = {}
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, forward)
    except ValueError:  # not the main thread
        pass
    try:
        child = subprocess.Popen(command, preexec_fn=_die_with_parent())
        for signum in stops:
            _send(child, signum)
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child is not None and child.poll() is None:  # an exception here, not a stop
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if stops:
        return 0
    return 128 - code if code < 0 else code


def _send(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        child.send_signal(signum)  # does nothing once the child has been waited for
    except ProcessLookupError:  # ended, not yet waited for
        pass


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` that has the child sent SIGTERM when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGTERM)

    return set_parent_death_signal
