"""``mlneurons steer-sweep``: steering modes x strengths x LAPE budgets (Gurgurov et al.)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from mlneurons.config import option
from mlneurons.interfaces.commands.inputs import uncertainty, unique
from mlneurons.interfaces.commands.steer import (
    SOURCE_HELP,
    TARGET_HELP,
    GenerationConfig,
    difference_text,
    interval_caption,
    p_text,
    steering_inputs,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot
from mlneurons.methods.steering import SteeringMode, SteeringSweep, SweepPoint


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
        uncertainty=uncertainty(cfg),
    )


def _rate(point: SweepPoint, measure: str, sweep: SteeringSweep) -> str:
    """A rate with its Wilson interval, or alone in files saved before intervals."""
    found = point.rate(measure, sweep.uncertainty.confidence)
    return f"{getattr(point, measure):.1%}" if found is None else found.text()


def _fluency(point: SweepPoint, sweep: SteeringSweep) -> str:
    found = point.fluency(sweep.uncertainty)
    if found is not None:
        return found.text(".1f")
    return "–" if point.fluency_ppl is None else f"{point.fluency_ppl:.1f}"


def _ratio(point: SweepPoint, sweep: SteeringSweep) -> str:
    """The fluency perplexity against the unsteered one: ``x6.7 [5.0, 9.1]`` (n.s.: the
    interval holds 1)."""
    ratio = sweep.fluency_change(point)
    if ratio is None:
        return "–"
    flag = " n.s." if not ratio.excludes(1.0) else ""
    return f"x{ratio.value:.2f} [{ratio.lo:.2f}, {ratio.hi:.2f}]{flag}"


def _versus_unsteered(sweep: SteeringSweep, point: SweepPoint, holm_p: float | None) -> str:
    """``p = 0.008, Holm 0.062 n.s.``: the exact McNemar test against the unsteered answers,
    raw and Holm-adjusted over the sweep's settings (the flag follows the adjusted one)."""
    test = sweep.test(point)
    if test is None or holm_p is None:
        return "–"
    flag = " n.s." if holm_p >= 1 - sweep.uncertainty.confidence else ""
    return f"{p_text(test.p_value)}, Holm {holm_p:.3f}{flag}"


def describe(sweep: SteeringSweep) -> list[str]:
    how = sweep.uncertainty
    lines = [
        f"questions in {sweep.source} steered towards {sweep.target} with each mode "
        f"(Gurgurov et al. 2025), {len(sweep.points)} settings; best per mode: highest target "
        "rate, then lowest perplexity of the answers under the unsteered model; settings "
        f"with mostly degenerate answers excluded; {how.confidence:.0%} intervals (Wilson for "
        "rates, bootstrap over questions for fluency), exact McNemar against the unsteered "
        f"answers, Holm-adjusted over the {len(sweep.points)} settings"
    ]
    base = sweep.baseline
    lines.append(
        f"unsteered: {_rate(base, 'target_rate', sweep)} in {sweep.target}, "
        f"{_rate(base, 'source_rate', sweep)} in {sweep.source}, fluency ppl "
        f"{_fluency(base, sweep)}"
    )
    adjusted = dict(zip(map(id, sweep.points), sweep.adjusted_p_values()))
    for mode in sweep.modes:
        best = sweep.best(mode)
        if best is None:
            lines.append(f"best {mode}: none (every setting gave mostly degenerate answers)")
            continue
        line = (
            f"best {mode}: alpha {best.alpha:g}, top_rate {best.top_rate:g}: "
            f"{_rate(best, 'target_rate', sweep)} in {sweep.target}"
        )
        test, holm_p = sweep.test(best), adjusted[id(best)]
        if test is not None and holm_p is not None:
            verdict = "significant" if holm_p < 1 - how.confidence else "not significant"
            line += (
                f" ({difference_text(test.difference)} against unsteered, exact McNemar "
                f"{p_text(test.p_value)}, Holm-adjusted {holm_p:.3f}: {verdict})"
            )
        line += f", fluency ppl {_fluency(best, sweep)}"
        ratio = sweep.fluency_change(best)
        if ratio is not None:
            line += f" (x{ratio.text('.2f')} the unsteered)"
        lines.append(line)
        runner = sweep.versus_runner_up(mode)
        if runner is not None and not runner[1].significant():
            second, versus = runner
            tie = "tied on" if second.target_rate == best.target_rate else "not distinguishable by"
            lines.append(
                f"  {tie} the target rate with alpha {second.alpha:g}, top_rate "
                f"{second.top_rate:g} ({second.target_rate:.1%}; exact McNemar "
                f"{p_text(versus.p_value)}): the sweep does not single out the best {mode} setting"
            )
    return lines


def _cells(point: SweepPoint, sweep: SteeringSweep) -> list[str]:
    rates = ("target_rate", "source_rate", "degenerate_rate")
    return [*(_rate(point, m, sweep) for m in rates), _fluency(point, sweep)]


def tables(sweep: SteeringSweep) -> list[Table]:
    adjusted = dict(zip(map(id, sweep.points), sweep.adjusted_p_values()))
    base = ["unsteered", "–", "–", "–", *_cells(sweep.baseline, sweep), "–", "–"]
    rows: list[list[Any]] = [[*base, "–"]]
    for mode in sweep.modes:
        best = sweep.best(mode)
        if best is None:
            rows.append([mode, "–", "–", "–", "mostly degenerate", *[""] * 6])
            continue
        setting = [mode, f"{best.alpha:g}", f"{best.top_rate:g}", best.n_neurons]
        runner = sweep.versus_runner_up(mode)
        second = "–"
        if runner is not None:
            flag = "" if runner[1].significant() else " n.s."
            second = f"alpha {runner[0].alpha:g}, top {runner[0].top_rate:g}: "
            second += p_text(runner[1].p_value) + flag
        versus = _versus_unsteered(sweep, best, adjusted[id(best)])
        rows.append([*setting, *_cells(best, sweep), _ratio(best, sweep), versus, second])
    header = ["mode", "alpha", "top_rate", "neurons", f"in {sweep.target}"]
    header += [f"in {sweep.source}", "degenerate", "fluency ppl", "ppl vs unsteered"]
    header += ["vs unsteered (exact McNemar)"]
    every = [
        [
            p.mode,
            f"{p.alpha:g}",
            f"{p.top_rate:g}",
            p.n_neurons,
            *_cells(p, sweep),
            _ratio(p, sweep),
            _versus_unsteered(sweep, p, adjusted[id(p)]),
        ]
        for p in sweep.points
    ]
    how, n = sweep.uncertainty, sweep.settings.get("n_questions", len(sweep.baseline.labels))
    caption = (
        f"{interval_caption(how, n)} Fluency: perplexity of the answers under the unsteered "
        "model, bootstrap over questions; ppl vs unsteered: its ratio, paired bootstrap (n.s.: "
        f"the interval holds 1). Against unsteered: exact McNemar p and Holm-adjusted over the "
        f"{len(sweep.points)} settings (n.s. by the adjusted p)."
    )
    return [
        Table(
            [*header, "vs runner-up (exact McNemar)"],
            rows,
            f"The best setting of each mode. {caption} Runner-up: the next setting of the mode; "
            "n.s.: the sweep does not tell the two apart.",
        ),
        Table(header, every, f"Every setting. {caption}", details=True),
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
            "default": {"source": "es", "target": "zh", "top_rates": (0.01,), "n_questions": 6},
            "full": {"source": "es", "target": "zh"},
        },
        reuse="neurons",
        needs=("lape",),
    ),
)
