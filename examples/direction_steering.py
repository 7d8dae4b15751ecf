"""Steer the output language with residual-stream directions and with language neurons (CLaS-Bench).

    python examples/direction_steering.py --neurons runs/lape --source es --target zh

Four directions from the source to the target language at one layer (difference of
means, logistic probe, LDA, first principal component), each added with strength α times
the distance between the two languages' means, against the LAPE neuron modes, on the same questions with
known answers: how often is the answer in the target language (forcing), does it name the
right object (relevance), their harmonic mean, and how fluent is it?
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import mlneurons
from mlneurons import ActivationStats, LanguageNeurons, MultilingualCorpus
from mlneurons.data.fact_questions import FactQuestion, fact_questions
from mlneurons.methods.directions import LanguageDirections, language_directions
from mlneurons.methods.steering_comparison import (
    SteeringComparison,
    compare_steering,
    steering_methods,
)


def directions_against_neurons(
    neurons_dir: Path,
    *,
    model_name: str | None = None,
    source: str = "es",
    target: str = "zh",
    layer: int | None = None,
    direction_alpha: float = 1.0,
    corpus: MultilingualCorpus | None = None,
    questions: Sequence[FactQuestion] | None = None,
    template: str = "Q: {question}\nA:",
    max_new_tokens: int = 16,
    identify: Callable[[list[str]], list[str]] | None = None,
) -> tuple[LanguageDirections, SteeringComparison]:
    """``corpus``: text for the directions (default: the built-in text of both languages);
    ``questions``: with known answers (default: 16 built from the built-in facts)."""
    neurons = LanguageNeurons.load(neurons_dir)
    stats = ActivationStats.load(neurons_dir)
    model = mlneurons.load_model(model_name or neurons.model["name"])
    layer = int(model.cfg.n_layers) // 2 if layer is None else layer

    directions = language_directions(
        model,
        corpus or MultilingualCorpus.builtin([source, target]),
        source=source,
        target=target,
        layer=layer,
    )
    print(
        f"directions at {directions.point}: alpha 1 moves {directions.scale:.1f}, the distance "
        f"between the languages' means (typical residual norm {directions.residual_norm:.1f})"
    )
    print("cosines:", directions.cosines().numpy().round(2).tolist())

    methods = steering_methods(
        model,
        source=source,
        target=target,
        directions=directions,
        direction_alpha=direction_alpha,
        neurons=neurons,
        stats=stats,
        neuron_modes=("replace", "add"),
    )
    asked = questions if questions is not None else fact_questions(source, target, n=16)
    result = compare_steering(
        model,
        asked,
        methods,
        source=source,
        target=target,
        languages=neurons.languages,
        template=template,
        max_new_tokens=max_new_tokens,
        identify=identify,
    )
    for name in result.methods:
        scores = ", ".join(
            f"{measure} {result.score(name, measure).text()}"
            for measure in ("forcing", "relevance", "harmonic")
        )
        print(f"{name}: {scores}")
    print("differing in harmonic mean (Holm):", result.significant("harmonic") or "none")
    return directions, result


def main(argv: list[str] | None = None) -> tuple[LanguageDirections, SteeringComparison]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=Path, default=Path("runs/lape"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--source", default="es")
    parser.add_argument("--target", default="zh")
    parser.add_argument("--layer", type=int, default=None)
    args = parser.parse_args(argv)
    return directions_against_neurons(
        args.neurons,
        model_name=args.model,
        source=args.source,
        target=args.target,
        layer=args.layer,
    )


if __name__ == "__main__":
    main()
