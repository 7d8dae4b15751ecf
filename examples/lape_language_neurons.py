"""Find the language-specific neurons of a model with LAPE (Tang et al., ACL 2024).

    python examples/lape_language_neurons.py --model gemma-3-270m --languages en,fr,zh,ja

Collects per-language firing rates of every MLP neuron, selects neurons by language
activation probability entropy, and reports where they sit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlneurons
from mlneurons import LanguageNeurons, MultilingualCorpus
from mlneurons.interfaces.plots import plot_layer_distribution, save_figure
from mlneurons.models import DEFAULT_MODEL


def find_language_neurons(
    model_name: str,
    languages: list[str],
    *,
    corpus_dir: str | None = None,
    tokens_per_language: int = 8192,
    top_rate: float = 0.01,
    out: Path = Path("runs/example-lape"),
) -> LanguageNeurons:
    model = mlneurons.load_model(model_name)
    if corpus_dir is None:
        corpus = MultilingualCorpus.builtin(languages, tokens_per_language=tokens_per_language)
    else:
        corpus = MultilingualCorpus.from_files(
            corpus_dir, tokens_per_language=tokens_per_language, seq_len=64
        ).subset(languages)

    stats = mlneurons.collect_activation_stats(model, corpus, batch_size=8)
    neurons = mlneurons.lape.select(stats, top_rate=top_rate)

    per_layer = neurons.counts_per_layer()
    for i, lang in enumerate(neurons.languages):
        busiest = per_layer[i].argsort(descending=True)[:3].tolist()
        print(f"{lang}: {len(neurons[lang]):4d} neurons, most in layers {busiest}")
    shared = neurons.overlap()
    print(
        "neurons shared with the first language:", dict(zip(neurons.languages, shared[0].tolist()))
    )

    stats.save(out)
    neurons.save(out)
    save_figure(plot_layer_distribution(neurons), out / "neurons_per_layer.png")
    return neurons


def main(argv: list[str] | None = None) -> LanguageNeurons:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--languages", default="en,fr,zh,ja")
    parser.add_argument("--corpus", default=None, help="folder of {lang}.txt (default: built-in)")
    parser.add_argument("--tokens-per-language", type=int, default=8192)
    parser.add_argument("--top-rate", type=float, default=0.01)
    parser.add_argument("--out", type=Path, default=Path("runs/example-lape"))
    args = parser.parse_args(argv)
    return find_language_neurons(
        args.model,
        args.languages.split(","),
        corpus_dir=args.corpus,
        tokens_per_language=args.tokens_per_language,
        top_rate=args.top_rate,
        out=args.out,
    )


if __name__ == "__main__":
    main()
