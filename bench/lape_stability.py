"""What LAPE's uncertainty costs on the built-in model.

Prints three ratios, each the median of interleaved repeats (the runs alternate, so a
busy machine slows both alike):

* overlap: the chance levels of the shared neurons (``LanguageNeurons.overlap_chance``)
  over the default statistics pass and selection. Target <= 0.05 (the default path).
* blocks: the statistics pass with counts per block of rows (``collect_block_stats``,
  what ``--stability`` runs instead of the default pass) over the default pass.
* bootstrap: the re-selection of ``--resamples`` bootstrap resamples
  (``lape.stability``) over the default pass.

Run: ``.venv/bin/python bench/lape_stability.py [--rows 8] [--resamples 50] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def seconds(work: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = work()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8, help="rows of 256 tokens per language")
    parser.add_argument("--resamples", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import mlneurons
    from mlneurons.methods import lape
    from mlneurons.stats.activation import collect_block_stats

    torch.set_grad_enabled(False)
    model = mlneurons.load_model("gemma-3-270m", device="cpu")
    corpus = mlneurons.MultilingualCorpus.builtin(
        ["en", "fr", "zh"], seq_len=256, tokens_per_language=args.rows * 255
    )

    def default() -> Any:
        stats = mlneurons.collect_activation_stats(model, corpus, progress=False)
        return lape.select(stats)

    times: dict[str, list[float]] = {"default": [], "overlap": [], "blocks": [], "bootstrap": []}
    for _ in range(args.repeats):
        took, neurons = seconds(default)
        times["default"].append(took)
        times["overlap"].append(seconds(neurons.overlap_chance)[0])
        took, blocks = seconds(lambda: collect_block_stats(model, corpus, progress=False))
        times["blocks"].append(took)
        times["bootstrap"].append(seconds(lambda b=blocks: lape.stability(b, args.resamples))[0])
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"default pass and selection: {median['default']:.1f} s (median of {args.repeats})")
    for name in ("overlap", "blocks", "bootstrap"):
        print(f"{name}: {median[name]:.2f} s, ratio {median[name] / median['default']:.3f}")


if __name__ == "__main__":
    main()
