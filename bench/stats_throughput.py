"""Throughput and memory of ``collect_activation_stats`` on the built-in model.

Prints two ratios:

* throughput: tokens/s of ``collect_activation_stats`` divided by tokens/s of the
  bare Hugging Face model body (no hooks, no unembedding) over the same rows: the
  hardware limit. Target >= 0.9.
* memory: peak RSS of a collection over an 8x larger corpus divided by the peak
  RSS over the small one (each in a fresh process). Target ~1.0 (flat).

It also prints the naive ratio: ``model.run_with_hooks`` with one counting hook on
each layer's ``mlp.hook_pre`` (the way research scripts count firing neurons), over
the same rows.

Run: ``.venv/bin/python bench/stats_throughput.py [--rows 32] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch


def throughput(rows: int, repeats: int, batch_size: int) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    import mlneurons
    from mlneurons.models.loading import resolve_model_path

    torch.set_grad_enabled(False)
    model = mlneurons.load_model("gemma-3-270m", device="cpu")
    bare = AutoModelForCausalLM.from_pretrained(
        resolve_model_path("gemma-3-270m"), dtype=torch.float32
    ).eval()
    corpus = mlneurons.MultilingualCorpus.builtin(
        ["en", "fr", "zh", "ru"], seq_len=256, tokens_per_language=rows // 4 * 255
    )  # a 256-token row is BOS + 255 language tokens
    batches = [
        b
        for lang in corpus.languages
        for b in corpus.rows(lang, model.tokenizer, batch_size=batch_size)
    ]
    n_tokens = sum(b.numel() for b in batches)

    def run_bare() -> None:
        with torch.inference_mode():
            for batch in batches:
                bare.model(input_ids=batch, use_cache=False)

    def run_stats() -> None:
        mlneurons.collect_activation_stats(model, corpus, batch_size=batch_size, progress=False)

    n_layers = int(model.cfg.n_layers)
    fired = torch.zeros(n_layers, int(model.cfg.d_mlp), dtype=torch.long)

    def count(act: torch.Tensor, *, hook: object) -> None:
        fired[int(hook.name.split(".")[1])] += (act > 0).sum((0, 1))

    naive_hooks = [(f"blocks.{layer}.mlp.hook_pre", count) for layer in range(n_layers)]

    def run_naive() -> None:
        with torch.inference_mode():
            for batch in batches:
                model.run_with_hooks(batch, fwd_hooks=naive_hooks, return_type=None)

    runs = {"bare": run_bare, "stats": run_stats, "naive": run_naive}
    for run in runs.values():  # warm up
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):  # interleave so that machine noise hits all alike
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - t)
    tps = {name: n_tokens / statistics.median(s) for name, s in seconds.items()}
    return {
        "tokens": n_tokens,
        "bare_hf_body_tok_s": tps["bare"],
        "collect_tok_s": tps["stats"],
        "naive_run_with_hooks_tok_s": tps["naive"],
        "ratio": tps["stats"] / tps["bare"],
        "naive_ratio": tps["naive"] / tps["bare"],
    }


def peak_rss_mb(tokens_per_language: int) -> float:
    code = f"""
import re, torch, mlneurons
model = mlneurons.load_model("gemma-3-270m", device="cpu")
ids = torch.randint(1000, 200000, ({tokens_per_language},), generator=torch.Generator().manual_seed(0))
corpus = mlneurons.MultilingualCorpus.from_token_ids({{"a": ids, "b": ids.flip(0)}}, seq_len=256)
mlneurons.collect_activation_stats(model, corpus, progress=False)
# VmHWM, this process's own peak (ru_maxrss would carry the parent's peak across exec)
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="rows of 256 tokens per timing run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--memory-tokens", type=int, default=2048, help="small corpus size per language"
    )
    args = parser.parse_args()
    result = throughput(args.rows, args.repeats, args.batch_size)
    print(f"bare HF body:              {result['bare_hf_body_tok_s']:8.0f} tok/s")
    print(f"collect_activation_stats:  {result['collect_tok_s']:8.0f} tok/s")
    print(f"naive run_with_hooks:      {result['naive_run_with_hooks_tok_s']:8.0f} tok/s")
    print(f"throughput ratio:          {result['ratio']:8.3f}   (target >= 0.9)")
    print(f"naive ratio:               {result['naive_ratio']:8.3f}")
    small, large = peak_rss_mb(args.memory_tokens), peak_rss_mb(8 * args.memory_tokens)
    result.update(peak_rss_small_mb=small, peak_rss_large_mb=large, memory_ratio=large / small)
    print(f"peak RSS, {args.memory_tokens} tok/lang:     {small:8.0f} MB")
    print(f"peak RSS, {8 * args.memory_tokens} tok/lang:    {large:8.0f} MB")
    print(f"memory ratio (8x corpus):  {large / small:8.3f}   (target ~1.0)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
