"""Language-specific features of a sparse autoencoder: LAPE and Deng et al.'s ν (ACL 2025).

    python examples/dictionary_features.py --model gemma-3-270m --dictionary DIR

DIR holds a sparse autoencoder (or transcoder) as SAELens saves it: cfg.json and
sae_weights.safetensors. It is spliced into the model at its hook point, every language's
feature activations are counted as LAPE counts MLP neurons, and features are selected by
LAPE (activation-probability entropy) and by monolinguality ν (mean activation on the
language minus the mean over the others).
"""

from __future__ import annotations

import argparse

import mlneurons
from mlneurons import LanguageNeurons, MultilingualCorpus
from mlneurons.methods.monolinguality import monolinguality, select_monolingual
from mlneurons.models import DEFAULT_MODEL


def language_features(
    model_name: str,
    dictionary_dirs: list[str],
    languages: list[str],
    *,
    corpus_dir: str | None = None,
    tokens_per_language: int = 8192,
    top_rate: float = 0.01,
    top_k: int = 10,
) -> tuple[LanguageNeurons, LanguageNeurons]:
    model = mlneurons.load_model(model_name)
    dictionaries = [mlneurons.load_dictionary(d) for d in dictionary_dirs]
    if corpus_dir is None:
        corpus = MultilingualCorpus.builtin(languages, tokens_per_language=tokens_per_language)
    else:
        corpus = MultilingualCorpus.from_files(
            corpus_dir, tokens_per_language=tokens_per_language, seq_len=64
        ).subset(languages)

    with mlneurons.splice(model, *dictionaries) as points:
        stats = mlneurons.collect_activation_stats(model, corpus, points=points)
    by_lape = mlneurons.lape.select(stats, top_rate=top_rate)
    by_nu = select_monolingual(stats, top_k=top_k)

    nu = monolinguality(stats)
    for i, lang in enumerate(stats.languages):
        best = [(points[p], f, float(nu[i, p, f])) for p, f in by_nu[lang][:3].tolist()]
        shown = ", ".join(f"{f} (ν {v:.3g})" for _, f, v in best)
        print(f"{lang}: {len(by_lape[lang])} LAPE features; highest ν: {shown}")
    return by_lape, by_nu


def main(argv: list[str] | None = None) -> tuple[LanguageNeurons, LanguageNeurons]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dictionary", required=True, help="comma-separated directories")
    parser.add_argument("--languages", default="en,fr,zh,ja")
    parser.add_argument("--corpus", default=None, help="folder of {lang}.txt (default: built-in)")
    parser.add_argument("--tokens-per-language", type=int, default=8192)
    parser.add_argument("--top-rate", type=float, default=0.01)
    parser.add_argument("--top-k", type=int, default=10)
    args = parser.parse_args(argv)
    return language_features(
        args.model,
        args.dictionary.split(","),
        args.languages.split(","),
        corpus_dir=args.corpus,
        tokens_per_language=args.tokens_per_language,
        top_rate=args.top_rate,
        top_k=args.top_k,
    )


if __name__ == "__main__":
    main()
