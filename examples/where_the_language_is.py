"""Where is the model in which language? SES per layer (Tang et al. 2024) and the logit
lens on translation prompts (Wendler et al. 2024).

    python examples/where_the_language_is.py --neurons runs/lape --source fr --target zh

Parallel sentences should look alike in the middle layers (a shared space) and apart at
the bottom and top, where language neurons concentrate; and a translation should pass
through English before it reaches the target language.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

import mlneurons
from mlneurons import LanguageNeurons
from mlneurons.data.parallel import builtin_parallel_sentences
from mlneurons.methods.readouts import (
    LatentLanguage,
    SentenceSimilarity,
    latent_language,
    sentence_similarity,
)


def ses_and_logit_lens(
    neurons_dir: Path,
    *,
    model_name: str | None = None,
    source: str = "fr",
    target: str = "zh",
    sentences: Mapping[str, Sequence[str]] | None = None,
    words: Mapping[str, Sequence[str]] | None = None,
) -> tuple[SentenceSimilarity, LatentLanguage, float]:
    """Returns SES, the logit lens and the correlation of SES with the neurons per layer."""
    neurons = LanguageNeurons.load(neurons_dir)
    model = mlneurons.load_model(model_name or neurons.model["name"])

    ses = sentence_similarity(model, sentences or builtin_parallel_sentences(neurons.languages))
    similarity = ses.mean_offdiagonal()
    counts = neurons.counts_per_layer().sum(0).double()
    pair = correlation(similarity.double(), counts)
    print(f"SES highest at layer {int(similarity.argmax())}, lowest at {int(similarity.argmin())}")
    print(f"correlation of SES with language neurons per layer: {pair:+.2f}")

    lens = latent_language(model, source=source, target=target, words=words)
    found = lens.intervals()  # bootstrap over the words
    for layer, (pt, pe) in enumerate(zip(found["p_target"], found["p_english"])):
        print(f"layer {layer:2d}: P({target}) {pt.text('.3f')}  P(en) {pe.text('.3f')}")
    crossover = lens.crossover_interval()  # n_layers stands for "never"
    print(
        f"{target} overtakes English from layer {lens.crossover_layer()} "
        f"({crossover.confidence:.0%} CI: {crossover.lo:.0f} to {crossover.hi:.0f}, {lens.n_layers} = never)"
    )
    return ses, lens, pair


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two equally long 1-D tensors."""
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def main(argv: list[str] | None = None) -> tuple[SentenceSimilarity, LatentLanguage, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", type=Path, default=Path("runs/lape"))
    parser.add_argument("--model", default=None)
    parser.add_argument("--source", default="fr")
    parser.add_argument("--target", default="zh")
    args = parser.parse_args(argv)
    return ses_and_logit_lens(
        args.neurons, model_name=args.model, source=args.source, target=args.target
    )


if __name__ == "__main__":
    main()
