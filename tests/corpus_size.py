"""``mlneurons corpus-size``: a small command added the way every command is (tests/test_commands.py).

Adding it to mlneurons means this module as ``mlneurons/interfaces/commands/corpus_size.py``
and one line in the registry ``COMMANDS`` of ``mlneurons/interfaces/commands/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from mlneurons.config import Config, option
from mlneurons.interfaces.spec import Command, Context, Step, Table
from mlneurons.results import Result


@dataclass
class CorpusSize(Result):
    """Words of the built-in text per language."""

    FILE: ClassVar[str] = "corpus_size.json"

    split: str
    words: dict[str, int]


@dataclass(frozen=True)
class CorpusSizeConfig(Config):
    """``mlneurons corpus-size``: words of the built-in text per language."""

    method: ClassVar[str] = "corpus-size"

    languages: Sequence[str] = option(("en", "fr"), "comma-separated languages")
    split: Literal["train", "heldout", "all"] = option("heldout", "which part of the text")


def run(cfg: CorpusSizeConfig, context: Context) -> CorpusSize:
    from mlneurons.data.corpus import MultilingualCorpus

    corpus = MultilingualCorpus.builtin(list(cfg.languages), split=cfg.split)
    words = {lang: sum(len(p.split()) for p in corpus.sources[lang]()) for lang in corpus.languages}
    return CorpusSize(cfg.split, words)


def describe(result: CorpusSize) -> list[str]:
    return [", ".join(f"{lang} {n} words" for lang, n in result.words.items())]


def tables(result: CorpusSize) -> list[Table]:
    return [Table(["language", "words"], [[lang, n] for lang, n in result.words.items()])]


def figures(result: CorpusSize, cfg: CorpusSizeConfig, out: Path) -> dict[str, Any]:
    return {}


SPEC = Command(
    name="corpus-size",
    title="Size of the built-in text",
    config=CorpusSizeConfig,
    result=f"{__name__}:CorpusSize",
    run=run,
    describe=describe,
    tables=tables,
    figures=figures,
    step=Step(budgets={"default": {"languages": ("en", "de")}, "full": {}}),
)
