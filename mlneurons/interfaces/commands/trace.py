"""``mlneurons trace``: knowledge tracing, fact presence in text x correctness (Zhao et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import option
from mlneurons.errors import UserError
from mlneurons.interfaces.commands.inputs import load_facts, uncertainty, user_input
from mlneurons.interfaces.commands.probe import (
    FACTS,
    FULL_FACTS,
    ReuseProbeConfig,
    facts_and_probing,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot
from mlneurons.methods.tracing import Matching

if TYPE_CHECKING:
    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.methods.tracing import TracingResult

HF = "hf:"


@dataclass(frozen=True)
class TraceConfig(ReuseProbeConfig):
    """``mlneurons trace``: knowledge tracing (Zhao et al.)."""

    method: ClassVar[str] = "trace"

    corpus: str = option(
        "builtin",
        "'builtin' (default); a folder of {lang}.txt; or hf:DIR_OR_NAME[:CONFIG], a datasets "
        "corpus: a save_to_disk folder, a folder of {lang}.jsonl/.json/.parquet/.csv files, "
        "or a dataset in the local Hugging Face cache (streamed, offline)",
    )
    text_column: str = option("text", "hf: corpora: the column holding the text")
    language_column: str | None = option(
        None, "hf: corpora: the column holding each row's language (default: the splits)"
    )
    chunk_tokens: int = option(512, "co-occurrence window", minimum=1)
    match: Matching = option(
        "exact",
        "exact: casefolded labels, whole words (Zhao); stem: word by word by Snowball stem "
        "where a stemmer exists (de, fr, ru, es...), exact in other languages",
    )

    def check(self) -> None:
        super().check()
        hf = self.corpus.startswith(HF)
        if self.text_column != "text" and not hf:
            raise UserError(f"text_column={self.text_column!r} applies only to an hf: corpus")
        if self.language_column is not None and not hf:
            raise UserError(
                f"language_column={self.language_column!r} applies only to an hf: corpus"
            )


def open_corpus(cfg: TraceConfig) -> MultilingualCorpus:
    """The corpus of ``cfg.corpus`` other than the built-in one, restricted to the facts'
    languages, checked (exists, has the columns, has text) before anything long runs."""
    from mlneurons.data.corpus import MultilingualCorpus

    languages = load_facts(cfg).languages
    with user_input():
        if cfg.corpus.startswith(HF):
            source, config = hf_source(cfg.corpus[len(HF) :])
            corpus = MultilingualCorpus.from_hf(
                source,
                config,
                text_column=cfg.text_column,
                language_column=cfg.language_column,
                languages=languages,
            )
        else:
            corpus = MultilingualCorpus.from_files(cfg.corpus)
    shared = [lang for lang in languages if lang in corpus.languages]
    if not shared:
        raise UserError(
            f"corpus {cfg.corpus!r} has none of the facts' languages ({', '.join(languages)}); "
            f"it has {', '.join(corpus.languages)}"
        )
    with user_input():
        if not any(corpus.has_text(lang) for lang in shared):
            raise UserError(f"corpus {cfg.corpus!r} is empty: no text in {', '.join(shared)}")
    return corpus.subset(shared)


def hf_source(spec: str) -> tuple[str, str | None]:
    """``DIR_OR_NAME[:CONFIG]`` -> (folder or name, config); an existing path is whole."""
    if not spec:
        raise UserError("corpus 'hf:' names no dataset; give hf:DIR or hf:NAME[:CONFIG]")
    if Path(spec).exists() or ":" not in spec:
        return spec, None
    name, config = spec.rsplit(":", 1)
    return name, config or None


def run(cfg: TraceConfig, context: Context) -> TracingResult:
    """Was each fact in the language's text, and is it predicted correctly?"""
    from mlneurons.data.corpus import MultilingualCorpus, available_languages
    from mlneurons.methods.tracing import trace

    if cfg.corpus != "builtin":  # checked before probing
        corpus = open_corpus(cfg)
    facts, model, probing = facts_and_probing(cfg, context)
    context.only_rank_0()
    if cfg.corpus == "builtin":  # languages without built-in text get code -1
        with_text = [lang for lang in facts.languages if lang in available_languages()]
        corpus = MultilingualCorpus.builtin(with_text, split="all")
    return trace(
        facts,
        corpus,
        model.tokenizer,
        probing.correct_map(),
        chunk_tokens=cfg.chunk_tokens,
        match=cfg.match,
        model=probing.model,
        uncertainty=uncertainty(cfg),
    )


def describe(result: TracingResult) -> list[str]:
    lines = ["facts per tracing code (Zhao et al.): is the fact in the language's text, and is "
             "it predicted correctly?"]  # fmt: skip
    if result.settings.get("match") == "stem":
        stemmed = result.settings.get("stemmed", [])
        exact = [lang for lang in result.languages if lang not in stemmed]
        lines.append(
            f"entities matched by word stem (Snowball) in {', '.join(stemmed) or 'no language'}"
            + (f"; exactly in {', '.join(exact)} (no stemmer)" if exact else "")
        )
    shares = result.shares()
    for lang, row in result.breakdown().items():
        present = (
            f" (present in its text: {shares[lang]['present'].text()})" if lang in shares else ""
        )
        lines.append(f"{lang}: " + ", ".join(f"{k} {v}" for k, v in row.items() if v) + present)
    return lines


def tables(result: TracingResult) -> list[Table]:
    from mlneurons.methods.tracing import CODES

    rows = []
    shares = result.shares()
    for lang in result.languages:
        codes = list(result.codes.get(lang, {}).values())
        present = shares[lang]["present"].text() if lang in shares else "–"
        rows.append([lang, *(codes.count(code) for code in CODES), present])
    caption = (
        "Facts per tracing code; present = share of the facts found in the text (Wilson interval)."
    )
    return [Table(["language", *CODES.values(), "present"], rows, caption)]


SPEC = Command(
    name="trace",
    title="Knowledge tracing",
    config=TraceConfig,
    result="mlneurons.methods.tracing:TracingResult",
    run=run,
    describe=describe,
    figures=plot("trace.png", "plot_tracing"),
    tables=tables,
    step=Step(budgets={"default": FACTS, "full": FULL_FACTS}, reuse="probe", needs=("probe",)),
    parallel=lambda cfg: not cfg.probe,  # a reused probing result: rank 0 alone
)
