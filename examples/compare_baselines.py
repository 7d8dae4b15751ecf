"""LAPE against Tang et al.'s baselines, with matched controls (ACL 2024, section 4).

    python examples/compare_baselines.py --neurons runs/lape

Are LAPE's neurons more language-specific than those of LAP (firing probability above a
threshold; also read as a quantile and capped at LAPE's count per language), LAVE (entropy
of mean activation values) and RS (random neurons)? And does deactivating them hurt more
than deactivating neurons that fire just as often? (The specificity score printed is this
project's summary, not the paper's: Tang et al. compare the deactivation matrices.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlneurons
from mlneurons import ActivationStats, LanguageNeurons, MultilingualCorpus
from mlneurons.methods.baselines import lap, lave, random_selection, reading
from mlneurons.methods.deactivation import (
    MethodComparison,
    PerplexityMatrix,
    compare_methods,
    perplexity_matrix,
)


def baselines_and_controls(
    neurons_dir: Path,
    *,
    model_name: str | None = None,
    corpus: MultilingualCorpus | None = None,
    draws: int = 3,
    bins: int = 20,
) -> tuple[MethodComparison, PerplexityMatrix]:
    neurons = LanguageNeurons.load(neurons_dir)
    stats = ActivationStats.load(neurons_dir)
    model = mlneurons.load_model(model_name or neurons.model["name"])
    heldout = corpus or MultilingualCorpus.builtin(
        neurons.languages, split="heldout", tokens_per_language=512
    )
    selections = {
        "lape": neurons,
        "lap": lap(stats, threshold=0.95),  # the probability reading: P(fire) > 0.95
        # the quantile reading (P(fire) above the 95th percentile of all probabilities),
        # keeping at most LAPE's count per language
        "lap-capped": lap(stats, threshold_kind="quantile", cap=neurons.counts()),
        "lave": lave(stats, top_rate=neurons.constants.get("top_rate", 0.01)),
        "rs": random_selection(neurons, seed=0),
    }
    comparison = compare_methods(model, selections, heldout)
    intervals = comparison.specificity_intervals()  # None with one held-out row per language
    for method, score in comparison.specificity().items():
        found = None if intervals is None else intervals[method].score
        print(
            f"{method:10s} {sum(comparison.counts[method].values()):6d} neurons: own "
            f"{100 * score['own']:+.1f}%, others {100 * score['others']:+.1f}%, specificity "
            + (f"{score['score'] or float('nan'):.2f}" if found is None else found.text(".2f"))
            + f" ({reading(selections[method].constants)})"
        )

    matrix = perplexity_matrix(model, neurons, heldout, stats=stats, matched_draws=draws, bins=bins)
    own = matrix.relative_change().diagonal()
    uniform = matrix.relative_change("random_control").diagonal()
    matched = matrix.matched_draws().diagonal(dim1=1, dim2=2)  # [draw, language]
    tests = matrix.own_changes()  # bootstrap over held-out rows; None with a single row
    for i, lang in enumerate(matrix.languages):
        versus = None if tests is None else tests[lang].versus_matched
        print(
            f"{lang}: own neurons {100 * own[i]:+.1f}%, uniform control {100 * uniform[i]:+.1f}%, "
            f"matched control {100 * matched[:, i].mean():+.1f}% "
            f"(sd {100 * matched[:, i].std(correction=0):.1f}, {draws} draws)"
            + (
                ""
                if versus is None
                else f"; own - matched {versus.difference.text('+.1%')}"
                + ("" if versus.significant() else " (not significant)")
            )
        )
    return comparison, matrix


def main(argv: list[str] | None = None) -> tuple[MethodComparison, PerplexityMatrix]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=Path, default=Path("runs/lape"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--draws", type=int, default=3)
    args = parser.parse_args(argv)
    return baselines_and_controls(args.neurons, model_name=args.model, draws=args.draws)


if __name__ == "__main__":
    main()
