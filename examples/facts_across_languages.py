"""Which facts does a model know in which language, and which neurons carry them?

    python examples/facts_across_languages.py --languages en,de,fr,zh --max-facts 10

Factual probing (P@1, mLAMA-style typed candidates), cross-lingual sharing (Zhao et
al.'s Jaccard), PROBELESS fact neurons and knowledge tracing on the built-in text.
"""

from __future__ import annotations

import argparse

import mlneurons
from mlneurons import MultilingualCorpus
from mlneurons.data.facts import FactSet
from mlneurons.methods.probeless import FactNeurons, fact_neurons
from mlneurons.methods.probing import probe
from mlneurons.methods.probing.result import ProbeResult
from mlneurons.methods.tracing import TracingResult, trace
from mlneurons.models import DEFAULT_MODEL


def facts_across_languages(
    model_name: str, facts: FactSet, corpus: MultilingualCorpus, *, k: int = 50
) -> tuple[ProbeResult, FactNeurons, TracingResult]:
    model = mlneurons.load_model(model_name)

    probed = probe(model, facts)
    for lang, row in probed.p_at_1().items():
        print(f"{lang}: P@1 {row['micro']:.0%}")
    jaccard = probed.jaccard()
    first = facts.languages[0]
    print(f"Jaccard with {first}:", {lang: round(v, 2) for lang, v in jaccard[first].items()})

    neurons = fact_neurons(model, facts, probed.correct_map(), k=k)
    print(
        "fact-neuron overlap:", {lang: round(v, 2) for lang, v in neurons.overlap()[first].items()}
    )

    traced = trace(facts, corpus, model.tokenizer, probed.correct_map())
    for lang, row in traced.breakdown().items():
        print(lang, {label: n for label, n in row.items() if n})
    return probed, neurons, traced


def main(argv: list[str] | None = None) -> tuple[ProbeResult, FactNeurons, TracingResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--languages", default="en,de,fr,zh")
    parser.add_argument("--max-facts", type=int, default=10, help="facts per relation")
    args = parser.parse_args(argv)
    facts = FactSet.builtin(languages=args.languages.split(",")).head(args.max_facts)
    corpus = MultilingualCorpus.builtin(facts.languages, split="all")
    return facts_across_languages(args.model, facts, corpus)


if __name__ == "__main__":
    main()
