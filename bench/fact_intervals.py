"""What the intervals of probe, fact-neurons and lrp2 cost (issue 19: at most 5% of a
command's wall time at the defaults).

    python bench/fact_intervals.py --run DIR [--probe-wall S] [--lrp2-wall S]
    python bench/fact_intervals.py --synthetic   (mLAMA-sized: 9 languages x 41 x 100 facts)

Times every interval, test and chance level a saved result shows (computed afresh, as
``to_json``, ``describe``, ``tables`` and the figures first ask for them; the Jaccard tests
are computed once and cached), and prints the ratio to the command's wall time when given.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def probe_seconds(result: Any) -> float:
    from mlneurons.methods.probing import result as module

    module._jaccard_tests.cache_clear()
    return timed(lambda: (result.p_at_1_intervals(), result.jaccard_tests()))


def lrp2_seconds(result: Any) -> float:
    def work() -> None:
        result.p_at_1_tests(), result.trans_intervals(), result.overlap_intervals()
        for lang in result.languages:
            result.selection_test(lang)

    return timed(work)


def report(name: str, seconds: float, wall: float | None) -> None:
    ratio = f", {100 * seconds / wall:.2f}% of the {wall:.0f} s command" if wall else ""
    print(f"{name}: intervals {seconds:.3f} s{ratio}")


def synthetic() -> None:
    from mlneurons.methods.probing.result import ProbeResult

    rng = random.Random(0)
    languages = ["en", "fr", "es", "de", "zh", "ja", "ru", "ar", "hi"]
    relations = [f"P{i}" for i in range(41)]
    predictions = [
        {
            "uuid": f"{rel}-{i}",
            "lang": lang,
            "relation": rel,
            "gold": "g",
            "predicted": "p",
            "correct": rng.random() < 0.3,
        }
        for rel in relations
        for i in range(100)
        for lang in languages
    ]
    result = ProbeResult(languages, relations, predictions)
    seconds = probe_seconds(result)
    per_fact = 1.8  # s per fact on 2 CPU cores with Gemma 3 270M (docs/facts.md)
    wall = per_fact * len(predictions)
    report(
        f"probe, {len(predictions)} predictions (probing about {wall / 3600:.0f} h)", seconds, wall
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--probe-wall", type=float)
    parser.add_argument("--lrp2-wall", type=float)
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args()
    if args.synthetic:
        synthetic()
    if args.run is None:
        return
    from mlneurons.methods.lrp2 import LRP2_FILE, LRP2Result
    from mlneurons.methods.probeless import FACT_NEURONS_FILE, FactNeurons
    from mlneurons.methods.probing.result import PROBE_FILE, ProbeResult

    if (args.run / PROBE_FILE).exists():
        report("probe", probe_seconds(ProbeResult.load(args.run)), args.probe_wall)
    if (args.run / FACT_NEURONS_FILE).exists():
        neurons = FactNeurons.load(args.run)
        report("fact-neurons", timed(neurons.overlap_tests), None)
    if (args.run / LRP2_FILE).exists():
        report("lrp2", lrp2_seconds(LRP2Result.load(args.run)), args.lrp2_wall)


if __name__ == "__main__":
    main()
