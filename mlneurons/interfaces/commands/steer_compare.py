"""``mlneurons steer-compare``: residual directions against language neurons (CLaS-Bench)."""

from __future__ import annotations

from collections.abc import Sequence
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
    unique,
    user_input,
)
from mlneurons.interfaces.commands.steer import SOURCE_HELP, TARGET_HELP
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot
from mlneurons.methods.directions import DirectionMethod, ResidualPoint
from mlneurons.methods.steering import SteeringMode

if TYPE_CHECKING:
    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.methods.steering_comparison import SteeringComparison

DEFAULT_LAYER_FRACTION = 0.5
"""Without ``--layer`` the directions live after the middle block (``n_layers // 2``)."""


@dataclass(frozen=True)
class SteerCompareConfig(NeuronsConfig):
    """``mlneurons steer-compare``: residual directions against language neurons (CLaS-Bench)."""

    method: ClassVar[str] = "steer-compare"

    stats: str | None = option(
        None, "statistics for the neuron modes (default: NEURONS/stats.safetensors)"
    )
    source: str = option("", SOURCE_HELP, required=True)
    target: str = option("", TARGET_HELP, required=True)
    layer: int | None = option(
        None, "block whose residual holds the directions (default: the middle one)", minimum=0
    )
    point: ResidualPoint = option("post", "the residual after (post) or before (pre) the block")
    directions: Sequence[DirectionMethod] = option(
        ("diffmean", "probe", "lda", "pca"), "comma-separated of diffmean,probe,lda,pca"
    )
    direction_alpha: float = option(
        1.0,
        "strength: alpha * |mean(target) - mean(source)| * unit direction (1: the diffmean "
        "direction adds the mean difference)",
    )
    sentences: int = option(64, "built-in sentences per language for the directions", minimum=2)
    neuron_modes: Sequence[SteeringMode] = option(
        ("replace", "add", "diffmean"), "comma-separated neuron modes of replace,add,diffmean,scale"
    )
    neuron_alpha: float = option(1.0, "the strength alpha of the neuron modes")
    source_value: float | None = option(
        0.0, "neuron modes: source language's own neurons set to this; 'none' leaves them"
    )
    relations: Sequence[str] | None = option(
        None, "relations of the fact questions (default: P30,P36,P37,P38)"
    )
    n_questions: int = option(16, "fact questions to ask", minimum=1)
    max_new_tokens: int = option(16, "answer length", minimum=1)

    def check(self) -> None:
        if "scale" in self.neuron_modes and self.neuron_alpha == 1:
            raise UserError(
                "neuron mode 'scale' with --neuron-alpha 1 changes nothing; give e.g. "
                "--neuron-alpha 2"
            )


def direction_corpus(source: str, target: str) -> MultilingualCorpus:
    """The built-in text of both languages, whose documents the directions are estimated from."""
    from mlneurons.data.corpus import MultilingualCorpus, available_languages

    with_text = available_languages()
    for code in (source, target):
        if code not in with_text:
            raise UserError(
                f"no built-in text in {code!r} for the directions; languages with text: "
                f"{', '.join(with_text)}"
            )
    return MultilingualCorpus.builtin([source, target])


def run(cfg: SteerCompareConfig, context: Context) -> SteeringComparison:
    """Directions and neuron modes on the same fact questions: forcing, relevance, fluency."""
    from mlneurons.data.fact_questions import fact_questions
    from mlneurons.methods.directions import language_directions, residual_point
    from mlneurons.methods.steering_comparison import compare_steering, steering_methods

    neurons = load_neurons(cfg.neurons)
    source, target = (languages_of(neurons, [code])[0] for code in (cfg.source, cfg.target))
    if source == target:
        raise UserError(f"--source and --target are both {source!r}; steer to another language")
    questions = fact_questions(source, target, relations=cfg.relations, n=cfg.n_questions)
    corpus = direction_corpus(source, target)
    stats = load_stats(cfg)
    with user_input():
        for code in (source, target):
            stats.index(code)
    model = model_for(cfg, context, neurons, stats)
    n_layers = int(model.cfg.n_layers)
    layer = cfg.layer if cfg.layer is not None else int(n_layers * DEFAULT_LAYER_FRACTION)
    residual_point(model, layer, cfg.point)
    directions = language_directions(
        model, corpus, source=source, target=target, layer=layer, point=cfg.point,
        methods=unique(cfg.directions), max_sentences=cfg.sentences, batch_size=cfg.batch_size,
    )  # fmt: skip
    context.keep(directions)
    methods = steering_methods(
        model, source=source, target=target, directions=directions,
        direction_alpha=cfg.direction_alpha, neurons=neurons, stats=stats,
        neuron_modes=unique(cfg.neuron_modes), neuron_alpha=cfg.neuron_alpha,
        source_value=cfg.source_value,
    )  # fmt: skip
    cosines = directions.cosines()
    return compare_steering(
        model, questions, methods, source=source, target=target,
        languages=neurons.languages, max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size, how=uncertainty(cfg),
        settings={
            "point": directions.point,
            "scale": directions.scale,
            "residual_norm": directions.residual_norm,
            "sentences": directions.sentences,
            "direction_cosines": {
                f"{a}~{b}": float(cosines[i, j])
                for i, a in enumerate(directions.methods)
                for j, b in enumerate(directions.methods)
                if i < j
            },
            "neurons": {lang: len(neurons[lang]) for lang in (source, target)},
        },
    )  # fmt: skip


def _level(result: SteeringComparison) -> float:
    from mlneurons.evaluation.uncertainty import Uncertainty

    return 1 - Uncertainty.of(result.settings).confidence


def _ppl(result: SteeringComparison, name: str) -> str:
    estimate = result.score(name, "fluency")
    return "–" if estimate.value != estimate.value else estimate.text(".1f")


def describe(result: SteeringComparison) -> list[str]:
    from mlneurons.evaluation.uncertainty import NOT_SIGNIFICANT
    from mlneurons.methods.steering_comparison import MEASURE_LABELS, MEASURES

    settings = result.settings
    lines = [
        f"{len(result.questions)} fact questions in {result.source}, answered unsteered and "
        f"with {len(result.methods) - 1} methods steering towards {result.target} "
        f"(directions at {settings.get('point')}, alpha x {settings.get('scale', 0):.1f}, the "
        f"distance between the languages' means; typical residual norm "
        f"{settings.get('residual_norm', 0):.1f}); "
        f"forcing = answers in {result.target}, relevance = the answer names the gold object "
        f"in {result.source} or {result.target}, harmonic mean of the two (CLaS-Bench); "
        "fluency = perplexity of the answers under the unsteered model"
    ]
    for name in result.methods:
        parts = [f"{MEASURE_LABELS[m]} {result.score(name, m).text()}" for m in MEASURES[:3]]
        lines.append(f"{name}: " + ", ".join(parts) + f", fluency ppl {_ppl(result, name)}")
    best = result.best("harmonic")
    lines.append(f"highest harmonic mean: {best}")
    level = _level(result)
    for measure in MEASURES:
        found = result.significant(measure, level)
        label = MEASURE_LABELS[measure]
        if not found:
            lines.append(f"{label}: no pair of methods differs ({NOT_SIGNIFICANT}, Holm)")
            continue
        words = []
        for a, b in found:
            d = result.pair(a, b)[measure]
            sign = ">" if d["difference"]["value"] > 0 else "<"  # fluency: the perplexities
            words.append(f"{a} {sign} {b} (p {d['p_holm']:.2g})")
        rest = len(result.pairs) - len(found)
        lines.append(
            f"{label}: " + "; ".join(words) + f"; the other {rest} pairs {NOT_SIGNIFICANT} (Holm)"
        )
    return lines


def tables(result: SteeringComparison) -> list[Table]:
    from mlneurons.evaluation.uncertainty import Estimate
    from mlneurons.methods.steering_comparison import MEASURES

    rows: list[list[Any]] = []
    for name in result.methods:
        outcome = result.outcome(name)
        alpha = outcome.setting.get("alpha")
        cells = [result.score(name, m).text() for m in MEASURES[:3]]
        degenerate = result.scores[name]["degenerate"]
        rows.append([
            name, outcome.family, "–" if alpha is None else f"{alpha:g}", *cells,
            _ppl(result, name), f"{degenerate:.0%}",
        ])  # fmt: skip
    header = ["method", "family", "alpha", "forcing", "relevance", "harmonic mean"]
    header += ["fluency ppl", "degenerate"]
    caption = (
        f"{len(result.questions)} questions; forcing and relevance with Wilson intervals, the "
        "harmonic mean and the perplexity with bootstrap intervals over questions."
    )
    level = _level(result)
    pair_rows = []
    for pair in result.pairs:
        cells = []
        for measure in MEASURES:
            entry = pair[measure]
            spec = ".2f" if measure == "fluency" else ".1%"
            text = Estimate.from_json(entry["difference"]).text(spec)
            mark = "" if entry["p_holm"] < level else ", n.s."
            cells.append(f"{text} (p {entry['p_holm']:.2g}{mark})")
        pair_rows.append([pair["a"], pair["b"], *cells])
    pair_header = ["a", "b", "forcing a − b", "relevance a − b", "harmonic mean a − b"]
    pair_header.append("log ppl ratio a / b")
    pair_caption = (
        "Every pair on the same questions: McNemar (rates) or a paired permutation test "
        "(harmonic mean, log perplexity ratio), p adjusted by Holm across pairs per measure."
    )
    samples = []
    for i, question in enumerate(result.questions[:3]):
        for outcome in result.outcomes:
            marks = ("forced " if outcome.forced[i] else "") + (
                "relevant" if outcome.relevant[i] else ""
            )
            samples.append([
                question["question"], outcome.name,
                f"{outcome.answers[i]} [{outcome.languages[i]}]", marks.strip() or "–",
            ])  # fmt: skip
    return [
        Table(header, rows, caption),
        Table(pair_header, pair_rows, pair_caption, details=True),
        Table(["question", "method", "answer [language]", "judged"], samples, details=True),
    ]


SPEC = Command(
    name="steer-compare",
    title="Residual directions against language neurons",
    config=SteerCompareConfig,
    result="mlneurons.methods.steering_comparison:SteeringComparison",
    run=run,
    describe=describe,
    figures=plot("steer_compare.png", "plot_steering_comparison"),
    tables=tables,
    step=Step(
        budgets={
            "default": {
                "source": "es",
                "target": "zh",
                "n_questions": 12,
                "sentences": 32,
                "directions": ("diffmean", "pca"),
                "neuron_modes": ("replace", "add"),
            },
            "full": {"source": "es", "target": "zh", "n_questions": 48},
        },
        reuse="neurons",
        needs=("lape",),
    ),
)
