"""``mlneurons fact-neurons``: PROBELESS fact neurons and their language overlap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import option
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
    )
    context.only_rank_0()
    return neurons


def _pivot_rows(result: FactNeurons) -> tuple[str, list[list[object]]]:
    pivot = result.languages[0]
    overlap = result.overlap().get(pivot, {})
    rows = [
        [lang, "–" if v is None else f"{v:.2f}", len(result.neurons.get(lang, {}))]
        for lang, v in overlap.items()
        if lang != pivot
    ]
    return pivot, rows


def describe(result: FactNeurons) -> list[str]:
    pivot, rows = _pivot_rows(result)
    shared = ", ".join(f"{lang} {value}" for lang, value, _ in rows)
    return [
        f"PROBELESS top-{result.k} neurons of each correctly predicted fact; mean Jaccard "
        f"with {pivot} over the facts both get right: {shared or '–'}"
    ]


def tables(result: FactNeurons) -> list[Table]:
    pivot, rows = _pivot_rows(result)
    return [Table(["language", f"overlap with {pivot}", "correct facts"], rows)]


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
