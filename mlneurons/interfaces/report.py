"""The one-command report: every method on the built-in defaults, in one run directory.

``mlneurons report`` runs every command whose spec has a report step (its budgets are
config values), as the command line does, all writing into one flat directory (their
file names do not collide; ablate and steer read the neurons there, fact-neurons and
trace the probing result there). Each section of ``index.html`` is read through the
command's result class and worded by its ``describe``. ``report.json`` records each step's exact command
line, its budget, wall time and status; a step whose outputs exist and whose command
is unchanged is skipped when the report runs again, so an interrupted report resumes
(LAPE also resumes inside its statistics pass from its checkpoint). ``index.html`` is
self-contained: plots as data URIs, inline CSS, no scripts and no external requests.
"""

from __future__ import annotations

import base64
import html
import json
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlneurons.config import Config
from mlneurons.evaluation.uncertainty import flagged
from mlneurons.interfaces.commands import every
from mlneurons.interfaces.spec import Command, Table, run_command
from mlneurons.models import DEFAULT_MODEL
from mlneurons.models.bridge import TransformerBridge

REPORT_FILE = "report.json"
INDEX_FILE = "index.html"


def steps() -> list[Command[Any, Any]]:
    """The commands of the report (those whose spec has a step), in registry order."""
    return [spec for spec in every() if spec.step is not None]


def step_config(
    spec: Command[Any, Any], budget: str, out: Path, *, model: str | None, device: str | None
) -> Config:
    """The config of a report step writing into ``out``: its budget (``default``: about 15
    minutes on 2 CPU cores; ``full``: the paper-scale runs of docs/), the run directory as
    the earlier step's output it reads, the model and device."""
    assert spec.step is not None
    values = dict(spec.step.budgets[budget])
    if spec.step.reuse:
        values[spec.step.reuse] = str(out)
    if model:
        values["model"] = model
    if device:
        values["device"] = device
    cfg: Config = spec.config(**values)
    return cfg


def command_line(argv: list[str]) -> str:
    """The shell command of an argument list: ``mlneurons lape --out runs/report``."""
    return shlex.join(["mlneurons", *argv])


def app_command(out: Path, model: str | None = None) -> str:
    """The command that opens the app on a run directory."""
    extra = ["--model", model] if model and model != DEFAULT_MODEL else []
    return shlex.join(["mlneurons", "app", "--run", str(out), *extra])


def _read_record(out: Path) -> dict[str, Any]:
    path = out / REPORT_FILE
    record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    record.setdefault("steps", {})
    return record


def _write_record(out: Path, record: dict[str, Any]) -> None:
    tmp = out / (REPORT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(out / REPORT_FILE)


def _finished(spec: Command[Any, Any], entry: dict[str, Any], argv: list[str], out: Path) -> bool:
    return entry.get("argv") == argv and entry.get("status") == "done" and spec.saved(out)


def run_report(
    out: str | Path,
    *,
    full: bool = False,
    model: str | None = None,
    device: str | None = None,
) -> Path:
    """Run every step not finished yet, then write ``report.json`` and ``index.html``.

    Args:
        out: the run directory (created; a report there already is resumed).
        full: the paper-scale budgets instead of the 15-minute ones.
        model: the model of every step (default: the built-in Gemma 3 270M).
        device: torch device (default: cuda if available, else cpu).

    Returns:
        The path of ``index.html``.

    Raises:
        UserError: a step's options do not fit (e.g. a language the model's run lacks).
    """
    from mlneurons.interfaces.commands.lape import LAPE_CHECKPOINT

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = "full" if full else "default"
    record = _read_record(out)
    record.update(budget=name, model_name=model or DEFAULT_MODEL, device=device)
    # every step's config is built (and checked) here, before any model loads
    specs = steps()
    configs = {s.name: step_config(s, name, out, model=model, device=device) for s in specs}
    plans = {step: [*cfg.to_argv(), "--out", str(out)] for step, cfg in configs.items()}
    print(
        f"report budget '{name}'"
        + (" (budgeted for 15 minutes on 2 CPU cores)" if not full else "")
    )
    for step, argv in plans.items():
        print(f"  {step:15s} {shlex.join(argv[1:-2]) or '(the command defaults)'}")
    started, rerun = time.time(), set[str]()
    # the steps share one loaded model
    loaded_models: dict[tuple[Any, ...], TransformerBridge] = {}
    for spec in specs:
        argv, entry = plans[spec.name], record["steps"].get(spec.name, {})
        needs = set(spec.step.needs) if spec.step else set()
        if _finished(spec, entry, argv, out) and not rerun & needs:
            print(f"[{spec.name}] done already ({entry['wall_time_s']} s), skipped")
            continue
        if spec.name == "lape" and entry.get("argv") != argv:  # another budget's checkpoint
            (out / LAPE_CHECKPOINT).unlink(missing_ok=True)
        rerun.add(spec.name)
        entry = {
            "command": command_line(argv),
            "argv": argv,
            "budget": configs[spec.name].to_dict(),
            "status": "running",
            "wall_time_s": None,
        }
        record["steps"][spec.name] = entry
        _write_record(out, record)
        print(f"[{spec.name}] {entry['command']}", flush=True)
        start, cpu = time.time(), time.process_time()
        try:
            run_command(spec, configs[spec.name], out, models=loaded_models)
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            entry["status"] = "interrupted" if interrupted else "failed"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["wall_time_s"] = round(time.time() - start, 1)
            _write_record(out, record)
            write_index(out, record)
            raise
        entry.update(
            status="done",
            wall_time_s=round(time.time() - start, 1),
            cpu_time_s=round(time.process_time() - cpu, 1),
        )
        _write_record(out, record)
        write_index(out, record)
    record["this_run_s"] = round(time.time() - started, 1)
    record["wall_time_s"] = round(
        sum(s.get("wall_time_s") or 0 for s in record["steps"].values()), 1
    )
    _write_record(out, record)
    index = write_index(out, record)
    print(
        f"wrote {out}/: {REPORT_FILE} {INDEX_FILE} and every step's files "
        f"(steps {record['wall_time_s']} s in all, this run {record['this_run_s']} s)"
    )
    print(f"open the app on it: {app_command(out, model)}")
    return index


# ---- index.html --------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:right;vertical-align:top}th{background:#f3f3f3}td.l,th.l{text-align:left}
code,pre{background:#f6f6f6;font-size:.9em}pre{padding:.5em;white-space:pre-wrap}
th{white-space:nowrap}table.steps td:last-child{font-family:monospace;font-size:.85em}
img{max-width:100%;max-height:420px;border:1px solid #eee;margin:.4em 0}.bad{color:#b00}.muted{color:#777}
.ns{background:#fff3d6;color:#7a4d00}
"""


def _json(out: Path, name: str) -> Any:
    path = out / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _images(out: Path, names: list[str]) -> str:
    parts = []
    for name in names:
        path = out / name
        if path.exists():
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(
                f'<img alt="{_e(name)}" title="{_e(name)}" src="data:image/png;base64,{data}">'
            )
    return "".join(parts)


def _table(table: Table, cls: str = "") -> str:
    """An HTML table with escaped cells; text cells are left-aligned."""

    def cells(tag: str, values: list[Any]) -> str:
        def classes(v: Any) -> str:
            names = ["l"] * (isinstance(v, str) and not _numeric(v)) + ["ns"] * flagged(v)
            return f" class='{' '.join(names)}'" if names else ""

        return "".join(f"<{tag}{classes(v)}>{_e(v)}</{tag}>" for v in values)

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in table.rows)
    shown = f"<table class='{cls}'><tr>{cells('th', table.header)}</tr>{body}</table>"
    if table.details:
        return f"<details><summary>{_e(table.caption or 'details')}</summary>{shown}</details>"
    return (f"<p>{_e(table.caption)}</p>" if table.caption else "") + shown


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "+-–." or text.endswith("%"))


def section(spec: Command[Any, Any], out: Path) -> str:
    """A command's section of ``index.html``: its findings (``describe``), tables and
    figures, read through its result class."""
    if not spec.saved(out):
        return "<p class=bad>no result in this directory</p>"
    result = spec.load(out)
    try:
        cfg = spec.config.load(out)
    except Exception:  # a run without cfg.json: the figures' names need only defaults
        cfg = spec.config()
    lines = "".join(
        f"<p{' class=ns' if flagged(line) else ''}>{_e(line)}</p>" for line in spec.describe(result)
    )
    tables = "".join(_table(table) for table in spec.tables(result))
    return lines + tables + _images(out, list(spec.figures(result, cfg, out)))


def _fingerprint(out: Path) -> str:
    model = None
    for spec in steps():
        for name in spec.result_class().files():
            if name.endswith(".json") and not model:
                model = (_json(out, name) or {}).get("model")
    if not model:
        return "<p class=muted>no result yet</p>"
    prov = model.get("provenance") or {}
    rows = [
        [k, str(model.get(k))]
        for k in ("name", "n_layers", "d_mlp", "d_model", "hash", "dtype", "edited")
    ]
    rows += [[lib, str(v)] for lib, v in (prov.get("versions") or {}).items()]
    rows.append(["requirements.lock sha256", str(prov.get("lock_hash"))])
    return _table(Table(["field", "value"], rows))


def write_index(out: str | Path, record: dict[str, Any] | None = None) -> Path:
    """Write the self-contained ``index.html`` of a run directory and return its path."""
    out = Path(out)
    record = record if record is not None else _read_record(out)
    done = record.get("steps", {})
    rows = [
        [
            name,
            s.get("status"),
            _num(s.get("wall_time_s"), 1),
            _num(s.get("cpu_time_s"), 1),
            s.get("command"),
        ]
        for name, s in done.items()
    ]
    total = sum(s.get("wall_time_s") or 0 for s in done.values())
    body = [
        f"<h1>mlneurons report: {_e(record.get('model_name', ''))}</h1>",
        f"<p>Budget <b>{_e(record.get('budget'))}</b>; steps took {total:.0f} s in all; written "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Open the interactive app on this run: "
        f"<code>{_e(app_command(out, record.get('model_name') or DEFAULT_MODEL))}</code></p>",
        "<p>Every estimate carries its interval (95% unless a step's <code>--confidence</code> "
        "says otherwise: Wilson for rates, the bootstrap over items for perplexities and "
        "overlaps; each result's JSON names the method, the number of items and the seed). "
        "<span class=ns>Findings marked like this are not significant</span> (paired tests: "
        "exact McNemar; tables that test every language pair: Holm-adjusted).</p>",
        "<h2>Steps</h2>",
        _table(
            Table(["step", "status", "wall (s)", "CPU (s)", "command that reproduces it"], rows),
            cls="steps",
        ),
    ]
    for spec in steps():
        step = done.get(spec.name, {})
        status, error = step.get("status", "not run"), step.get("error")
        content = section(spec, out) if status == "done" else ""
        note = (
            ""
            if status == "done"
            else f"<p class=bad>{_e(status)}{_e(f': {error}' * bool(error))}</p>"
        )
        command = step.get("command")
        cmd = f"<pre>{_e(command)}</pre>" if command else ""
        body.append(f"<h2>{_e(spec.title)}</h2>{cmd}{note}{content}")
    body += ["<h2>Model and versions</h2>", _fingerprint(out)]
    page = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>mlneurons report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    path = out / INDEX_FILE
    path.write_text(page, encoding="utf-8")
    return path


__all__ = [
    "steps",
    "app_command",
    "command_line",
    "run_report",
    "section",
    "step_config",
    "write_index",
]
