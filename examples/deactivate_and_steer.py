"""Switch language neurons off and on (Tang et al., ACL 2024, sections 4 and 5).

    python examples/deactivate_and_steer.py --neurons runs/lape --source es --target zh

Does deactivating a language's neurons hurt only that language? Does activating the
target language's neurons make the model answer a source-language question in it?
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlneurons
from mlneurons import ActivationStats, LanguageNeurons, MultilingualCorpus
from mlneurons.data.questions import load_questions
from mlneurons.methods.deactivation import PerplexityMatrix, perplexity_matrix
from mlneurons.methods.interventions import activate, deactivate
from mlneurons.methods.steering import SteeringResult, steer


def ablation_and_steering(
    neurons_dir: Path,
    *,
    model_name: str | None = None,
    source: str = "es",
    target: str = "zh",
    corpus: MultilingualCorpus | None = None,
    questions: list[str] | None = None,
    template: str = "Q: {question}\nA:",
) -> tuple[PerplexityMatrix, SteeringResult]:
    neurons = LanguageNeurons.load(neurons_dir)
    stats = ActivationStats.load(neurons_dir)
    model = mlneurons.load_model(model_name or neurons.model["name"])

    heldout = corpus or MultilingualCorpus.builtin(
        [source, target], split="heldout", tokens_per_language=1024
    )
    matrix = perplexity_matrix(model, neurons, heldout)
    change = matrix.relative_change()
    for i, lang in enumerate(matrix.languages):
        row = ", ".join(f"{c} {100 * change[i, j]:+.1f}%" for j, c in enumerate(matrix.languages))
        print(f"deactivate {lang}: {row}")

    to_target = activate(neurons[target], stats.mean_activation(target), model=model)
    result = steer(
        model,
        questions or load_questions(source)[:8],
        source=source,
        target=target,
        intervention=to_target + deactivate(neurons.difference(source, target)),
        languages=neurons.languages,
        template=template,
        max_new_tokens=16,
    )
    test = result.test()  # off vs on over the same questions: Wilson intervals, exact McNemar
    print(
        f"answers in {target}: {test.before.text()} -> {test.after.text()} (p = {test.p_value:.3f})"
    )
    return matrix, result


def main(argv: list[str] | None = None) -> tuple[PerplexityMatrix, SteeringResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=Path, default=Path("runs/lape"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--source", default="es")
    parser.add_argument("--target", default="zh")
    args = parser.parse_args(argv)
    return ablation_and_steering(
        args.neurons, model_name=args.model, source=args.source, target=args.target
    )


if __name__ == "__main__":
    main()
