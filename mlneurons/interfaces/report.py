"""The one-command report: every method on the built-in defaults, in one run directory.

``mlneurons report`` runs lape, ablate, steer, probe, fact-neurons, trace and lrp2
through the CLI's own command functions, all writing into one flat directory (their
file names do not collide; ablate and steer read the neurons there, fact-neurons and
trace the probing result there). ``report.json`` records each step's exact command
line, its budget, wall time and status; a step whose outputs exist and whose command
is unchanged is skipped when the report runs again, so an interrupted report resumes
(LAPE also resumes inside its statistics pass from its checkpoint). ``index.html`` is
self-contained: plots as data URIs, inline CSS, no scripts and no external requests.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import shlex
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "gemma-3-270m"
REPORT_FILE = "report.json"
INDEX_FILE = "index.html"
LAPE_CHECKPOINT = "stats.checkpoint.safetensors"


@dataclass(frozen=True)
class Step:
    """One CLI command of the report.

    Attributes:
        name: the subcommand.
        outputs: files it writes into the run directory (all must exist for a skip).
        reuse: the option through which it reads an earlier step's output in the run
            directory (``--neurons`` or ``--probe``), if any.
        needs: steps whose outputs it reads; it runs again when one of them did.
    """

    name: str
    outputs: tuple[str, ...]
    reuse: str | None = None
    needs: tuple[str, ...] = ()


STEPS: tuple[Step, ...] = (
    Step(
        "lape",
        (
            "stats.safetensors",
            "neurons.json",
            "summary.json",
            "neurons_per_layer.png",
            "overlap.png",
        ),
    ),
    Step("ablate", ("ppl_matrix.json", "ppl_matrix.png"), "--neurons", ("lape",)),
    Step("compare-methods", ("methods.json", "methods.png"), "--neurons", ("lape",)),
    Step("steer", ("steering.json",), "--neurons", ("lape",)),
    Step("steer-sweep", ("steering_sweep.json", "steering_sweep.png"), "--neurons", ("lape",)),
    Step("fallback", ("fallback.json", "fallback.png"), "--neurons", ("lape",)),
    Step("probe", ("probe.json", "p_at_1.png", "jaccard.png")),
    Step("fact-neurons", ("fact_neurons.json", "fact_neuron_overlap.png"), "--probe", ("probe",)),
    Step("trace", ("trace.json", "trace.png"), "--probe", ("probe",)),
    Step("lrp2", ("lrp2.json", "language_vectors.safetensors")),
    Step("ses", ("sentence_similarity.safetensors", "ses.png"), None, ("lape",)),
    Step("logit-lens", ("latent_language.safetensors", "logit_lens.png")),
)

_FACTS = "--languages en,es,de,zh,ja --max-facts-per-relation 5"
_FULL_FACTS = "--languages en,fr,es,de,zh,ja,ru,ar,hi --max-facts-per-relation 10"
BUDGETS: dict[str, dict[str, str]] = {
    "default": {
        "lape": "--languages en,es,de,zh,ja --tokens-per-language 8192",
        "ablate": "--tokens-per-language 512",
        "compare-methods": "--tokens-per-language 256",
        "steer": "--source es --target zh --deactivate-source",
        "steer-sweep": "--source es --target zh --top-rates 0.01 --n-questions 8",
        "fallback": "--language zh --n-questions 8",
        "probe": _FACTS,
        "fact-neurons": _FACTS,
        "trace": _FACTS,
        "lrp2": "--languages en,de,zh --max-facts-per-relation 6 --layers 3,9,15 --sentences 100",
        "ses": "--languages en,es,de,zh,ja",
        "logit-lens": "--source fr --target zh",
    },
    "full": {  # the README's measured commands (about an hour and a half on 2 CPU cores)
        "lape": "",
        "ablate": "",
        "compare-methods": "",
        "steer": "--source es --target zh --deactivate-source",
        "steer-sweep": "--source es --target zh",
        "fallback": "--language zh",
        "probe": _FULL_FACTS,
        "fact-neurons": _FULL_FACTS,
        "trace": _FULL_FACTS,
        "lrp2": "--languages en,de,fr,zh --max-facts-per-relation 6",
        "ses": "--languages en,fr,es,de,zh,ja,ru,ar,hi",
        "logit-lens": "--source fr --target zh",
    },
}
"""Per budget, each step's options beyond the run directory, model and device."""


def step_argv(step: Step, budget: str, out: Path, *, model: str, device: str | None) -> list[str]:
    """The argument list of ``mlneurons <step> <budget> ...`` writing into ``out``."""
    argv = [step.name, *shlex.split(budget)]
    if step.reuse:
        argv += [step.reuse, str(out)]
    if model != DEFAULT_MODEL:
        argv += ["--model", model]
    if device:
        argv += ["--device", device]
    return [*argv, "--out", str(out)]


def command_line(argv: list[str]) -> str:
    """The shell command of an argument list: ``mlneurons lape --out runs/report``."""
    return shlex.join(["mlneurons", *argv])


def app_command(out: Path, model: str = DEFAULT_MODEL) -> str:
    """The command that opens the app on a run directory."""
    extra = ["--model", model] if model != DEFAULT_MODEL else []
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


def _finished(step: Step, entry: dict[str, Any], argv: list[str], out: Path) -> bool:
    return (
        entry.get("argv") == argv
        and entry.get("status") == "done"
        and all((out / name).exists() for name in step.outputs)
    )


def run_report(
    out: str | Path,
    parser: argparse.ArgumentParser,
    *,
    full: bool = False,
    model: str = DEFAULT_MODEL,
    device: str | None = None,
) -> Path:
    """Run every step not finished yet, then write ``report.json`` and ``index.html``.

    Args:
        out: the run directory (created; a report there already is resumed).
        parser: the command line's parser (:func:`mlneurons.interfaces.cli.build_parser`),
            which runs each step as its command.
        full: the paper-scale budgets of the README instead of the 15-minute ones.
        model: the model of every step (built-in Gemma 3 270M by default).
        device: torch device (default: cuda if available, else cpu).

    Returns:
        The path of ``index.html``.

    Raises:
        UserError: a step's options do not fit (e.g. a language the model's run lacks).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = "full" if full else "default"
    budgets = BUDGETS[name]
    record = _read_record(out)
    record.update(budget=name, model_name=model, device=device)
    plans = {s.name: step_argv(s, budgets[s.name], out, model=model, device=device) for s in STEPS}
    for argv in plans.values():  # a bad option fails here, before any model loads
        parser.parse_args(argv)
    print(f"report budget '{name}'" + (" (about 15 minutes on 2 CPU cores)" if not full else ""))
    for step in STEPS:
        print(f"  {step.name:15s} {budgets[step.name] or '(the command defaults)'}")
    started, rerun = time.time(), set()
    loaded_models: dict[Any, Any] = {}  # the steps share one loaded model
    for step in STEPS:
        argv, entry = plans[step.name], record["steps"].get(step.name, {})
        if _finished(step, entry, argv, out) and not rerun & set(step.needs):
            print(f"[{step.name}] done already ({entry['wall_time_s']} s), skipped")
            continue
        if step.name == "lape" and entry.get("argv") != argv:  # another budget's checkpoint
            (out / LAPE_CHECKPOINT).unlink(missing_ok=True)
        rerun.add(step.name)
        entry = {
            "command": command_line(argv),
            "argv": argv,
            "budget": budgets[step.name],
            "status": "running",
            "wall_time_s": None,
        }
        record["steps"][step.name] = entry
        _write_record(out, record)
        print(f"[{step.name}] {entry['command']}", flush=True)
        start, cpu = time.time(), time.process_time()
        try:
            args = parser.parse_args(argv)
            args.loaded_models = loaded_models
            args.run(args)
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
"""


def _json(out: Path, name: str) -> Any:
    path = out / name
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def _e(value: Any) -> str:
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(
    header: list[str], rows: list[list[Any]], left: tuple[int, ...] = (0,), cls: str = ""
) -> str:
    """An HTML table with escaped cells; the columns in ``left`` are left-aligned."""

    def cells(tag: str, values: list[Any]) -> str:
        return "".join(
            f"<{tag}{' class=l' if i in left else ''}>{_e(v)}</{tag}>" for i, v in enumerate(values)
        )

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table class='{cls}'><tr>{cells('th', header)}</tr>{body}</table>"


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


def _lape(out: Path) -> str:
    summary = _json(out, "summary.json")
    if not summary:
        return ""
    counts = summary["neurons_per_language"]
    tokens = summary["tokens_per_language"]
    rows = [[lang, tokens.get(lang, "–"), n] for lang, n in counts.items()]
    total = sum(counts.values())
    constants = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, int | float) else f"{k} {v}"
        for k, v in (summary.get("constants") or {}).items()
    )
    return (
        f"<p>{total} language-specific neurons (a neuron may belong to several languages); "
        f"LAPE constants: {_e(constants)}.</p>"
        + _table(["language", "tokens", "neurons"], rows)
        + _images(out, ["neurons_per_layer.png", "overlap.png"])
    )


def _ablate(out: Path) -> str:
    from mlneurons.methods.deactivation import PerplexityMatrix

    data = _json(out, "ppl_matrix.json")
    if not data:
        return ""
    matrix = PerplexityMatrix.from_json(data)
    own = matrix.relative_change().diagonal() * 100
    uniform = (
        matrix.relative_change("random_control").diagonal() * 100 if matrix.random_control else None
    )
    draws = (
        matrix.matched_draws().diagonal(dim1=1, dim2=2) * 100 if matrix.matched_control else None
    )
    rows = []
    for i, lang in enumerate(matrix.languages):
        off = matrix.deactivated[lang]
        worst = max(off, key=lambda other: off[other] / matrix.baseline[other])
        rows.append(
            [
                lang,
                _num(matrix.baseline[lang], 1),
                _num(off[lang], 1),
                f"{float(own[i]):+.0f}%",
                "–" if uniform is None else f"{float(uniform[i]):+.0f}%",
                "–"
                if draws is None
                else f"{float(draws[:, i].mean()):+.1f}% ± {float(draws[:, i].std(correction=0)):.1f}",
                worst,
            ]
        )
    header = [
        "language",
        "baseline ppl",
        "own neurons off",
        "change",
        "uniform control",
        f"matched control (mean ± sd of {0 if draws is None else len(draws)})",
        "hit hardest",
    ]
    return (
        "<p>Perplexity on held-out text; the diagonal: each language with its own neurons "
        "deactivated. Controls: as many random neurons from the same layers (uniform), and "
        "from the same layers and firing-probability bins (matched).</p>"
        + _table(header, rows)
        + _images(out, ["ppl_matrix.png"])
    )


def _compare_methods(out: Path) -> str:
    from mlneurons.interfaces.plots import format_increase, format_specificity
    from mlneurons.methods.deactivation import MethodComparison

    data = _json(out, "methods.json")
    if not data:
        return ""
    result = MethodComparison.from_json(data)
    rows = [
        [
            method,
            sum(result.counts[method].values()),
            format_increase(score["own"]),
            format_increase(score["others"]),
            format_specificity(score["score"]),
        ]
        for method, score in result.specificity().items()
    ]
    return (
        "<p>LAPE against Tang et al.'s baselines (LAP: firing probability above a threshold; "
        "LAVE: LAPE on mean activation values; RS: random neurons, as many per layer as "
        "LAPE). Specificity: own / (own + others) of the mean log-perplexity increases; 0.5 = "
        "every language is hurt alike, 1 = only the deactivated one.</p>"
        + _table(["method", "neurons", "own increase", "others' increase", "specificity"], rows)
        + _images(out, ["methods.png"])
    )


def _steer(out: Path) -> str:
    steering = _json(out, "steering.json")
    if not steering:
        return ""
    source, target, samples = steering["source"], steering["target"], steering["samples"]

    def share(key: str, lang: str) -> str:
        return _pct(sum(s[key] == lang for s in samples) / max(len(samples), 1))

    rows = [
        [
            f"answers in {target} (target)",
            _pct(steering["accuracy_before"]),
            _pct(steering["accuracy_after"]),
        ],
        [
            f"answers in {source} (source)",
            share("lang_before", source),
            share("lang_after", source),
        ],
    ]
    shown = [
        [s["prompt"], f"{s['before']} [{s['lang_before']}]", f"{s['after']} [{s['lang_after']}]"]
        for s in samples[:4]
    ]
    return (
        f"<p>{len(samples)} questions in {_e(source)}, steered towards {_e(target)}.</p>"
        + _table(["", "before", "after"], rows)
        + _table(
            ["prompt", "answer before [language]", "answer after [language]"], shown, left=(0, 1, 2)
        )
    )


def _steer_sweep(out: Path) -> str:
    from mlneurons.methods.steering import SteeringSweep

    data = _json(out, "steering_sweep.json")
    if not data:
        return ""
    sweep = SteeringSweep.from_json(data)
    rows = [["unsteered", "–", "–", "–", *_sweep_cells(sweep.baseline)]]
    for mode in sweep.modes:
        best = sweep.best(mode)
        if best is None:
            rows.append([mode, "–", "–", "–", "mostly degenerate", "", "", ""])
        else:
            setting = [mode, f"{best.alpha:g}", f"{best.top_rate:g}", best.n_neurons]
            rows.append(setting + _sweep_cells(best))
    header = ["mode", "alpha", "top_rate", "neurons", f"in {sweep.target}"]
    header += [f"in {sweep.source}", "degenerate", "fluency ppl"]
    return (
        f"<p>Questions in {_e(sweep.source)} steered towards {_e(sweep.target)} with each "
        f"mode (Gurgurov et al. 2025), {len(sweep.points)} settings; the best setting per mode "
        "(highest target rate, then lowest perplexity of the answers under the unsteered "
        "model; settings with mostly degenerate answers excluded):</p>"
        + _table(header, rows)
        + _images(out, ["steering_sweep.png"])
    )


def _sweep_cells(point: Any) -> list[str]:  # a SweepPoint
    return [
        _pct(point.target_rate),
        _pct(point.source_rate),
        _pct(point.degenerate_rate),
        _num(point.fluency_ppl, 1),
    ]


def _fallback(out: Path) -> str:
    from mlneurons.methods.steering import FallbackCurve

    data = _json(out, "fallback.json")
    if not data:
        return ""
    curve = FallbackCurve.from_json(data)
    categories = curve.categories
    rows = [
        [f"{p.share:.0%}", p.n_deactivated, *(_pct(p.distribution[c]) for c in categories)]
        for p in curve.points
    ]
    return (
        f"<p>Growing shares of {_e(curve.language)}'s neurons deactivated ({_e(curve.order)} "
        "order); the languages the answers fall back to:</p>"
        + _table(["share off", "neurons", *categories], rows)
        + _images(out, ["fallback.png"])
    )


def _probe(out: Path) -> str:
    result = _json(out, "probe.json")
    if not result:
        return ""
    relations, table = result["relations"], result["p_at_1"]
    rows = [
        [lang, *(_pct(table[lang].get(r)) for r in relations), _pct(table[lang]["macro"])]
        for lang in result["languages"]
    ]
    pivot = result["languages"][0]
    jaccard = result.get("jaccard", {}).get(pivot, {})
    shared = ", ".join(f"{lang} {_num(v)}" for lang, v in jaccard.items() if lang != pivot)
    return (
        f"<p>{len(result['predictions'])} predictions (facts x languages). P@1:</p>"
        + _table(["language", *relations, "macro"], rows)
        + f"<p>Jaccard of correctly predicted facts with {_e(pivot)}: {_e(shared) or '–'}</p>"
        + _images(out, ["p_at_1.png", "jaccard.png"])
    )


def _fact_neurons(out: Path) -> str:
    result = _json(out, "fact_neurons.json")
    if not result:
        return ""
    pivot = result["languages"][0]
    overlap = result["overlap"].get(pivot, {})
    rows = [
        [lang, _num(v), len(result["neurons"].get(lang, {}))]
        for lang, v in overlap.items()
        if lang != pivot
    ]
    return (
        f"<p>PROBELESS top-{_e(result['k'])} neurons of each correctly predicted fact; mean "
        f"Jaccard with {_e(pivot)} over the facts both get right.</p>"
        + _table(["language", f"overlap with {pivot}", "correct facts"], rows)
        + _images(out, ["fact_neuron_overlap.png"])
    )


def _trace(out: Path) -> str:
    from mlneurons.methods.tracing import CODES

    result = _json(out, "trace.json")
    if not result:
        return ""
    rows = []
    for lang in result["languages"]:
        codes = list(result["codes"].get(lang, {}).values())
        rows.append([lang, *(codes.count(code) for code in CODES)])
    return (
        "<p>Facts per tracing code (Zhao et al.): is the fact in the language's text, and is "
        "it predicted correctly?</p>"
        + _table(["language", *CODES.values()], rows)
        + _images(out, ["trace.png"])
    )


def _lrp2(out: Path) -> str:
    result = _json(out, "lrp2.json")
    if not result:
        return ""
    rows = []
    for lang in result["languages"]:
        p1, trans = result["test_p_at_1"][lang], result["trans"][lang]
        overlap = result["neuron_overlap"][lang]
        rows.append(
            [
                lang,
                tuple(result["selected"][lang]),
                f"{_pct(p1['before'])} → {_pct(p1['after'])}",
                f"{_num(trans['before'])} → {_num(trans['after'])}",
                f"{_num(overlap['before'])} → {_num(overlap['after'])}",
            ]
        )
    header = [
        "language",
        "selected (LIRP, LSRP)",
        "test P@1",
        "Trans",
        f"fact-neuron overlap with {result['pivot']}",
    ]
    grids = [f"lrp2_grid_{lang}.png" for lang in result["languages"]]
    return (
        f"<p>Projection into {_e(result['pivot'])}: layer pair chosen on dev facts among "
        f"{_e(result['layers'])}, reported on test facts (before → after).</p>"
        + _table(header, rows)
        + _images(out, grids)
    )


def _ses(out: Path) -> str:
    from mlneurons.methods.readouts import SES_FILE, SentenceSimilarity

    if not (out / SES_FILE).exists():
        return ""
    result = SentenceSimilarity.load(out)
    mean = result.mean_offdiagonal().tolist()
    peak = max(range(len(mean)), key=mean.__getitem__)
    rows = [[layer, f"{value:.3f}"] for layer, value in enumerate(mean)]
    return (
        f"<p>Mean cosine of the mean-pooled residual states of {result.n_sentences} parallel "
        f"sentences, over every pair of {', '.join(result.languages)}; highest at layer "
        f"{peak}. Tang et al. find it high in the middle layers, where language neurons are "
        "few, and low at the bottom and top, where they concentrate (bars).</p>"
        + _images(out, ["ses.png"])
        + "<details><summary>per layer</summary>"
        + _table(["layer", "SES"], rows)
        + "</details>"
    )


def _logit_lens(out: Path) -> str:
    from mlneurons.methods.readouts import LATENT_FILE, LatentLanguage

    if not (out / LATENT_FILE).exists():
        return ""
    result = LatentLanguage.load(out)
    crossover = result.crossover_layer()
    rows = [
        [layer, f"{t:.4f}", f"{e:.4f}"]
        for layer, (t, e) in enumerate(zip(result.p_target.tolist(), result.p_english.tolist()))
    ]
    return (
        f"<p>Logit lens at the last position of {result.n_shots}-shot {result.source} → "
        f"{result.target} translation prompts ({result.n_items} words; dropped: "
        f"{result.n_dropped} with overlapping token sets, {result.n_copies} whose source "
        f"word shares a token with English). {result.target} overtakes English "
        + (f"from layer {crossover} on." if crossover is not None else "in no layer.")
        + "</p>"
        + _images(out, ["logit_lens.png"])
        + "<details><summary>per layer</summary>"
        + _table(["layer", f"P({result.target})", "P(en)"], rows)
        + "</details>"
    )


def _fingerprint(record: dict[str, Any], out: Path) -> str:
    model = None
    for name in ("summary.json", "probe.json", "lrp2.json", "steering.json", "ppl_matrix.json"):
        model = (_json(out, name) or {}).get("model")
        if model:
            break
    if not model:
        return "<p class=muted>no result yet</p>"
    prov = model.get("provenance") or {}
    rows = [
        [k, model.get(k)]
        for k in ("name", "n_layers", "d_mlp", "d_model", "hash", "dtype", "edited")
    ]
    rows += [[lib, v] for lib, v in (prov.get("versions") or {}).items()]
    rows.append(["requirements.lock sha256", prov.get("lock_hash")])
    return _table(["field", "value"], rows, left=(0, 1))


SECTIONS = (
    ("lape", "Language-specific neurons (LAPE, Tang et al. 2024)", _lape),
    ("ablate", "Deactivation: perplexity", _ablate),
    ("compare-methods", "LAPE against its baselines", _compare_methods),
    ("steer", "Steering the output language", _steer),
    ("steer-sweep", "Steering modes and strengths", _steer_sweep),
    ("fallback", "Fallback: which language answers without a language's neurons", _fallback),
    ("probe", "Factual probing: P@1 and Jaccard", _probe),
    ("fact-neurons", "PROBELESS fact neurons", _fact_neurons),
    ("trace", "Knowledge tracing", _trace),
    ("lrp2", "LRP2 projection (Xu et al. 2023)", _lrp2),
    ("ses", "Sentence-embedding similarity per layer (Tang et al. 2024)", _ses),
    ("logit-lens", "Latent language: the logit lens (Wendler et al. 2024)", _logit_lens),
)


def write_index(out: str | Path, record: dict[str, Any] | None = None) -> Path:
    """Write the self-contained ``index.html`` of a run directory and return its path."""
    out = Path(out)
    record = record if record is not None else _read_record(out)
    steps = record.get("steps", {})
    rows = [
        [
            name,
            s.get("status"),
            _num(s.get("wall_time_s"), 1),
            _num(s.get("cpu_time_s"), 1),
            s.get("command"),
        ]
        for name, s in steps.items()
    ]
    total = sum(s.get("wall_time_s") or 0 for s in steps.values())
    body = [
        f"<h1>mlneurons report: {_e(record.get('model_name', ''))}</h1>",
        f"<p>Budget <b>{_e(record.get('budget'))}</b>; steps took {total:.0f} s in all; written "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Open the interactive app on this run: "
        f"<code>{_e(app_command(out, record.get('model_name') or DEFAULT_MODEL))}</code></p>",
        "<h2>Steps</h2>",
        _table(
            ["step", "status", "wall (s)", "CPU (s)", "command that reproduces it"],
            rows,
            left=(0, 1, 4),
            cls="steps",
        ),
    ]
    for name, title, section in SECTIONS:
        step = steps.get(name, {})
        status, error = step.get("status", "not run"), step.get("error")
        content = section(out) if status == "done" else ""
        note = (
            ""
            if status == "done"
            else f"<p class=bad>{_e(status)}{_e(f': {error}' * bool(error))}</p>"
        )
        command = step.get("command")
        cmd = f"<pre>{_e(command)}</pre>" if command else ""
        body.append(f"<h2>{_e(title)}</h2>{cmd}{note}{content}")
    body += ["<h2>Model and versions</h2>", _fingerprint(record, out)]
    page = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>mlneurons report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    path = out / INDEX_FILE
    path.write_text(page, encoding="utf-8")
    return path


__all__ = ["BUDGETS", "STEPS", "Step", "app_command", "run_report", "step_argv", "write_index"]
