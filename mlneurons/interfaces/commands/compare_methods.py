"""``mlneurons compare-methods``: LAPE against Tang et al.'s baselines LAP, LAVE, RS and PV."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

from mlneurons.config import option
from mlneurons.errors import UserError
from mlneurons.interfaces.commands.ablate import (
    NeuronsConfig,
    caption_of,
    heldout,
    intervals_note,
)
from mlneurons.interfaces.commands.inputs import (
    languages_of,
    load_neurons,
    load_stats,
    model_for,
    uncertainty,
    user_input,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table
from mlneurons.methods.baselines import LapThresholdKind, Selector

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.evaluation.uncertainty import Estimate
    from mlneurons.methods.deactivation import ChangeTest, MethodComparison, SpecificityInterval
    from mlneurons.methods.lape import LanguageNeurons

SPECIFICITY = (
    "specificity: own / (own + others) of the mean log-perplexity increases (this "
    "project's summary, not the paper's); 0.5 = every language is hurt alike, 1 = only the "
    "deactivated one"
)


@dataclass(frozen=True)
class CompareMethodsConfig(NeuronsConfig):
    """``mlneurons compare-methods``: LAPE against Tang et al.'s baselines LAP, LAVE, RS, PV."""

    method: ClassVar[str] = "compare-methods"

    stats: str | None = option(None, "statistics (default: NEURONS/stats.safetensors)")
    methods: Sequence[Selector] = option(
        ("lape", "lap", "lave", "rs"),
        "comma-separated methods of lape,lap,lap-capped (LAP keeping at most LAPE's count per "
        "language),lave,rs,pv (needs --pv-checkpoints)",
    )
    languages: Sequence[str] | None = option(None, "languages (default: those of --neurons)")
    tokens_per_language: int = option(512, "held-out tokens per language", minimum=1)
    seq_len: int = option(256, "tokens per row", minimum=2)
    lap_threshold: float = option(
        0.95,
        "LAP: the bar, a firing probability (--lap-threshold-kind probability) or the quantile "
        "of all firing probabilities (quantile)",
        rate=True,
    )
    lap_threshold_kind: LapThresholdKind = option(
        "probability",
        "LAP's reading of 'activation probability exceeds 95 percent': an absolute "
        "probability, or the quantile of all probabilities (LAPE's filter threshold)",
    )
    seed: int = option(0, "seed of RS (random selection)")
    rs_include_language_neurons: bool = option(
        False,
        "RS: draw from all neurons of a layer, language neurons included (excluding them is "
        "this project's choice, not the paper's)",
    )
    pv_checkpoints: Sequence[str] | None = option(
        None,
        "PV: one fine-tuned checkpoint of --model per language, LANG=PATH,... (a Hugging Face "
        "directory or a state-dict file)",
    )
    pv_top_rate: float = option(
        0.01, "PV: share of all neurons in a language's top by relative weight change", rate=True
    )

    def check(self) -> None:
        if ("pv" in self.methods) != bool(self.pv_checkpoints):
            raise UserError(
                "pv_checkpoints LANG=PATH,... and pv in --methods go together: give both or neither"
            )


def run(cfg: CompareMethodsConfig, context: Context) -> MethodComparison:
    """Each method's deactivation matrix on the same held-out text, in shared passes."""
    from mlneurons.methods.baselines import checkpoint_paths, parameter_variation, select_methods
    from mlneurons.methods.deactivation import compare_methods

    neurons = load_neurons(cfg.neurons)
    stats = load_stats(cfg)
    languages = languages_of(neurons, cfg.languages) if cfg.languages else neurons.languages

    def selections(pv: LanguageNeurons | None = None) -> dict[str, LanguageNeurons]:
        with user_input():
            return select_methods(
                [m for m in cfg.methods if m != "pv" or pv is not None],
                neurons,
                stats,
                languages=languages,
                lap_threshold=cfg.lap_threshold,
                lap_threshold_kind=cfg.lap_threshold_kind,
                rs_exclude_language_neurons=not cfg.rs_include_language_neurons,
                seed=cfg.seed,
                pv=pv,
            )

    checkpoints = checkpoint_paths(
        cfg.pv_checkpoints or (), languages if cfg.pv_checkpoints else ()
    )
    chosen = selections()  # every input checked before the model loads
    corpus = heldout(languages, cfg)
    model = model_for(cfg, context, neurons, stats)
    if checkpoints:
        chosen = selections(parameter_variation(model, checkpoints, top_rate=cfg.pv_top_rate))
    result = compare_methods(
        model,
        chosen,
        corpus,
        batch_size=cfg.batch_size,
        world=context.parallel,
        uncertainty=uncertainty(cfg),
    )
    context.only_rank_0()
    return result


def _readings(result: MethodComparison) -> dict[str, str]:
    """Each method's reading (:func:`~mlneurons.methods.baselines.reading`), when recorded."""
    from mlneurons.methods.baselines import reading

    return {m: reading(c) for m, c in result.constants.items() if m in result.methods}


def _score(score: float | None, interval: Estimate | None) -> str:
    from mlneurons.interfaces.plots import format_specificity

    if interval is None:
        return format_specificity(score)
    return f"{interval.value:.2f} [{interval.lo:.2f}, {interval.hi:.2f}]"


def _difference(test: ChangeTest | None, *, short: bool) -> str:
    from mlneurons.interfaces.plots import format_test

    if test is None:
        return "–"
    d = test.difference
    flag = format_test(test, short=short)
    return f"{d.value:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}]" + (f" {flag}" if flag else "")


def _intervals(
    intervals: dict[str, SpecificityInterval] | None, method: str
) -> tuple[Estimate | None, Estimate | None, Estimate | None, ChangeTest | None]:
    """A method's own, others', score and versus-first intervals (None: a result saved
    without them)."""
    if intervals is None:
        return None, None, None, None
    found = intervals[method]
    return found.own, found.others, found.score, found.versus_first


def _note(result: MethodComparison) -> list[str]:
    n = len(result.methods) - 1
    return intervals_note(result, tests=n, family=f"{n} methods compared with {result.methods[0]}")


def tables(result: MethodComparison) -> list[Table]:
    from mlneurons.interfaces.plots import format_change

    intervals = result.specificity_intervals()
    readings = _readings(result)
    rows = []
    for method, score in result.specificity().items():
        own, others, interval, versus = _intervals(intervals, method)
        rows.append(
            [
                method,
                sum(result.counts[method].values()),
                readings.get(method, ""),
                format_change(cast(float, score["own"]), own),  # None only for "score"
                format_change(cast(float, score["others"]), others),
                _score(score["score"], interval),
                _difference(versus, short=True),
            ]
        )
    first = result.methods[0]
    header = [
        "method",
        "neurons",
        "reading",
        "own increase",
        "others' increase",
        "specificity",
        f"specificity - {first}'s",
    ]
    caption = (
        "LAPE against Tang et al.'s baselines (LAP: firing probability above a bar; LAVE: "
        "LAPE on mean activation values; RS: random neurons; PV: relative weight change to "
        "fine-tuned checkpoints). Specificity is this project's summary, not the paper's: "
        "Tang et al. compare the deactivation matrices. " + caption_of(_note(result))
    )
    return [Table(header, rows, caption)]


def describe(result: MethodComparison) -> list[str]:
    from mlneurons.interfaces.plots import format_change

    intervals, readings = result.specificity_intervals(), _readings(result)
    lines = []
    for method, score in result.specificity().items():
        own, others, interval, versus = _intervals(intervals, method)
        line = (
            f"{method} {sum(result.counts[method].values())} neurons: own language "
            f"{format_change(cast(float, score['own']), own)}, "
            f"others {format_change(cast(float, score['others']), others)}, "
            f"specificity {_score(score['score'], interval)}"
        )
        if versus is not None:
            line += f"; {method} - {result.methods[0]} {_difference(versus, short=False)}"
        lines.append(line)
        if method in readings and method != "lape":
            lines.append(f"  {method}: {readings[method]}")
    return [*lines, SPECIFICITY, *_note(result)]


def figures(
    result: MethodComparison, cfg: CompareMethodsConfig, out: Path
) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    return {
        "methods.png": lambda: plots.plot_method_comparison(result),
        "specificity.png": lambda: plots.plot_specificity(result),
    }


SPEC = Command(
    name="compare-methods",
    title="LAPE against its baselines",
    config=CompareMethodsConfig,
    result="mlneurons.methods.deactivation:MethodComparison",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(
        budgets={
            "default": {
                "languages": ("en", "zh"),
                "tokens_per_language": 320,
                "seq_len": 32,
            },
            "full": {},
        },
        reuse="neurons",
        needs=("lape",),
    ),
    parallel=True,
)
