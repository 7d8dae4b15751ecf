"""``mlneurons knowledge-neurons``: language-independent knowledge neurons (Chen et al. 2024)
and their deactivation per fact against firing-rate-matched controls."""

from __future__ import annotations

from collections.abc import Callable
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

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.evaluation.uncertainty import PairedTest
    from mlneurons.methods.knowledge_neurons import KnowledgeNeurons


@dataclass(frozen=True)
class KnowledgeNeuronsConfig(ReuseProbeConfig):
    """``mlneurons knowledge-neurons``: language-independent knowledge neurons (Chen et al.)."""

    method: ClassVar[str] = "knowledge-neurons"

    fact_neurons: str | None = option(
        None,
        "read fact_neurons.json from this directory (default: the --probe directory when it "
        "holds one; else the fact neurons are computed here with --k)",
    )
    k: int = option(50, "PROBELESS neurons per fact when computed here", minimum=1)
    min_languages: int = option(
        2, "the fewest languages that must answer a fact correctly for its intersection", minimum=2
    )
    bins: int = option(20, "firing-probability bins per layer of the matched control", minimum=1)
    seed: int = option(0, "seed of the matched control's draw")


def fact_neurons_dir(cfg: KnowledgeNeuronsConfig) -> str | None:
    """Where the fact neurons are read from: ``--fact-neurons``, else the ``--probe``
    directory when it holds them, else None (computed here)."""
    from mlneurons.methods.probeless import FACT_NEURONS_FILE

    if cfg.fact_neurons:
        return cfg.fact_neurons
    if cfg.probe and (Path(cfg.probe) / FACT_NEURONS_FILE).exists():
        return cfg.probe
    return None


def run(cfg: KnowledgeNeuronsConfig, context: Context) -> KnowledgeNeurons:
    """The LIKN of every fact right in two or more languages, deactivated fact by fact."""
    from mlneurons.methods.knowledge_neurons import check_from_probing, knowledge_neurons
    from mlneurons.methods.probeless import FactNeurons, fact_neurons
    from mlneurons.models.fingerprint import check_same_model

    source = fact_neurons_dir(cfg)
    if source:  # read before the model loads
        with user_input():
            saved = FactNeurons.load(source)
    facts, model, probing = facts_and_probing(cfg, context)
    context.only_rank_0()
    if source:
        with user_input():
            check_same_model(saved.model, model, what=f"{source}/fact_neurons.json")
            check_from_probing(saved, probing)
        neurons = saved
    else:
        neurons = fact_neurons(
            model, facts, probing.correct_map(), k=cfg.k, batch_size=cfg.batch_size
        )
        context.keep(neurons)
    return knowledge_neurons(
        model,
        facts,
        probing,
        neurons,
        min_languages=cfg.min_languages,
        bins=cfg.bins,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        uncertainty=uncertainty(cfg),
    )


def _alpha(result: KnowledgeNeurons) -> float:
    from mlneurons.evaluation.uncertainty import Uncertainty

    return 1 - Uncertainty.of(result.settings).confidence


def _verdict(test: PairedTest, p_holm: float, alpha: float) -> str:
    from mlneurons.evaluation.uncertainty import NOT_SIGNIFICANT
    from mlneurons.methods.probing.result import p_value_text

    words = f"exact McNemar {p_value_text(test.p_value)}, Holm-adjusted {p_value_text(p_holm)}"
    return words if p_holm < alpha else f"{words}: {NOT_SIGNIFICANT}"


def describe(result: KnowledgeNeurons) -> list[str]:
    from mlneurons.methods.knowledge_neurons import mean_size

    held = len(result.neurons)
    with_neurons = result.with_neurons()
    lines = [
        f"language-independent knowledge neurons (Chen et al.): the PROBELESS top-{result.k} "
        f"neurons a fact has in every language answering it correctly; {held} facts are "
        f"right in {result.settings.get('min_languages', 2)}+ of "
        f"{', '.join(result.languages)}, {len(with_neurons)} of them share neurons "
        + (f"(mean {mean_size(result):.1f} per fact)" if held else "")
    ]
    counts = result.counts_per_layer()
    if sum(counts):
        busiest = sorted(range(len(counts)), key=lambda layer: -counts[layer])[:3]
        lines.append(
            f"LIKN per layer, summed over facts: {sum(counts)} in all; most in layers "
            + ", ".join(f"{layer} ({counts[layer]})" for layer in busiest)
        )
    alpha = _alpha(result)
    for lang, row in result.effects().items():
        before, control = row["vs_before"], row["vs_control"]
        lines.append(
            f"{lang}: {row['n']} facts, P@1 {before.before.text()} -> "
            f"{before.after.text()} with their LIKN off "
            f"({_verdict(before, row['vs_before_p_holm'], alpha)}); control off "
            f"{control.before.text()}, LIKN - control {control.difference.text()} "
            f"({_verdict(control, row['vs_control_p_holm'], alpha)})"
        )
    if not with_neurons:
        lines.append("no fact has neurons shared by all its correct languages: nothing deactivated")
    return lines


def tables(result: KnowledgeNeurons) -> list[Table]:
    alpha = _alpha(result)

    from mlneurons.methods.probing.result import p_value_text

    def cell(test: PairedTest, p: float) -> str:
        return f"{test.difference.text()} (Holm {p_value_text(p)}{'' if p < alpha else ', n.s.'})"

    effects = [
        [
            lang,
            row["n"],
            row["vs_before"].before.text(),
            row["vs_before"].after.text(),
            row["vs_control"].before.text(),
            cell(row["vs_before"], row["vs_before_p_holm"]),
            cell(row["vs_control"], row["vs_control_p_holm"]),
        ]
        for lang, row in result.effects().items()
    ]
    header = ["language", "facts", "P@1 before", "LIKN off", "control off"]
    header += ["LIKN off - before", "LIKN off - control off"]
    caption = (
        "Each fact's own LIKN (or its matched control) off while it is probed in the languages "
        "that define them; Wilson intervals, Newcombe's paired interval, exact McNemar p "
        "Holm-adjusted over languages."
    )
    counts, distinct = result.counts_per_layer(), result.counts_per_layer(distinct=True)
    per_layer = [[layer, n, d] for layer, (n, d) in enumerate(zip(counts, distinct))]
    return [
        Table(header, effects, caption),
        Table(["layer", "LIKN (summed over facts)", "distinct neurons"], per_layer, details=True),
    ]


def plot_knowledge_neurons(result: KnowledgeNeurons, *, title: str = "") -> Figure:
    """LIKN per layer (summed over facts) and P@1 per language before, with the facts' LIKN
    off and with their controls off (Wilson intervals)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    counts = result.counts_per_layer()
    left.bar(range(len(counts)), counts, color="C4")
    left.set_xlabel("layer")
    left.set_ylabel("LIKN, summed over facts")
    left.set_title(f"Language-independent knowledge neurons ({len(result.with_neurons())} facts)")
    effects = result.effects()
    width = 0.27
    for k, (name, colour) in enumerate(
        (("before", "grey"), ("LIKN off", "C3"), ("control off", "C0"))
    ):
        values = []
        for row in effects.values():
            test = row["vs_before"] if k < 2 else row["vs_control"]
            values.append(test.before if k in (0, 2) else test.after)
        xs = [i + (k - 1) * width for i in range(len(values))]
        heights = [100 * v.value for v in values]
        errors = [
            [100 * (v.value - v.lo) for v in values],
            [100 * (v.hi - v.value) for v in values],
        ]
        right.bar(xs, heights, width, yerr=errors, capsize=2, color=colour, label=name)
    right.set_xticks(range(len(effects)), list(effects))
    right.set_ylabel("P@1 on the deactivated facts (%)")
    right.set_ylim(0, 105)
    right.legend(fontsize=8)
    right.set_title("Deactivating each fact's LIKN")
    if title:
        fig.suptitle(title)
    return fig


def figures(result: KnowledgeNeurons, cfg: Any, out: Path) -> dict[str, Callable[[], Figure]]:
    return {"knowledge_neurons.png": lambda: plot_knowledge_neurons(result)}


SPEC = Command(
    name="knowledge-neurons",
    title="Language-independent knowledge neurons (Chen et al. 2024)",
    config=KnowledgeNeuronsConfig,
    result="mlneurons.methods.knowledge_neurons:KnowledgeNeurons",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(
        budgets={"default": FACTS, "full": FULL_FACTS},
        reuse="probe",
        needs=("probe", "fact-neurons"),
    ),
)
