"""``mlneurons compare-methods``: LAPE against Tang et al.'s baselines LAP, LAVE and RS."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, cast

from mlneurons.config import option
from mlneurons.interfaces.commands.ablate import NeuronsConfig, heldout
from mlneurons.interfaces.commands.inputs import (
    languages_of,
    load_neurons,
    load_stats,
    model_for,
    user_input,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot
from mlneurons.methods.baselines import Selector

if TYPE_CHECKING:
    from mlneurons.methods.deactivation import MethodComparison

SPECIFICITY = (
    "specificity: own / (own + others) of the mean log-perplexity increases (this "
    "project's summary, not the paper's); 0.5 = every language is hurt alike, 1 = only the "
    "deactivated one"
)


@dataclass(frozen=True)
class CompareMethodsConfig(NeuronsConfig):
    """``mlneurons compare-methods``: LAPE against Tang et al.'s baselines LAP, LAVE, RS."""

    method: ClassVar[str] = "compare-methods"

    stats: str | None = option(None, "statistics (default: NEURONS/stats.safetensors)")
    methods: Sequence[Selector] = option(
        ("lape", "lap", "lave", "rs"), "comma-separated methods of lape,lap,lave,rs"
    )
    languages: Sequence[str] | None = option(None, "languages (default: those of --neurons)")
    tokens_per_language: int = option(512, "held-out tokens per language", minimum=1)
    seq_len: int = option(256, "tokens per row", minimum=2)
    lap_threshold: float = option(0.95, "LAP: firing probability a neuron must exceed", rate=True)
    seed: int = option(0, "seed of RS (random selection)")


def run(cfg: CompareMethodsConfig, context: Context) -> MethodComparison:
    """Each method's deactivation matrix on the same held-out text, in shared passes."""
    from mlneurons.methods.baselines import select_methods
    from mlneurons.methods.deactivation import compare_methods

    neurons = load_neurons(cfg.neurons)
    stats = load_stats(cfg)
    languages = languages_of(neurons, cfg.languages) if cfg.languages else neurons.languages
    with user_input():
        selections = select_methods(
            cfg.methods,
            neurons,
            stats,
            languages=languages,
            lap_threshold=cfg.lap_threshold,
            seed=cfg.seed,
        )
    corpus = heldout(languages, cfg)
    model = model_for(cfg, context, neurons, stats)
    result = compare_methods(
        model, selections, corpus, batch_size=cfg.batch_size, world=context.parallel
    )
    context.only_rank_0()
    return result


def tables(result: MethodComparison) -> list[Table]:
    from mlneurons.interfaces.plots import format_increase, format_specificity

    rows = [
        [
            method,
            sum(result.counts[method].values()),
            format_increase(cast(float, score["own"])),  # None only for "score"
            format_increase(cast(float, score["others"])),
            format_specificity(score["score"]),
        ]
        for method, score in result.specificity().items()
    ]
    header = ["method", "neurons", "own increase", "others' increase", "specificity"]
    caption = (
        "LAPE against Tang et al.'s baselines (LAP: firing probability above a threshold; "
        "LAVE: LAPE on mean activation values; RS: random neurons, as many per layer as LAPE)."
    )
    return [Table(header, rows, caption)]


def describe(result: MethodComparison) -> list[str]:
    from mlneurons.interfaces.plots import format_increase, format_specificity

    lines = []
    for method, score in result.specificity().items():
        lines.append(
            f"{method} {sum(result.counts[method].values())} neurons: own language "
            f"{format_increase(cast(float, score['own']))}, "
            f"others {format_increase(cast(float, score['others']))}, "
            f"specificity {format_specificity(score['score'])}"
        )
    return [*lines, SPECIFICITY]


SPEC = Command(
    name="compare-methods",
    title="LAPE against its baselines",
    config=CompareMethodsConfig,
    result="mlneurons.methods.deactivation:MethodComparison",
    run=run,
    describe=describe,
    figures=plot("methods.png", "plot_method_comparison"),
    tables=tables,
    step=Step(
        budgets={"default": {"tokens_per_language": 256}, "full": {}},
        reuse="neurons",
        needs=("lape",),
    ),
    parallel=True,
)
