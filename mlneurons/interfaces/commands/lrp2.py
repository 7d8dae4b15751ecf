"""``mlneurons lrp2``: LIRP/LSRP projection into a pivot language (Xu et al. 2023)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import option
from mlneurons.interfaces.commands.inputs import load_facts
from mlneurons.interfaces.commands.probe import FactsConfig
from mlneurons.interfaces.spec import Command, Context, Step, Table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.methods.lrp2 import LRP2Result


@dataclass(frozen=True)
class Lrp2Config(FactsConfig):
    """``mlneurons lrp2``: LIRP/LSRP projection (Xu et al. 2023)."""

    method: ClassVar[str] = "lrp2"

    pivot: str = option("en", "language projected into")
    layers: Sequence[int] | None = option(
        None, "comma-separated candidate layers of the grid (default: every third block)"
    )
    sentences: int = option(
        200, "built-in sentences per language for the language vectors", minimum=1
    )
    k: int = option(50, "PROBELESS neurons per fact", minimum=1)


def run(cfg: Lrp2Config, context: Context) -> LRP2Result:
    """Language vectors, per-language (LIRP, LSRP) chosen on dev facts, test P@1 and Trans."""
    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.methods.lrp2 import (
        check_languages,
        check_layers,
        evaluate_lrp2,
        language_vectors,
    )

    facts = load_facts(cfg)
    pivot = check_languages(facts, cfg.pivot)
    model = context.model(cfg)
    layers = check_layers(model, cfg.layers)
    corpus = MultilingualCorpus.builtin(facts.languages, split="all")
    # under torchrun the vectors are a sharded pass, the grid rank 0's
    shards = context.out / "vector-shards" if context.parallel and context.out else None
    vectors = language_vectors(model, corpus, max_sentences=cfg.sentences, shards=shards)
    assert vectors is not None  # None only for shards on a rank that cannot reach the others
    context.only_rank_0()
    context.keep(vectors)
    return evaluate_lrp2(
        model, facts, vectors, pivot=pivot, layers=layers, k=cfg.k, batch_size=cfg.batch_size
    )


def describe(result: LRP2Result) -> list[str]:
    lines = [
        f"projection into {result.pivot}: layer pair chosen on dev facts among "
        f"{result.layers}, reported on test facts (before → after)"
    ]
    for lang in result.languages:
        p1, trans = result.test_p_at_1[lang], result.trans[lang]
        lines.append(
            f"{lang}: layers {result.selected[lang]}, test P@1 {p1['before']:.1%} -> "
            f"{p1['after']:.1%}, Trans {trans['before']:.2f} -> {trans['after']:.2f}"
        )
    return lines


def tables(result: LRP2Result) -> list[Table]:
    def num(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    rows = []
    for lang in result.languages:
        p1, trans = result.test_p_at_1[lang], result.trans[lang]
        overlap = result.neuron_overlap[lang]
        rows.append(
            [
                lang,
                tuple(result.selected[lang]),
                f"{100 * p1['before']:.1f}% → {100 * p1['after']:.1f}%",
                f"{num(trans['before'])} → {num(trans['after'])}",
                f"{num(overlap['before'])} → {num(overlap['after'])}",
            ]
        )
    header = ["language", "selected (LIRP, LSRP)", "test P@1", "Trans"]
    return [Table([*header, f"fact-neuron overlap with {result.pivot}"], rows)]


def figures(result: LRP2Result, cfg: Lrp2Config, out: Path) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    return {
        f"lrp2_grid_{lang}.png": functools.partial(plots.plot_lrp2_grid, result, lang)
        for lang in result.languages
    }


SPEC = Command(
    name="lrp2",
    title="LRP2 projection (Xu et al. 2023)",
    config=Lrp2Config,
    result="mlneurons.methods.lrp2:LRP2Result",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(
        budgets={
            "default": {
                "languages": ("en", "de", "zh"),
                "max_facts_per_relation": 6,
                "layers": (3, 15),
                "sentences": 60,
            },
            "full": {"languages": ("en", "de", "fr", "zh"), "max_facts_per_relation": 6},
        }
    ),
    parallel=True,
)
