"""``mlneurons lrp2``: LIRP/LSRP projection into a pivot language (Xu et al. 2023)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import option
from mlneurons.interfaces.commands.inputs import load_facts, uncertainty
from mlneurons.interfaces.commands.probe import FactsConfig
from mlneurons.interfaces.spec import Command, Context, Step, Table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.evaluation.uncertainty import Estimate, PairedTest
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
        model,
        facts,
        vectors,
        pivot=pivot,
        layers=layers,
        k=cfg.k,
        batch_size=cfg.batch_size,
        uncertainty=uncertainty(cfg),
    )


def _points(estimate: Estimate) -> str:
    """A difference of rates in percentage points: ``+16.7 pp [-8.3, +41.7]``."""
    return f"{100 * estimate.value:+.1f} pp [{100 * estimate.lo:+.1f}, {100 * estimate.hi:+.1f}]"


def _verdict(test: PairedTest) -> str:
    """``exact McNemar p = 0.50, not significant`` (or ``significant``)."""
    from mlneurons.methods.probing.result import p_value_text

    word = "significant" if test.significant() else "not significant"
    return f"{test.test} {p_value_text(test.p_value)}, {word}"


def _runner_up_line(result: LRP2Result, lang: str) -> str | None:
    """Whether the selected pair is distinguishable from the runner-up on the dev facts."""
    from mlneurons.evaluation.uncertainty import PairedTest
    from mlneurons.methods.probing.result import p_value_text

    other = result.runner_up.get(lang)
    if not other:
        return None
    test = PairedTest.from_json(other["test"])
    chosen, second = tuple(result.selected[lang]), tuple(other["pair"])
    word = "distinguishable" if other["distinguishable"] else "not distinguishable"
    return (
        f"{lang}: the selected pair {chosen} (dev P@1 {test.after.value:.1%}) is {word} from the "
        f"runner-up {second} ({test.before.value:.1%}): {test.test} {p_value_text(test.p_value)} "
        f"on {test.difference.n} dev facts"
    )


def describe(result: LRP2Result) -> list[str]:
    how = result.uncertainty()
    tie = result.settings.get("tie_rule", "")
    lines = [
        f"projection into {result.pivot}: layer pair chosen on dev facts among "
        f"{result.layers}{f' ({tie})' if tie else ''}, reported on test facts (before → after)"
        + (f"; {how.confidence:.0%} intervals" if result.outcomes else "")
    ]
    tests, trans_ci = result.p_at_1_tests(), result.trans_intervals()
    for lang in result.languages:
        p1, trans = result.test_p_at_1[lang], result.trans[lang]
        if lang not in tests:  # saved before intervals existed
            lines.append(
                f"{lang}: layers {result.selected[lang]}, test P@1 {p1['before']:.1%} -> "
                f"{p1['after']:.1%}, Trans {trans['before']:.2f} -> {trans['after']:.2f}"
            )
            continue
        test, ci = tests[lang], trans_ci.get(lang, {})
        before, after = (
            ci[side].text(".2f") if side in ci else f"{trans[side]:.2f}"
            for side in ("before", "after")
        )
        change = f" (change {ci['change'].text('+.2f')})" if "change" in ci else ""
        lines.append(
            f"{lang}: layers {result.selected[lang]}, test P@1 {test.before.text()} -> "
            f"{test.after.text()}, {_points(test.difference)}, {_verdict(test)}; "
            f"Trans {before} -> {after}{change}"
        )
    lines += [line for lang in result.languages if (line := _runner_up_line(result, lang))]
    return lines


def tables(result: LRP2Result) -> list[Table]:
    from mlneurons.methods.probing.result import p_value_text

    def num(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    def side(ci: dict[str, Estimate], key: str, value: float | None) -> str:
        return ci[key].text(".2f") if key in ci else num(value)

    tests, trans_ci = result.p_at_1_tests(), result.trans_intervals()
    overlap_ci = result.overlap_intervals()
    rows = []
    for lang in result.languages:
        p1, trans = result.test_p_at_1[lang], result.trans[lang]
        overlap = result.neuron_overlap[lang]
        test, ci, oci = tests.get(lang), trans_ci.get(lang, {}), overlap_ci.get(lang, {})
        other = result.runner_up.get(lang)
        rows.append(
            [
                lang,
                tuple(result.selected[lang]),
                "–"
                if not other
                else f"{tuple(other['pair'])}, "
                + ("distinct" if other["distinguishable"] else "n.s.")
                + f" ({p_value_text(other['test']['p_value'])})",
                test.before.text() if test else f"{p1['before']:.1%}",
                test.after.text() if test else f"{p1['after']:.1%}",
                _points(test.difference) if test else "–",
                "–"
                if not test
                else p_value_text(test.p_value).removeprefix("p = ")
                + ("" if test.significant() else " n.s."),
                f"{side(ci, 'before', trans['before'])} → {side(ci, 'after', trans['after'])}",
                f"{side(oci, 'before', overlap['before'])} → {side(oci, 'after', overlap['after'])}",
            ]
        )
    how = result.uncertainty()
    level = f"{how.confidence:.0%}"
    header = [
        "language",
        "selected (LIRP, LSRP)",
        "runner-up (dev, exact McNemar)",
        "test P@1 before",
        "after",
        "change",
        "exact McNemar p",
        f"Trans [{level} CI]",
        f"fact-neuron overlap with {result.pivot}",
    ]
    caption = (
        f"Test P@1 with {level} Wilson intervals; change: paired bootstrap interval over the "
        f"same test facts ({how.samples} resamples, seed {how.seed}); p: exact McNemar on the "
        f"discordant facts, n.s.: not significant at {1 - how.confidence:.0%}. Trans and the "
        "fact-neuron overlap: bootstrap over the facts they are computed on. Runner-up: the "
        "second pair of the dev grid, tested against the selected one on the dev facts."
    )
    return [Table(header, rows, caption if tests else "")]


def figures(result: LRP2Result, cfg: Lrp2Config, out: Path) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    grids: dict[str, Callable[[], Figure]] = {
        f"lrp2_grid_{lang}.png": functools.partial(plots.plot_lrp2_grid, result, lang)
        for lang in result.languages
    }
    if not result.outcomes:
        return grids
    return {"lrp2_p_at_1.png": functools.partial(plots.plot_lrp2_p_at_1, result), **grids}


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
                "languages": ("en", "zh"),
                "max_facts_per_relation": 6,
                "layers": (3, 15),
                "sentences": 60,
            },
            "full": {"languages": ("en", "de", "fr", "zh"), "max_facts_per_relation": 6},
        }
    ),
    parallel=True,
)
