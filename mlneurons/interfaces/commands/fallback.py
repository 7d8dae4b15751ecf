"""``mlneurons fallback``: which language answers when a language's neurons go away."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import option
from mlneurons.errors import UserError
from mlneurons.interfaces.commands.steer import GenerationConfig, steering_inputs
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot
from mlneurons.methods.steering import FallbackCurve, FallbackOrder

if TYPE_CHECKING:
    pass


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
    )


def describe(curve: FallbackCurve) -> list[str]:
    lines = []
    for point, dominant in zip(curve.points, curve.dominant()):
        shares = ", ".join(f"{k} {v:.0%}" for k, v in point.distribution.items() if v)
        lines.append(
            f"{point.share:>5.0%} of {curve.language}'s neurons off ({point.n_deactivated}): "
            f"mostly {dominant}; {shares}"
        )
    return lines


def tables(curve: FallbackCurve) -> list[Table]:
    rows = [
        [
            f"{p.share:.0%}",
            p.n_deactivated,
            *(f"{100 * p.distribution[c]:.1f}%" for c in curve.categories),
        ]
        for p in curve.points
    ]
    caption = (
        f"Growing shares of {curve.language}'s neurons deactivated ({curve.order} order); "
        "the languages the answers fall back to."
    )
    return [Table(["share off", "neurons", *curve.categories], rows, caption)]


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
