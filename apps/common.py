"""What every page of the mlneurons app shares: the run, the model, live forwards, exports.

Saved results load with ``st.cache_data`` (keyed by path and modification time) and never
need a model. The model loads only for live views, once per process
(``st.cache_resource(max_entries=1)``); every hooked forward holds :data:`LOCK`, because the
model is shared by all sessions and one session's hooks must never fire in another's pass.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import shlex
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from mlneurons.models import DEFAULT_MODEL
from mlneurons.models.bridge import TransformerBridge

LOCK = threading.Lock()
"""Held around every forward pass with hooks (the model is shared across sessions)."""


# ---- the run --------------------------------------------------------------------------


def cli_args() -> argparse.Namespace:
    """``--run DIR`` and ``--model NAME`` given after ``--`` to ``streamlit run``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--run", default="")
    parser.add_argument("--model", default="")
    return parser.parse_known_args(sys.argv[1:])[0]


def run_dir() -> Path | None:
    """The run directory of this session (sidebar, ``?run=`` or ``--run``), if it exists."""
    text = str(st.session_state.get("run") or "").strip()
    path = Path(text).expanduser() if text else None
    return path if path is not None and path.is_dir() else None


def has(run: Path | None, *names: str) -> bool:
    return run is not None and all((run / name).exists() for name in names)


def require(run: Path | None, *names: str) -> bool:
    """True when the run holds every file; otherwise say which command writes the first missing."""
    from mlneurons.interfaces.commands import producer_of

    for name in names:
        if not has(run, name):
            where = run if run is not None else Path("DIR")
            spec = producer_of(name)
            st.info(f"This run has no `{name}`. Produce it with:")
            st.code(
                (spec.producer(where) + "\n# or everything at once:\n" if spec else "")
                + f"mlneurons report --out {shlex.quote(str(where))}",
                language="bash",
            )
            return False
    return True


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


@st.cache_data(show_spinner=False, max_entries=64)
def _json(path: str, mtime: float) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read(run: Path, name: str) -> Any:
    """A JSON file of the run, or None when it is absent."""
    path = run / name
    return _json(str(path), _mtime(path)) if path.exists() else None


@st.cache_data(show_spinner=False, max_entries=4)
def _stats(path: str, mtime: float) -> Any:
    from mlneurons.stats.activation import ActivationStats

    return ActivationStats.load(path)


def stats(run: Path) -> Any:
    """The run's ActivationStats, or None."""
    path = run / "stats.safetensors"
    return _stats(str(path), _mtime(path)) if path.exists() else None


@st.cache_data(show_spinner=False, max_entries=16)
def _select(path: str, mtime: float, top_rate: float, filter_rate: float, bar: float) -> Any:
    from mlneurons.methods import lape

    data = _stats(path, mtime)
    return lape.select(data, top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=bar)


def selection(run: Path, top_rate: float, filter_rate: float, bar: float = 0.95) -> Any:
    """LAPE neurons re-selected from ``stats.safetensors`` (no forward pass)."""
    path = run / "stats.safetensors"
    return _select(str(path), _mtime(path), top_rate, filter_rate, bar)


@st.cache_data(show_spinner=False, max_entries=4)
def _neurons(path: str, mtime: float) -> Any:
    from mlneurons.methods.lape import LanguageNeurons

    return LanguageNeurons.load(path)


def saved_neurons(run: Path) -> Any:
    """The run's ``neurons.json`` as LanguageNeurons, or None."""
    path = run / "neurons.json"
    return _neurons(str(path), _mtime(path)) if path.exists() else None


def recorded_model(run: Path | None) -> dict[str, Any]:
    """The model fingerprint recorded by any result of the run."""
    if run is None:
        return {}
    for name in (
        "summary.json",
        "neurons_meta.json",
        "probe.json",
        "ppl_matrix.json",
        "heads.json",
    ):
        data = read(run, name) if has(run, name) else None
        if data and data.get("model"):
            return data["model"]
    data = stats(run)
    return data.model if data is not None else {}


def model_name(run: Path | None) -> str:
    """The sidebar's model, else the one the run recorded, else the built-in Gemma."""
    chosen = str(st.session_state.get("model") or "").strip()
    return chosen or recorded_model(run).get("name") or DEFAULT_MODEL


# ---- the model --------------------------------------------------------------------------

_LOADED: set[str] = set()


@st.cache_resource(max_entries=1, show_spinner=False)
def _load_model(name: str) -> TransformerBridge:
    import torch

    import mlneurons

    # Live views run small forwards (one prompt). With several threads each small op waits
    # for a thread the OS gave to another process: on 2 busy cores a 64-token forward of the
    # built-in Gemma took 0.6 to 13 s with 2 threads and 0.35 to 0.4 s with 1.
    torch.set_num_threads(int(os.environ.get("MLNEURONS_APP_THREADS", "1")))
    return mlneurons.load_model(name)


def live() -> bool:
    return bool(st.session_state.get("live", True))


def get_model(run: Path | None) -> TransformerBridge | None:
    """The model for live views, loaded once per process with progress; None if off or failed."""
    if not live():
        st.caption("Live views are off (sidebar): nothing here needs a model.")
        return None
    name = model_name(run)
    if name in _LOADED:
        return _load_model(name)
    with st.status(f"Loading model {name} (once per process)...", expanded=True) as status:
        try:
            model = _load_model(name)
            status.update(label=f"Model {name} loaded", state="complete", expanded=False)
        except Exception as exc:  # shown, never raised: the saved views stay usable
            status.update(label=f"Could not load model {name}", state="error")
            st.error(f"Could not load model {name!r}: {one_line(exc)}")
            return None
    _LOADED.clear()  # max_entries=1: loading this model dropped any other
    _LOADED.add(name)
    recorded = recorded_model(run)
    if recorded.get("hash"):
        from mlneurons.models.fingerprint import fingerprint

        if fingerprint(model)["hash"] != recorded["hash"]:
            st.warning(
                f"Model {name!r} is not the model this run was computed on "
                f"({recorded.get('name')!r}, hash {recorded['hash']}): live views may not match."
            )
    return model


def one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


@contextmanager
def shown_errors(what: str) -> Iterator[None]:
    """Show an exception of a live view as an error box instead of a broken page."""
    try:
        yield
    except Exception as exc:
        st.error(f"{what} failed: {one_line(exc)}")


# ---- live forwards (mlneurons.methods.inspection, holding LOCK) ---------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def activations(
    name: str, texts: tuple[str, ...], pairs: tuple[tuple[int, int], ...], _model: TransformerBridge
) -> list[tuple[list[str], np.ndarray]]:
    """Per text: display tokens and ``[tokens, neurons]`` activations of ``pairs``, cached
    by model name, texts and neurons."""
    from mlneurons.methods.inspection import neuron_activations

    found = neuron_activations(_model, texts, pairs, lock=LOCK)
    return [(tokens, values.numpy()) for tokens, values in found]


@st.cache_data(show_spinner=False, max_entries=32)
def loss_change(
    name: str, text: str, off: tuple[tuple[int, int], ...], _model: TransformerBridge
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Display tokens of ``text`` with their losses without and with ``off`` deactivated."""
    from mlneurons.methods.inspection import loss_change as change

    tokens, before, after = change(_model, text, off, lock=LOCK)
    return tokens, before.numpy(), after.numpy()


@st.cache_data(show_spinner=False, max_entries=64)
def candidate_scores(
    name: str, sentences: tuple[str, ...], _model: TransformerBridge
) -> np.ndarray:
    """Log-likelihood of each candidate sentence (mlneurons.methods.probing), cached."""
    from mlneurons.methods.probing.causal import candidate_scores as scores

    with LOCK:  # no hooks of ours, but another session's must not be attached meanwhile
        return scores(_model, list(sentences)).numpy()


@st.cache_data(show_spinner=False, max_entries=32)
def attention(
    name: str, texts: tuple[str, ...], layer: int, head: int, _model: TransformerBridge
) -> list[tuple[list[str], np.ndarray]]:
    """Per text: display tokens (BOS kept) and head ``(layer, head)``'s ``[to, from]``
    attention pattern (mlneurons.methods.heads.attention_patterns), cached."""
    from mlneurons.methods.heads import attention_patterns

    found = attention_patterns(_model, texts, layer, head, lock=LOCK)
    return [(tokens, pattern.numpy()) for tokens, pattern in found]


@st.cache_data(show_spinner=False)
def parallel_heads_sentences(languages: tuple[str, ...], n: int = 40) -> dict[str, list[str]]:
    """Built-in parallel sentences (mlneurons.data.parallel) of the languages that have them."""
    from mlneurons.data.facts import BUILTIN_LANGUAGES
    from mlneurons.data.parallel import builtin_parallel_sentences

    known = [lang for lang in languages if lang in BUILTIN_LANGUAGES]
    return builtin_parallel_sentences(known, n=n) if known else {}


@st.cache_resource(show_spinner=False, max_entries=4)
def _vectors(path: str, mtime: float) -> Any:
    from mlneurons.methods.lrp2 import LanguageVectors

    return LanguageVectors.load(path)


def language_vectors(run: Path) -> Any:
    """The run's LRP2 language vectors, or None."""
    path = run / "language_vectors.safetensors"
    return _vectors(str(path), _mtime(path)) if path.exists() else None


def next_token_table(
    model: TransformerBridge, text: str, hooks: list, k: int = 10
) -> list[dict[str, Any]]:
    """The ``k`` most likely next tokens after ``text`` under ``hooks``."""
    from mlneurons.methods.inspection import next_token_table as table

    return [
        {"token": shown(t.token), "probability": round(t.probability, 4)}
        for t in table(model, text, hooks=hooks, k=k, lock=LOCK)
    ]


@st.cache_data(show_spinner=False, max_entries=64)
def logit_effects(
    name: str, layer: int, neuron: int, _model: TransformerBridge, k: int = 10
) -> tuple[list, list]:
    """Tokens the neuron promotes and suppresses most: its W_out row times W_U (no forward)."""
    from mlneurons.methods.inspection import logit_effects as effects

    promoted, suppressed = effects(_model, layer, neuron, k=k)
    rows = [
        [{"token": t.token, "logit": round(t.logit, 3)} for t in ts]
        for ts in (promoted, suppressed)
    ]
    return rows[0], rows[1]


def identify(text: str, languages: Sequence[str]) -> tuple[str, float]:
    """Language of ``text`` among ``languages`` (mlneurons.evaluation.langid) and the identifier's confidence."""
    from mlneurons.evaluation.langid import identify as identify_language

    try:
        code = identify_language(text, languages=list(languages))
    except Exception:
        code = identify_language(text)
    if code == "unknown":
        return code, 0.0
    import copy

    identifier = copy.copy(_confidence_model())  # set_languages must not touch the shared one
    identifier.set_languages(sorted(set(languages) | {code}))
    return code, float(dict(identifier.rank(text)).get(code, 0.0))


@functools.cache
def _confidence_model() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


# ---- circuitsvis ---------------------------------------------------------------------


def _parts(html: Any) -> tuple[str, str]:
    """The element id and the render call of a circuitsvis view (its local, offline source)."""
    src = html.local_src
    script = src.index("<script")
    head, body = src[:script], src[src.index(">", script) + 1 : src.rindex("</script>")]
    call = body[body.rindex("CircuitsVis.render(") :]
    return head.split('id="')[1].split('"')[0], call


def iframe(
    views: Sequence[tuple[str, Any]],
    *,
    columns: int = 1,
    wide: Sequence[tuple[str, Any]] = (),
    height: int = 300,
) -> None:
    """Show circuitsvis views in ONE iframe that inlines the bundled script once (offline).

    ``views`` are ``(title, RenderedHTML)`` laid out in ``columns`` side by side; ``wide``
    views follow at full width.
    """
    every = [*views, *wide]
    if not every:
        return
    first = every[0][1].local_src
    script_start = first.index(">", first.index("<script")) + 1
    bundle = first[script_start : first.rindex("CircuitsVis.render(")]
    cells, calls = [], []
    for k, (title, view) in enumerate(every):
        element, call = _parts(view)
        span = " style='grid-column:1/-1'" if k >= len(views) else ""
        label = f"<div class='t'>{title}</div>" if title else ""
        cells.append(f"<div{span} dir='auto'>{label}<div id='{element}'></div></div>")
        calls.append(call)
    style = (
        "<style>body{font-family:sans-serif;margin:0}"
        f".g{{display:grid;grid-template-columns:repeat({columns},minmax(0,1fr));gap:0 16px}}"
        ".t{font-weight:600;font-size:14px;margin-top:6px}</style>"
    )
    doc = (
        f"<html><head><meta charset='utf-8'>{style}</head><body><div class='g'>{''.join(cells)}"
        f"</div><script type='module'>{bundle}\n{chr(10).join(calls)}</script></body></html>"
    )
    st.iframe(doc, height=height)


# ---- exports and state ------------------------------------------------------------------


def download_json(label: str, data: Any, file_name: str, key: str) -> None:
    st.download_button(
        label,
        lambda: json.dumps(data, ensure_ascii=False, indent=1),
        file_name=file_name,
        mime="application/json",
        key=key,
        on_click="ignore",
    )


def download_csv(label: str, frame: Any, file_name: str, key: str) -> None:
    st.download_button(
        label,
        lambda: frame.to_csv(),
        file_name=file_name,
        mime="text/csv",
        key=key,
        on_click="ignore",
    )


def download_png(label: str, make_figure: Any, file_name: str, key: str) -> None:
    """A PNG made only when clicked (``make_figure`` returns a matplotlib Figure)."""

    def png() -> bytes:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure = make_figure()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
        plt.close(figure)
        return buffer.getvalue()

    st.download_button(
        label, png, file_name=file_name, mime="image/png", key=key, on_click="ignore"
    )


def reproduce(run: Path, command: str) -> None:
    """Show the command line that reproduces a command's result: its config in the run's
    ``cfg.json`` (``Config.to_argv``), else a command that writes it."""
    from mlneurons.interfaces.commands import command as spec_of

    spec = spec_of(command)
    recorded = spec.reproduce(run)
    with st.expander(f"Reproduce: `mlneurons {command}`"):
        if recorded:
            st.caption("From the config this run recorded (cfg.json):")
            st.code(recorded, language="bash")
        else:
            st.caption("This run records no config for it (cfg.json); a command that writes it:")
            st.code(spec.producer(run), language="bash")


@st.cache_data(show_spinner=False, max_entries=32)
def _result(run: str, command: str, mtime: float) -> Any:
    from mlneurons.interfaces.commands import command as spec_of

    return spec_of(command).load(run)


def result(run: Path, command: str) -> Any:
    """The result of ``command`` in the run, read through its result class (cached), or None."""
    from mlneurons.interfaces.commands import command as spec_of

    spec = spec_of(command)
    if not spec.saved(run):
        return None
    mtime = max(_mtime(run / name) for name in spec.result_class().files())
    return _result(str(run), command, mtime)


def describe(run: Path, command: str) -> None:
    """The findings of a command's result in this run, worded as the CLI and report word them."""
    from mlneurons.interfaces.commands import command as spec_of

    for line in spec_of(command).describe(result(run, command)):
        st.caption(line)


def command_table(run: Path, command: str, index: int = 0) -> Any:
    """Table ``index`` of a command's result in this run as the report shows it (values with
    their intervals, not-significant differences flagged), and its caption."""
    import pandas as pd

    from mlneurons.interfaces.commands import command as spec_of

    table = spec_of(command).tables(result(run, command))[index]
    frame = pd.DataFrame(table.rows, columns=table.header)
    st.dataframe(frame, hide_index=True)
    st.caption(table.caption)
    return frame


def change_matrix(change: Any, intervals: dict[str, dict[str, Any]] | None) -> Any:
    """A relative-change matrix in % (a DataFrame, rows deactivated) coloured by value;
    with intervals (``Estimate`` per cell), each cell reads ``value [lo, hi]``, and
    ``n.s.`` where the interval covers 0."""
    if intervals is None:
        return change.style.format("{:+.3g}").background_gradient(cmap="Reds", axis=None)

    def cell(row: str, column: str) -> str:
        e = intervals[row][column]
        text = f"{100 * e.value:+.3g} [{100 * e.lo:+.3g}, {100 * e.hi:+.3g}]"
        return text + (" n.s." if not e.excludes(0) else "")

    texts = change.copy().astype(object)
    for row in change.index:
        for column in change.columns:
            texts.loc[row, column] = cell(row, column)
    return texts.style.background_gradient(cmap="Reds", axis=None, gmap=change.to_numpy())


@st.cache_data(show_spinner=False, max_entries=8)
def fact_set(facts: dict[str, Any]) -> Any:
    """Rebuild the fact set a result describes (built-in, mLAMA or BMLAMA), or None."""
    from mlneurons.data.facts import FactSet

    languages, relations = facts.get("languages"), facts.get("relations")
    if facts.get("source") == "builtin":
        return FactSet.builtin(languages=languages, relations=relations)
    if facts.get("source") == "mlama" and Path(str(facts.get("directory"))).is_dir():
        return FactSet.from_mlama(facts["directory"], languages=languages, relations=relations)
    if facts.get("source") == "bmlama" and Path(str(facts.get("directory"))).is_dir():
        return FactSet.from_bmlama(facts["directory"], languages=languages, relations=relations)
    return None


def parallel_sentences(languages: Sequence[str]) -> dict[str, list[str]]:
    """The built-in steering questions, parallel across languages (empty where there are none)."""
    from mlneurons.data.questions import load_questions, question_languages

    have = set(question_languages())
    return {lang: load_questions(lang) if lang in have else [] for lang in languages}


@st.cache_data(show_spinner=False)
def heldout_text(language: str, n_chars: int = 400) -> str:
    """The start of the built-in held-out text of a language ('' when there is none)."""
    from mlneurons.data.corpus import MultilingualCorpus, available_languages

    if language not in available_languages():
        return ""
    paragraphs = MultilingualCorpus.builtin([language], split="heldout").sources[language]()
    text = " ".join(paragraphs)
    cut = text.rfind(" ", 0, n_chars)  # whole words, where the script has spaces
    return text[: cut if cut > n_chars // 2 else n_chars]


def colour_bound(values: Sequence[np.ndarray]) -> float:
    """One symmetric colour scale for several views: the largest absolute value of any."""
    return max(1e-6, *(float(np.abs(v).max()) for v in values if len(v)))


def shown(token: str) -> str:
    """A token as a table shows it: whitespace-only tokens spelled out (``'\\n'``)."""
    return token if token.strip() else repr(token)


def neuron_label(pair: Sequence[int]) -> str:
    return f"L{int(pair[0])} N{int(pair[1])}"
