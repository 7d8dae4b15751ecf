"""What splicing a dictionary costs on the built-in model, and that it changes nothing.

    python bench/dictionary_features.py [--rows 8] [--repeats 3] [--layer 6]

A random ReLU SAE (4 x d_model features) is spliced at ``blocks.{layer}.hook_resid_post``
of Gemma 3 270M. Prints:

* exactness: the largest |logit| difference with and without the splice over built-in
  text (must be 0.0: an unedited splice returns the activation itself);
* throughput: the feature statistics pass (bridge hooks; it stops after the dictionary's
  layer) against the neuron statistics pass over the same rows (the unwrapped fast path,
  all 18 layers), in tokens/s and as a ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layer", type=int, default=6)
    args = parser.parse_args()

    import mlneurons
    from mlneurons.models.dictionary import Dictionary

    torch.set_grad_enabled(False)
    model = mlneurons.load_model("gemma-3-270m", device="cpu")
    d_model = int(model.cfg.d_model)
    g = torch.Generator().manual_seed(0)
    sae = Dictionary(
        torch.randn(d_model, 4 * d_model, generator=g) / d_model**0.5,
        torch.zeros(4 * d_model),
        torch.randn(4 * d_model, d_model, generator=g) / (4 * d_model) ** 0.5,
        torch.zeros(d_model),
        f"blocks.{args.layer}.hook_resid_post",
    )
    corpus = mlneurons.MultilingualCorpus.builtin(
        ["en", "zh"], seq_len=256, tokens_per_language=args.rows // 2 * 255
    )
    rows = torch.cat(
        [torch.cat(list(corpus.rows(lang, model.tokenizer))) for lang in corpus.languages]
    )

    with torch.inference_mode():
        base = model(rows[:2])
        with mlneurons.splice(model, sae):
            spliced = model(rows[:2])
    print(
        f"exactness: max |logit difference| with the splice = {float((spliced - base).abs().max())}"
    )

    def neurons() -> None:
        mlneurons.collect_activation_stats(model, corpus, progress=False)

    def features() -> None:
        with mlneurons.splice(model, sae) as points:
            mlneurons.collect_activation_stats(model, corpus, progress=False, points=points)

    runs = {"neurons": neurons, "features": features}
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    n_tokens = rows.numel()
    for name, s in median.items():
        print(f"{name}: {n_tokens / s:,.0f} tokens/s (median of {args.repeats})")
    print(f"features / neurons: {median['neurons'] / median['features']:.2f}x")


if __name__ == "__main__":
    main()
