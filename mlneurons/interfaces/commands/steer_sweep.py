"""``mlneurons steer-sweep``: steering modes x strengths x LAPE budgets (Gurgurov et al.)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from mlneurons.config import option
from mlneurons.interfaces.commands.inputs import unique
from mlneurons.interfaces.commands.steer import (
    SOURCE_HELP,
    TARGET_HELP,
    GenerationConfig,
    steering_inputs,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot
from mlneurons.methods.steering import SteeringMode, SteeringSweep, SweepPoint

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class SteerSweepConfig(GenerationConfig):
    """``mlneurons steer-sweep``: steering modes x strengths x LAPE budgets (Gurgurov et al.)."""

    method: ClassVar[str] = "steer-sweep"

    stats: str | None = option(
        None, "statistics for LAPE and the mean activations (default: NEURONS/stats.safetensors)"
    )
    source: str = option("", SOURCE_HELP, required=True)
    target: str = option("", TARGET_HELP, required=True)
    modes: Sequence[SteeringMode] = option(
        ("replace", "add", "diffmean", "scale"), "comma-separated of replace,add,diffmean,scale"
    )
    alphas: Sequence[float] | None = option(
        None, "comma-separated strengths for every mode (default: 0.5,1 and for scale 2,5)"
    )
    top_rates: Sequence[float] = option(
        (0.01, 0.03), "comma-separated LAPE top_rate budgets", rate=True
    )
    source_value: float | None = option(
        0.0, "source language's own neurons set to this constant; 'none' leaves them"
    )


def run(cfg: SteerSweepConfig, context: Context) -> SteeringSweep:
    """Every mode x alpha x top_rate on the same questions: language rates and fluency."""
    from mlneurons.methods.steering import steering_sweep

    inputs = steering_inputs(cfg, context, cfg.source, cfg.target)
    source, target = inputs.languages
    # LAPE re-selected per top_rate with the saved run's other constants
    selection: dict[str, float] = {
        key: inputs.neurons.constants[key]
        for key in ("filter_rate", "activation_bar_ratio")
        if key in inputs.neurons.constants
    }
    return steering_sweep(
        inputs.model,
        inputs.questions,
        stats=inputs.stats,
        source=source,
        target=target,
        modes=unique(cfg.modes),
        alphas=cfg.alphas,
        top_rates=cfg.top_rates,
        selection=selection,
        source_value=cfg.source_value,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
    )


def describe(sweep: SteeringSweep) -> list[str]:
    lines = [
        f"questions in {sweep.source} steered towards {sweep.target} with each mode "
        f"(Gurgurov et al. 2025), {len(sweep.points)} settings; best per mode: highest target "
        "rate, then lowest perplexity of the answers under the unsteered model; settings "
        "with mostly degenerate answers excluded"
    ]
    base = sweep.baseline
    lines.append(
        f"unsteered: {base.target_rate:.0%} in {sweep.target}, {base.source_rate:.0%} in "
        f"{sweep.source}, fluency ppl "
        + ("–" if base.fluency_ppl is None else f"{base.fluency_ppl:.1f}")
    )
    for mode in sweep.modes:
        best = sweep.best(mode)
        if best is None:
            lines.append(f"best {mode}: none (every setting gave mostly degenerate answers)")
            continue
        ppl = "–" if best.fluency_ppl is None else f"{best.fluency_ppl:.1f}"
        lines.append(
            f"best {mode}: alpha {best.alpha:g}, top_rate {best.top_rate:g}: "
            f"{best.target_rate:.0%} in {sweep.target}, fluency ppl {ppl}"
        )
    return lines


def _cells(point: SweepPoint) -> list[str]:
    ppl = "–" if point.fluency_ppl is None else f"{point.fluency_ppl:.1f}"
    rates = (point.target_rate, point.source_rate, point.degenerate_rate)
    return [*(f"{100 * r:.1f}%" for r in rates), ppl]


def tables(sweep: SteeringSweep) -> list[Table]:
    rows: list[list[Any]] = [["unsteered", "–", "–", "–", *_cells(sweep.baseline)]]
    for mode in sweep.modes:
        best = sweep.best(mode)
        if best is None:
            rows.append([mode, "–", "–", "–", "mostly degenerate", "", "", ""])
        else:
            setting = [mode, f"{best.alpha:g}", f"{best.top_rate:g}", best.n_neurons]
            rows.append([*setting, *_cells(best)])
    header = ["mode", "alpha", "top_rate", "neurons", f"in {sweep.target}"]
    header += [f"in {sweep.source}", "degenerate", "fluency ppl"]
    every = [
        [p.mode, f"{p.alpha:g}", f"{p.top_rate:g}", p.n_neurons, *_cells(p)] for p in sweep.points
    ]
    return [
        Table(header, rows, "The best setting of each mode."),
        Table(header, every, "Every setting.", details=True),
    ]


SPEC = Command(
    name="steer-sweep",
    title="Steering modes and strengths",
    config=SteerSweepConfig,
    result="mlneurons.methods.steering:SteeringSweep",
    run=run,
    describe=describe,
    figures=plot("steering_sweep.png", "plot_steering_sweep"),
    tables=tables,
    step=Step(
        budgets={
            "default": {"source": "es", "target": "zh", "top_rates": (0.01,), "n_questions": 8},
            "full": {"source": "es", "target": "zh"},
        },
        reuse="neurons",
        needs=("lape",),
    ),
)
