"""What the intervals add to ``mlneurons ablate``: the forward passes against the interval work.

    python bench/deactivation_intervals.py --neurons DIR [--languages en,es] [--tokens 512]
        [--seq-len 256]

Runs the deactivation matrix of the neurons in DIR (``mlneurons lape --out DIR``, with its
``stats.safetensors`` for the matched controls) the way ``mlneurons ablate`` does, then
everything that computes intervals from its per-row losses: ``to_json`` (what ``save``
writes), ``describe``, ``tables`` and the interval calls of both figures. Prints both times
and their ratio. Target: the intervals add at most 5% to the command's wall time.
"""

from __future__ import annotations

import argparse
import time

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.interfaces.commands import ablate
from mlneurons.methods.deactivation import perplexity_matrix
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.models.loading import load_model
from mlneurons.stats.activation import ActivationStats

TARGET = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", required=True)
    parser.add_argument("--languages", default=None, help="default: those of the neurons")
    parser.add_argument("--tokens", type=int, default=512, help="held-out tokens per language")
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    neurons = LanguageNeurons.load(args.neurons)
    stats = ActivationStats.load(args.neurons)
    languages = args.languages.split(",") if args.languages else neurons.languages
    corpus = MultilingualCorpus.builtin(
        languages, split="heldout", seq_len=args.seq_len, tokens_per_language=args.tokens
    )
    model = load_model(neurons.model["name"])
    start = time.perf_counter()
    matrix = perplexity_matrix(model, neurons, corpus, stats=stats, progress=False)
    forward = time.perf_counter() - start
    start = time.perf_counter()
    matrix.to_json()
    ablate.describe(matrix)
    ablate.tables(matrix)
    for kind in ("deactivated", "random_control", "matched_control"):
        matrix.change_intervals(kind)
    matrix.own_changes()
    intervals = time.perf_counter() - start
    rows = min(len(r) for r in matrix.row_tokens.values())
    print(
        f"{len(languages)} languages, {rows} rows each, {len(matrix.matched_draws())} matched "
        f"draws: forward passes {forward:.1f} s, intervals {intervals:.2f} s, "
        f"ratio {intervals / forward:.2%} (target <= {TARGET:.0%})"
    )


if __name__ == "__main__":
    main()
