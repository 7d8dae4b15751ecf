"""``mlneurons trace``: knowledge tracing, fact presence in text x correctness (Zhao et al.)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import option
from mlneurons.interfaces.commands.inputs import user_input
from mlneurons.interfaces.commands.probe import (
    FACTS,
    FULL_FACTS,
    ReuseProbeConfig,
    facts_and_probing,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot

if TYPE_CHECKING:
    from mlneurons.methods.tracing import TracingResult


@dataclass(frozen=True)
class TraceConfig(ReuseProbeConfig):
    """``mlneurons trace``: knowledge tracing (Zhao et al.)."""

    method: ClassVar[str] = "trace"

    corpus: str = option("builtin", "'builtin' (default) or a folder of {lang}.txt")
    chunk_tokens: int = option(512, "co-occurrence window", minimum=1)


def run(cfg: TraceConfig, context: Context) -> TracingResult:
    """Was each fact in the language's text, and is it predicted correctly?"""
    from mlneurons.data.corpus import MultilingualCorpus, available_languages
    from mlneurons.methods.tracing import trace

    if cfg.corpus != "builtin":  # checked before probing
        with user_input():
            corpus = MultilingualCorpus.from_files(cfg.corpus)
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
        model=probing.model,
    )


def describe(result: TracingResult) -> list[str]:
    lines = ["facts per tracing code (Zhao et al.): is the fact in the language's text, and is "
             "it predicted correctly?"]  # fmt: skip
    for lang, row in result.breakdown().items():
        lines.append(f"{lang}: " + ", ".join(f"{k} {v}" for k, v in row.items() if v))
    return lines


def tables(result: TracingResult) -> list[Table]:
    from mlneurons.methods.tracing import CODES

    rows = []
    for lang in result.languages:
        codes = list(result.codes.get(lang, {}).values())
        rows.append([lang, *(codes.count(code) for code in CODES)])
    return [Table(["language", *CODES.values()], rows)]


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
