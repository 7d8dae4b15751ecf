"""What the intervals add to ``mlneurons ablate``: the forward passes against the interval work.

    python bench/deactivation_intervals.py --neurons DIR [--languages en,es] [--tokens 512]
        [--seq-len 256]
    python bench/deactivation_intervals.py --result DIR --wall SECONDS

Runs the deactivation matrix of the neurons in DIR (``mlneurons lape --out DIR``, with its
``stats.safetensors`` for the matched controls) the way ``mlneurons ablate`` does, then
everything that computes intervals from its per-row losses: ``to_json`` (what ``save``
writes), ``describe``, ``tables`` and the interval calls of both figures. Prints both times
and their ratio. With ``--result`` (a saved ``ppl_matrix.json``) it times the interval work
alone against the ``--wall`` time of the run that wrote it. Target: the intervals add at
most 5% to the command's wall time.
"""

from __future__ import annotations

import argparse
import time

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.interfaces.commands import ablate
from mlneurons.methods.deactivation import PerplexityMatrix, perplexity_matrix
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.models.loading import load_model
from mlneurons.stats.activation import ActivationStats

TARGET = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", help="a `mlneurons lape` directory")
    parser.add_argument("--result", help="a saved ppl_matrix.json (or its directory)")
    parser.add_argument("--wall", type=float, help="with --result: its run's wall seconds")
    parser.add_argument("--languages", default=None, help="default: those of the neurons")
    parser.add_argument("--tokens", type=int, default=512, help="held-out tokens per language")
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    if args.result:
        matrix, forward = PerplexityMatrix.load(args.result), args.wall
        if forward is None:
            parser.error("--result needs --wall, the seconds of the run that wrote it")
    elif args.neurons:
        matrix, forward = run(args)
    else:
        parser.error("give --neurons or --result")
    import mlneurons.interfaces.plots  # noqa: F401  (imported by the command for its figures)

    start = time.perf_counter()
    matrix.to_json()
    ablate.describe(matrix)
    ablate.tables(matrix)
    for kind in ("deactivated", "random_control", "matched_control"):
        matrix.change_intervals(kind)
    matrix.own_changes()
    intervals = time.perf_counter() - start
    rows = min(len(r) for r in matrix.row_tokens.values())
    what = "run" if args.result else "forward passes"
    print(
        f"{len(matrix.languages)} languages, {rows} rows each, {len(matrix.matched_draws())} "
        f"matched draws: {what} {forward:.1f} s, intervals {intervals:.2f} s, "
        f"ratio {intervals / forward:.2%} (target <= {TARGET:.0%})"
    )


def run(args: argparse.Namespace) -> tuple[PerplexityMatrix, float]:
    """The matrix as ``mlneurons ablate`` makes it, and the seconds it took."""
    neurons = LanguageNeurons.load(args.neurons)
    stats = ActivationStats.load(args.neurons)
    languages = args.languages.split(",") if args.languages else neurons.languages
    corpus = MultilingualCorpus.builtin(
        languages, split="heldout", seq_len=args.seq_len, tokens_per_language=args.tokens
    )
    model = load_model(neurons.model["name"])
    start = time.perf_counter()
    matrix = perplexity_matrix(model, neurons, corpus, stats=stats, progress=False)
    return matrix, time.perf_counter() - start


if __name__ == "__main__":
    main()
