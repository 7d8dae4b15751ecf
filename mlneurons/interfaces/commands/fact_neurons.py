"""``mlneurons fact-neurons``: PROBELESS fact neurons and their language overlap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import option
from mlneurons.interfaces.commands.inputs import uncertainty
from mlneurons.interfaces.commands.probe import (
    FACTS,
    FULL_FACTS,
    ReuseProbeConfig,
    facts_and_probing,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot

if TYPE_CHECKING:
    from mlneurons.methods.probeless import FactNeurons


@dataclass(frozen=True)
class FactNeuronsConfig(ReuseProbeConfig):
    """``mlneurons fact-neurons``: PROBELESS fact neurons (Zhao et al.'s adaptation)."""

    method: ClassVar[str] = "fact-neurons"

    k: int = option(50, "neurons per fact", minimum=1)


def run(cfg: FactNeuronsConfig, context: Context) -> FactNeurons:
    """The PROBELESS top-k neurons of every correctly predicted fact."""
    from mlneurons.methods.probeless import fact_neurons

    facts, model, probing = facts_and_probing(cfg, context)
    neurons = fact_neurons(
        model,
        facts,
        probing.correct_map(),
        k=cfg.k,
        batch_size=cfg.batch_size,
        world=None if cfg.probe else context.parallel,  # every rank took part in the probing
        uncertainty=uncertainty(cfg),
    )
    context.only_rank_0()
    return neurons


def _pivot_rows(result: FactNeurons) -> tuple[str, list[list[object]]]:
    """Per language, its overlap with the first language: ``[language, overlap [CI],
    verdict, correct facts]``."""
    from mlneurons.methods.probing.result import p_value_text

    pivot = result.languages[0]
    overlap = result.overlap().get(pivot, {})
    tests = result.overlap_tests()
    rows: list[list[object]] = []
    for lang, v in overlap.items():
        if lang == pivot:
            continue
        test = tests.get((pivot, lang)) or tests.get((lang, pivot))
        verdict = (
            "–"
            if test is None
            else ("above chance" if test.above_chance() else "n.s.")
            + f" (null {test.chance.expected:.4f}, Holm {p_value_text(test.p_adjusted)})"
        )
        value = "–" if v is None else (test.overlap.text(".2f") if test else f"{v:.2f}")
        rows.append([lang, value, verdict, len(result.neurons.get(lang, {}))])
    return pivot, rows


def describe(result: FactNeurons) -> list[str]:
    pivot, rows = _pivot_rows(result)
    level = f"{result.uncertainty().confidence:.0%}"
    shared = "; ".join(f"{lang} {value}, {verdict}" for lang, value, verdict, _ in rows)
    return [
        f"PROBELESS top-{result.k} neurons of each correctly predicted fact; mean Jaccard "
        f"with {pivot} over the facts both get right ({level} bootstrap interval over those "
        f"facts; chance: random top-{result.k} sets): {shared or '–'}"
    ]


def tables(result: FactNeurons) -> list[Table]:
    pivot, rows = _pivot_rows(result)
    how = result.uncertainty()
    caption = (
        f"Mean Jaccard of the top-{result.k} sets over the facts both languages get right, "
        f"{how.confidence:.0%} percentile bootstrap over those facts ({how.samples} "
        f"resamples); chance: two random top-{result.k} sets of all {result.n_layers} x "
        f"{result.d_mlp} neurons per fact (hypergeometric null mean and exact p-value of the "
        "total intersection), Holm-adjusted over the language pairs; n.s.: not above chance."
    )
    header = ["language", f"overlap with {pivot} [CI]", "against chance", "correct facts"]
    return [Table(header, rows, caption)]


SPEC = Command(
    name="fact-neurons",
    title="PROBELESS fact neurons",
    config=FactNeuronsConfig,
    result="mlneurons.methods.probeless:FactNeurons",
    run=run,
    describe=describe,
    figures=plot("fact_neuron_overlap.png", "plot_fact_neuron_overlap"),
    tables=tables,
    step=Step(budgets={"default": FACTS, "full": FULL_FACTS}, reuse="probe", needs=("probe",)),
    parallel=lambda cfg: not cfg.probe,  # a reused probing result: rank 0 alone
)
