"""``mlneurons steer``: steer the output language by activating language neurons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mlneurons.config import option
from mlneurons.errors import UserError
from mlneurons.interfaces.commands.ablate import NeuronsConfig
from mlneurons.interfaces.commands.inputs import (
    languages_of,
    load_neurons,
    load_stats,
    model_for,
    uncertainty,
    user_input,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table
from mlneurons.methods.steering import SteeringMode, SteeringResult
from mlneurons.models.bridge import TransformerBridge

if TYPE_CHECKING:
    from mlneurons.evaluation.uncertainty import Estimate, PairedTest, Uncertainty
    from mlneurons.methods.lape import LanguageNeurons
    from mlneurons.stats.activation import ActivationStats

SOURCE_HELP = "language of the questions, e.g. es"
TARGET_HELP = "language to steer to, e.g. zh"


@dataclass(frozen=True)
class GenerationConfig(NeuronsConfig):
    """The options of the commands that answer built-in questions under interventions."""

    stats: str | None = option(
        None, "statistics for the activation values (default: NEURONS/stats.safetensors)"
    )
    n_questions: int = option(12, "questions to ask", minimum=1)
    max_new_tokens: int = option(16, "answer length", minimum=1)


@dataclass(frozen=True)
class SteerConfig(GenerationConfig):
    """``mlneurons steer``: output-language steering by activating language neurons."""

    method: ClassVar[str] = "steer"

    source: str = option("", SOURCE_HELP, required=True)
    target: str = option("", TARGET_HELP, required=True)
    mode: SteeringMode = option(
        "replace",
        "replace: a = alpha*mu_target; add: a + alpha*mu_target; diffmean: a + "
        "alpha*(mu_target - mean mu of the others); scale: alpha*a",
    )
    scale: float = option(1.0, "the strength alpha of the mode")
    deactivate_source: bool = option(False, "also deactivate the source language's neurons")
    source_value: float | None = option(
        None, "set the source language's own neurons to this constant (0: deactivate)"
    )
    n_questions: int = option(24, "questions to ask", minimum=1)
    max_new_tokens: int = option(32, "answer length", minimum=1)

    def check(self) -> None:
        if self.mode == "scale" and self.scale == 1:
            raise UserError("scale=1.0 with mode 'scale' changes nothing; give e.g. --scale 2")
        if self.deactivate_source and self.source_value not in (None, 0):
            raise UserError(
                f"--deactivate-source sets the source neurons to 0, but --source-value is "
                f"{self.source_value}; give one of them"
            )


@dataclass(frozen=True)
class SteeringInputs:
    """What a steering command reads, checked before any generation."""

    neurons: LanguageNeurons
    stats: ActivationStats
    model: TransformerBridge
    questions: list[str]
    languages: list[str]
    """The command's languages (source, target, ...), normalised to the neurons'."""


def steering_inputs(cfg: Any, context: Context, *languages: str) -> SteeringInputs:
    """Neurons, statistics, model and the first ``n_questions`` built-in questions in
    ``languages[0]``, checked before any generation; the languages normalised."""
    from mlneurons.data.questions import load_questions

    neurons = load_neurons(cfg.neurons)
    codes = [languages_of(neurons, [code])[0] for code in languages]
    questions = load_questions(codes[0])
    if cfg.n_questions > len(questions):
        raise UserError(
            f"--n-questions {cfg.n_questions}: there are {len(questions)} questions in "
            f"{codes[0]!r}; valid: 1..{len(questions)}"
        )
    stats = load_stats(cfg)
    with user_input():
        for code in codes:
            stats.index(code)
    model = model_for(cfg, context, neurons, stats)
    return SteeringInputs(neurons, stats, model, questions[: cfg.n_questions], codes)


def run(cfg: SteerConfig, context: Context) -> SteeringResult:
    """Answer the questions with and without the target's neurons steered; identify languages."""
    from mlneurons.methods.steering import steer, steering_intervention

    inputs = steering_inputs(cfg, context, cfg.source, cfg.target)
    source, target = inputs.languages
    with user_input():  # neurons shared with the target keep the target's steering
        intervention = steering_intervention(
            inputs.neurons,
            inputs.stats,
            source=source,
            target=target,
            mode=cfg.mode,
            alpha=cfg.scale,
            source_value=0.0 if cfg.deactivate_source else cfg.source_value,
            model=inputs.model,
        )
    result = steer(
        inputs.model,
        inputs.questions,
        source=source,
        target=target,
        intervention=intervention,
        languages=inputs.neurons.languages,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        world=context.parallel,
        uncertainty=uncertainty(cfg),
    )
    context.only_rank_0()
    return result


def p_text(p: float) -> str:
    """``p = 0.031``, or ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def difference_text(difference: Estimate) -> str:
    """A difference of rates in percentage points: ``+62.5 pp [+37.5, +87.5]``."""
    d = difference
    return f"{100 * d.value:+.1f} pp [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]"


def paired_text(test: PairedTest) -> str:
    """``0.0% [0.0%, 13.8%] -> 100.0% [86.2%, 100.0%] (+100.0 pp [...], exact McNemar
    p < 0.001)``, with "; not significant" when it is not at the intervals' level."""
    flag = "" if test.significant() else "; not significant"
    return (
        f"{test.before.text()} -> {test.after.text()} ({difference_text(test.difference)}, "
        f"{test.test} {p_text(test.p_value)}{flag})"
    )


def interval_caption(how: Uncertainty, n: int, items: str = "questions") -> str:
    """What the intervals and tests of paired rates are, for a table's caption."""
    return (
        f"Rates with {how.confidence:.0%} Wilson intervals; differences: paired bootstrap over "
        f"the {n} {items} ({how.samples} resamples, seed {how.seed}); p: exact McNemar; n.s.: "
        f"not significant at the {1 - how.confidence:.0%} level."
    )


def describe(result: SteeringResult) -> list[str]:
    target, source = result.test(), result.test(result.source)
    return [
        f"{len(result.samples)} questions in {result.source}, steered towards {result.target}",
        f"answers in {result.target}, before -> after: {paired_text(target)}",
        f"answers in {result.source}, before -> after: {paired_text(source)}",
    ]


def tables(result: SteeringResult) -> list[Table]:
    source, target, samples = result.source, result.target, result.samples
    rows = []
    for language, name in ((target, "target"), (source, "source")):
        test = result.test(language)
        flag = "" if test.significant() else " n.s."
        rows.append(
            [
                f"answers in {language} ({name})",
                test.before.text(),
                test.after.text(),
                difference_text(test.difference),
                p_text(test.p_value) + flag,
            ]
        )
    shown = [
        [s["prompt"], f"{s['before']} [{s['lang_before']}]", f"{s['after']} [{s['lang_after']}]"]
        for s in samples[:4]
    ]
    header = ["", "before", "after", "difference", "exact McNemar"]
    return [
        Table(header, rows, interval_caption(result.uncertainty, len(samples))),
        Table(["prompt", "answer before [language]", "answer after [language]"], shown),
    ]


SPEC = Command(
    name="steer",
    title="Steering the output language",
    config=SteerConfig,
    result="mlneurons.methods.steering:SteeringResult",
    run=run,
    describe=describe,
    tables=tables,
    step=Step(
        budgets={
            "default": {
                "source": "es",
                "target": "zh",
                "deactivate_source": True,
                "n_questions": 12,
            },
            "full": {"source": "es", "target": "zh", "deactivate_source": True},
        },
        reuse="neurons",
        needs=("lape",),
    ),
    parallel=True,
)
