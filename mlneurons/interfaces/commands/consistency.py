"""``mlneurons consistency``: cross-lingual consistency of factual knowledge (RankC, COverlap,
answer consistency and AC3, transfer) from a probing result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlneurons.config import option
from mlneurons.interfaces.commands.inputs import uncertainty, user_input
from mlneurons.interfaces.commands.probe import (
    FACTS,
    FULL_FACTS,
    ReuseProbeConfig,
    facts_and_probing,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table
from mlneurons.methods.consistency import Weighting

if TYPE_CHECKING:
    from collections.abc import Callable

    from matplotlib.figure import Figure

    from mlneurons.methods.consistency import ConsistencyResult


@dataclass(frozen=True)
class ConsistencyConfig(ReuseProbeConfig):
    """``mlneurons consistency``: RankC and answer consistency across languages."""

    method: ClassVar[str] = "consistency"

    weighting: Weighting = option(
        "softmax",
        "RankC's weights over depths j = 1..N: softmax of N..1 (Qi et al.), norm1 (N-j+1), "
        "norm2 ((N-j+1)^2)",
    )
    group_size: int | None = option(
        None,
        "SeaEval's m: languages per group of answer consistency (AC3); default 3, or all the "
        "languages when fewer",
        minimum=2,
    )
    fact_neurons: str | None = option(
        None, "also cluster the languages by the PROBELESS overlap in this fact-neurons output"
    )


def run(cfg: ConsistencyConfig, context: Context) -> ConsistencyResult:
    """RankC, COverlap, answer consistency and transfer between the probed languages."""
    from mlneurons.methods.consistency import consistency
    from mlneurons.methods.probing.result import ProbeResult

    overlap = None
    if cfg.fact_neurons:  # read before anything long runs
        from mlneurons.methods.probeless import FactNeurons

        with user_input():
            overlap = FactNeurons.load(cfg.fact_neurons).overlap()
    if cfg.probe:  # no model needed: the probing result keeps every score
        with user_input():
            probing = ProbeResult.load(cfg.probe)
    else:
        _, _, probing = facts_and_probing(cfg, context)
    context.only_rank_0()
    result = consistency(
        probing,
        weighting=cfg.weighting,
        group_size=cfg.group_size,
        fact_neuron_overlap=overlap,
        uncertainty=uncertainty(cfg),
    )
    result.settings["probe"] = cfg.probe
    return result


def describe(result: ConsistencyResult) -> list[str]:
    level = f"{result.answer('consistency').confidence:.0%}"
    lines = [
        f"RankC ({result.settings.get('weighting')} weights) per pair of languages, raw and "
        f"chance-corrected ((RankC - chance) / (1 - chance)); {level} bootstrap intervals over "
        "the shared queries"
    ]
    for row in result.pairs:
        a, b = row["languages"]
        raw, fixed = result.estimate(a, b, "rankc"), result.estimate(a, b, "rankc_corrected")
        assert raw is not None and fixed is not None
        lines.append(
            f"  {a}-{b}: {raw.text('.3f')} (chance {row['chance']:.3f}), corrected "
            f"{fixed.text('.3f')}, {row['queries']} queries"
        )
    extremes = result.extremes()
    if extremes is not None:
        most, least = extremes
        lines.append(
            f"most consistent: {'-'.join(most['languages'])}, least: "
            f"{'-'.join(least['languages'])} (chance-corrected RankC)"
        )
    answers = result.answers
    lines.append(
        f"answer consistency (SeaEval, same choice in all {answers['group_size']} languages of "
        f"each of {answers['groups']} groups, {answers['queries']} queries): "
        f"{result.answer('consistency').text()}; accuracy {result.answer('accuracy').text()}; "
        f"AC3 {result.answer('ac3').text()}"
    )
    lines.append(f"heatmap order (average linkage on RankC): {', '.join(result.orders['rankc'])}")
    return lines


def tables(result: ConsistencyResult) -> list[Table]:
    rows: list[list[object]] = []
    for row in result.pairs:
        a, b = row["languages"]
        cells = [result.estimate(a, b, key) for key in ("rankc", "rankc_corrected", "coverlap")]
        rows.append(
            [
                f"{a}-{b}",
                row["queries"],
                *(c.text(".3f") if c is not None else "–" for c in cells[:2]),
                f"{row['chance']:.3f}",
                cells[2].text(".2f") if cells[2] is not None else "–",
            ]
        )
    pairs = Table(
        ["pair", "queries", "RankC", "corrected", "chance", "COverlap (Jaccard)"],
        rows,
        "RankC per pair (bootstrap over shared queries); COverlap with one gold per query is "
        "the Jaccard of correct facts.",
    )
    transfer = Table(
        ["correct in", "also correct in", "transfer"],
        [
            [row["from"], row["to"], result.transfer_estimate(row["from"], row["to"]).text()]  # type: ignore[union-attr]
            for row in result.transfer
        ],
        "Transfer: P(correct in l' | correct in l), Wilson intervals.",
    )
    answers = Table(
        ["consistency", "accuracy", "AC3"],
        [[result.answer(k).text() for k in ("consistency", "accuracy", "ac3")]],
        f"SeaEval answer consistency over groups of {result.answers['group_size']} languages "
        "and AC3 (harmonic mean of accuracy and consistency), bootstrap over queries.",
    )
    return [pairs, transfer, answers]


def figures(result: ConsistencyResult, cfg: Any, out: Path) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    drawn: dict[str, Callable[[], Figure]] = {
        "rankc.png": lambda: plots.plot_rankc(result),
        "coverlap.png": lambda: plots.plot_consistency_matrix(result, "coverlap"),
    }
    if result.fact_neuron_overlap is not None:
        drawn["fact_neuron_clusters.png"] = lambda: plots.plot_consistency_matrix(
            result, "fact_neurons"
        )
    return drawn


SPEC = Command(
    name="consistency",
    title="Cross-lingual consistency: RankC, answer consistency, transfer",
    config=ConsistencyConfig,
    result="mlneurons.methods.consistency:ConsistencyResult",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(budgets={"default": FACTS, "full": FULL_FACTS}, reuse="probe", needs=("probe",)),
    parallel=lambda cfg: not cfg.probe,
)
