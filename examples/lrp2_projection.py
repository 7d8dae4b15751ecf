"""Project a language into English space and back (LRP2, Xu et al. 2023), and see if facts transfer.

    python examples/lrp2_projection.py --languages en,de,zh --max-facts 6 --layers 3,9,15

Language vectors come from the built-in prose; the (LIRP, LSRP) layers are chosen per
language on dev facts and P@1 / Trans are reported on held-out facts.
"""

from __future__ import annotations

import argparse

import mlneurons
from mlneurons import MultilingualCorpus
from mlneurons.data.facts import FactSet
from mlneurons.methods.lrp2 import LRP2Result, evaluate_lrp2, language_vectors
from mlneurons.models import DEFAULT_MODEL


def lrp2_transfer(
    model_name: str,
    facts: FactSet,
    corpus: MultilingualCorpus,
    *,
    layers: list[int] | None = None,
    k: int = 50,
) -> LRP2Result:
    model = mlneurons.load_model(model_name)
    vectors = language_vectors(model, corpus, max_sentences=200)
    result = evaluate_lrp2(model, facts, vectors, layers=layers, k=k)
    for lang in result.languages:
        p1, trans = result.test_p_at_1[lang], result.trans[lang]
        print(
            f"{lang}: LIRP/LSRP at {result.selected[lang]}: P@1 {p1['before']:.0%} -> "
            f"{p1['after']:.0%}, Trans {trans['before']:.2f} -> {trans['after']:.2f}"
        )
    return result


def main(argv: list[str] | None = None) -> LRP2Result:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--languages", default="en,de,zh")
    parser.add_argument("--max-facts", type=int, default=6, help="facts per relation")
    parser.add_argument("--layers", default="3,9,15")
    args = parser.parse_args(argv)
    facts = FactSet.builtin(languages=args.languages.split(",")).head(args.max_facts)
    corpus = MultilingualCorpus.builtin(facts.languages, split="all")
    layers = [int(x) for x in args.layers.split(",")]
    return lrp2_transfer(args.model, facts, corpus, layers=layers)


if __name__ == "__main__":
    main()
