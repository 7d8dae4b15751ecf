"""Which neurons carry a fact in every language, and where is a fact lost outside English?

    python examples/knowledge_neurons.py --languages en,es,de,zh,ja --max-facts 5

Language-independent knowledge neurons (Chen et al. 2024): the PROBELESS fact neurons a
fact has in every language that answers it correctly, switched off fact by fact against
firing-rate-matched controls. Recall vs translation failures (Lu et al. 2025): for each fact
right in English and wrong in another language, does the English answer come up in the
middle layers of the logit lens (translation failure) or never (recall failure)?
"""

from __future__ import annotations

import argparse

import mlneurons
from mlneurons.data.facts import FactSet
from mlneurons.methods.failure_modes import FailureModes, failure_modes
from mlneurons.methods.knowledge_neurons import KnowledgeNeurons, knowledge_neurons
from mlneurons.methods.probeless import fact_neurons
from mlneurons.methods.probing import probe
from mlneurons.models import DEFAULT_MODEL


def knowledge_and_failures(
    model_name: str, facts: FactSet, *, k: int = 50
) -> tuple[KnowledgeNeurons, FailureModes]:
    model = mlneurons.load_model(model_name)
    probed = probe(model, facts)
    neurons = fact_neurons(model, facts, probed.correct_map(), k=k)

    likn = knowledge_neurons(model, facts, probed, neurons)
    print(
        f"{len(likn.with_neurons())} of {len(likn.neurons)} facts right in 2+ languages share neurons"
    )
    print("LIKN per layer (summed over facts):", likn.counts_per_layer())
    for lang, row in likn.effects().items():
        test = row["vs_control"]
        print(
            f"{lang}: P@1 with LIKN off {test.after.text()}, with the control off "
            f"{test.before.text()} (exact McNemar p = {test.p_value:.3g})"
        )

    lost = failure_modes(model, facts, probed)
    for lang in lost.languages:
        print(f"{lang}: translation failures {lost.share_text(lang)}")
    return likn, lost


def main(argv: list[str] | None = None) -> tuple[KnowledgeNeurons, FailureModes]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--languages", default="en,es,de,zh,ja")
    parser.add_argument("--max-facts", type=int, default=5, help="facts per relation")
    args = parser.parse_args(argv)
    facts = FactSet.builtin(languages=args.languages.split(",")).head(args.max_facts)
    return knowledge_and_failures(args.model, facts)


if __name__ == "__main__":
    main()
