"""Does a model rank the same facts' candidates alike in every language? RankC and friends.

    python examples/cross_lingual_consistency.py --languages en,es,de,zh,ja --max-facts 5

Probes the built-in facts (every candidate's score is kept), then compares the languages:
RankC per pair (Qi et al. 2023), raw and chance-corrected, COverlap (the Jaccard of correct
facts), SeaEval's answer consistency with AC3, and the transfer P(correct in l' | correct
in l); the same as ``mlneurons probe --out D`` then ``mlneurons consistency --probe D``.
"""

from __future__ import annotations

import argparse

import mlneurons
from mlneurons.data.facts import FactSet
from mlneurons.methods.consistency import ConsistencyResult, consistency
from mlneurons.methods.probing import probe
from mlneurons.models import DEFAULT_MODEL
from mlneurons.models.bridge import TransformerBridge


def cross_lingual_consistency(model: TransformerBridge, facts: FactSet) -> ConsistencyResult:
    result = consistency(probe(model, facts, progress=False))
    for row in result.pairs:
        a, b = row["languages"]
        print(
            f"{a}-{b}: RankC {result.estimate(a, b, 'rankc').text('.3f')} "  # type: ignore[union-attr]
            f"(chance {row['chance']:.3f}), corrected "
            f"{result.estimate(a, b, 'rankc_corrected').text('.3f')}"  # type: ignore[union-attr]
        )
    print(
        "AC3:", result.answer("ac3").text(), "| consistency:", result.answer("consistency").text()
    )
    print("clustered order:", ", ".join(result.orders["rankc"]))
    return result


def main(argv: list[str] | None = None) -> ConsistencyResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--languages", default="en,es,de,zh,ja")
    parser.add_argument("--max-facts", type=int, default=5, help="facts per relation")
    args = parser.parse_args(argv)
    facts = FactSet.builtin(languages=args.languages.split(",")).head(args.max_facts)
    return cross_lingual_consistency(mlneurons.load_model(args.model), facts)


if __name__ == "__main__":
    main()
