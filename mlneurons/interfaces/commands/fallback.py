"""``mlneurons fallback``: which language answers when a language's neurons go away."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from mlneurons.config import option
from mlneurons.errors import UserError
from mlneurons.interfaces.commands.inputs import uncertainty
from mlneurons.interfaces.commands.steer import (
    GenerationConfig,
    difference_text,
    interval_caption,
    p_text,
    steering_inputs,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot
from mlneurons.methods.steering import FallbackCurve, FallbackOrder, FallbackPoint


@dataclass(frozen=True)
class FallbackConfig(GenerationConfig):
    """``mlneurons fallback``: deactivate growing shares of a language's neurons."""

    method: ClassVar[str] = "fallback"

    stats: str | None = option(
        None, "statistics for the order (default: NEURONS/stats.safetensors)"
    )
    language: str = option("", "language of the questions and neurons", required=True)
    shares: Sequence[float] = option(
        (0.0, 0.25, 0.5, 0.75, 1.0), "comma-separated shares of its neurons to deactivate"
    )
    order: FallbackOrder = option(
        "lape", "lape: most specific first; probability: most often firing first; random"
    )
    seed: int = option(0, "seed of the random order")

    def check(self) -> None:
        for share in self.shares:
            if not 0 <= share <= 1:
                raise UserError(f"shares={share!r} is not a share in [0, 1], e.g. 0.5")


def run(cfg: FallbackConfig, context: Context) -> FallbackCurve:
    """Deactivate growing shares of the language's neurons; the answers' languages."""
    from mlneurons.methods.steering import fallback_curve

    inputs = steering_inputs(cfg, context, cfg.language)
    return fallback_curve(
        inputs.model,
        inputs.questions,
        neurons=inputs.neurons,
        stats=inputs.stats,
        language=inputs.languages[0],
        shares=cfg.shares,
        order=cfg.order,
        seed=cfg.seed,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
        uncertainty=uncertainty(cfg),
    )


def _share(curve: FallbackCurve, point: FallbackPoint, category: str) -> str:
    """A category's share with its Wilson interval (alone in files saved before intervals)."""
    found = point.interval(category, curve.uncertainty.confidence)
    return f"{point.distribution[category]:.1%}" if found is None else found.text()


def describe(curve: FallbackCurve) -> list[str]:
    lines = []
    alpha = 1 - curve.uncertainty.confidence
    adjusted = curve.adjusted_p_values()
    for point, dominant, holm_p in zip(curve.points, curve.dominant(), adjusted):
        shares = ", ".join(
            f"{k} {_share(curve, point, k)}" for k, v in point.distribution.items() if v
        )
        line = (
            f"{point.share:>5.0%} of {curve.language}'s neurons off ({point.n_deactivated}): "
            f"mostly {dominant}; {shares}"
        )
        test = curve.test(point)
        if test is not None and holm_p is not None:
            verdict = "significant" if holm_p < alpha else "not significant"
            line += (
                f"; in {curve.language} against none off: {difference_text(test.difference)}, "
                f"exact McNemar {p_text(test.p_value)}, Holm-adjusted {holm_p:.3f}: {verdict}"
            )
        lines.append(line)
    return lines


def tables(curve: FallbackCurve) -> list[Table]:
    alpha = 1 - curve.uncertainty.confidence
    rows: list[list[Any]] = []
    for point, holm_p in zip(curve.points, curve.adjusted_p_values()):
        test = curve.test(point)
        versus = "–"
        if test is not None and holm_p is not None:
            flag = " n.s." if holm_p >= alpha else ""
            versus = f"{difference_text(test.difference)}; {p_text(test.p_value)}, "
            versus += f"Holm {holm_p:.3f}{flag}"
        cells = [_share(curve, point, c) for c in curve.categories]
        rows.append([f"{point.share:.0%}", point.n_deactivated, *cells, versus])
    n = curve.settings.get("n_questions", 0)
    caption = (
        f"Growing shares of {curve.language}'s neurons deactivated ({curve.order} order); "
        f"the languages the answers fall back to. {interval_caption(curve.uncertainty, n)} "
        f"Against none off: the share in {curve.language}, Holm-adjusted over the shares "
        "(n.s. by the adjusted p)."
    )
    header = ["share off", "neurons", *curve.categories, f"in {curve.language} vs none off"]
    return [Table(header, rows, caption)]


SPEC = Command(
    name="fallback",
    title="Fallback: which language answers without a language's neurons",
    config=FallbackConfig,
    result="mlneurons.methods.steering:FallbackCurve",
    run=run,
    describe=describe,
    figures=plot("fallback.png", "plot_fallback_curve"),
    tables=tables,
    step=Step(
        budgets={
            "default": {"language": "zh", "n_questions": 8},
            "full": {"language": "zh"},
        },
        reuse="neurons",
        needs=("lape",),
    ),
)
