"""Steer the output language four ways, and watch a language fall back (Gurgurov et al. 2025).

    python examples/steering_modes.py --neurons runs/lape --source es --target zh

Replacement sets the target language's neurons to their mean; addition adds α times the
mean; diffmean adds α times the difference from the other languages' mean; scale
multiplies. Which puts the answers in the target language without breaking them? And
when a language's neurons go, which language answers instead?
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import mlneurons
from mlneurons import ActivationStats, LanguageNeurons
from mlneurons.data.questions import load_questions
from mlneurons.methods.steering import FallbackCurve, SteeringSweep, fallback_curve, steering_sweep


def modes_and_fallback(
    neurons_dir: Path,
    *,
    model_name: str | None = None,
    source: str = "es",
    target: str = "zh",
    questions: dict[str, list[str]] | None = None,
    top_rates: tuple[float, ...] = (0.01, 0.03),
    template: str = "Q: {question}\nA:",
    max_new_tokens: int = 16,
    identify: Callable[[list[str]], list[str]] | None = None,
) -> tuple[SteeringSweep, FallbackCurve]:
    """``identify``: your language identifier (default: the offline one of mlneurons)."""
    neurons = LanguageNeurons.load(neurons_dir)
    stats = ActivationStats.load(neurons_dir)
    model = mlneurons.load_model(model_name or neurons.model["name"])
    asked = questions or {lang: load_questions(lang)[:12] for lang in (source, target)}

    sweep = steering_sweep(
        model,
        asked[source],
        stats=stats,
        source=source,
        target=target,
        top_rates=top_rates,
        source_value=0.0,  # the source language's own neurons off
        template=template,
        max_new_tokens=max_new_tokens,
        identify=identify,
    )
    print(sweep.summary())
    for mode in sweep.modes:
        best = sweep.best(mode)
        if best is None:
            continue
        test = sweep.test(best)  # against the unsteered answers on the same questions
        print(
            f"best {mode}: alpha {best.alpha:g}, top_rate {best.top_rate:g}: "
            f"{test.after.text()} in {target} (exact McNemar p = {test.p_value:.3f})"
        )
        runner = sweep.versus_runner_up(mode)
        if runner is not None and not runner[1].significant():
            print(
                f"  not distinguishable from alpha {runner[0].alpha:g} (p = {runner[1].p_value:.3f})"
            )

    curve = fallback_curve(
        model,
        asked[target],
        neurons=neurons,
        stats=stats,
        language=target,
        template=template,
        max_new_tokens=max_new_tokens,
        identify=identify,
    )
    for point, dominant in zip(curve.points, curve.dominant()):
        share = point.interval(dominant)  # Wilson interval over the questions
        print(
            f"{point.share:.0%} of {target}'s neurons off: answers mostly in {dominant} "
            f"({share.text() if share else ''})"
        )
    return sweep, curve


def main(argv: list[str] | None = None) -> tuple[SteeringSweep, FallbackCurve]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=Path, default=Path("runs/lape"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--source", default="es")
    parser.add_argument("--target", default="zh")
    args = parser.parse_args(argv)
    return modes_and_fallback(
        args.neurons, model_name=args.model, source=args.source, target=args.target
    )


if __name__ == "__main__":
    main()
