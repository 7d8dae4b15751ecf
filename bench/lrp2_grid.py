"""Speed of the LRP2 layer grid with shared computation against the naive grid.

The naive grid probes the facts once per (LIRP i, LSRP j) pair with projection hooks,
re-running the whole model each time. The shared grid runs the unprojected pass once
and resumes every pair from it (blocks up to i shared by all pairs, up to j by pairs
with the same i). Both probe the same facts under the same pairs; the script exits
with an error unless they predict the same objects, and prints:

* speed-up: naive seconds / shared seconds (wall clock, same process, same facts);
* block ratio: transformer blocks run per suffix token, naive / shared (the compute
  the sharing saves; the unembedding of every candidate position is not shared).

Run: ``.venv/bin/python bench/lrp2_grid.py [--language de] [--per-relation 2]``
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch


def blocks_run(n_layers: int, pairs: list[tuple[int, int]]) -> tuple[int, int]:
    """Blocks per suffix token run by the naive and by the shared grid."""
    naive = len(pairs) * n_layers
    lirps = sorted({i for i, _ in pairs})
    shared = max(lirps) + 1  # the unprojected pass up to the last LIRP layer
    for i in lirps:
        js = [j for a, j in pairs if a == i]
        shared += max(js) - i  # trunk i+1..max j with LIRP only
        shared += sum(n_layers - 1 - j for j in js)  # tail j+1..end per pair
    return naive, shared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--language", default="de")
    parser.add_argument("--pivot", default="en")
    parser.add_argument("--per-relation", type=int, default=2, help="facts per relation")
    parser.add_argument("--layers", default="0,3,6,9,12,15", help="candidate layers")
    parser.add_argument("--sentences", type=int, default=64, help="sentences per language vector")
    args = parser.parse_args()

    import mlneurons
    from mlneurons.data.facts import FactSet
    from mlneurons.methods.lrp2 import language_vectors, probe_projection_grid

    torch.set_grad_enabled(False)
    model = mlneurons.load_model("gemma-3-270m", device="cpu")
    corpus = mlneurons.MultilingualCorpus.builtin([args.pivot, args.language])
    vectors = language_vectors(model, corpus, max_sentences=args.sentences, progress=False)
    facts = FactSet.builtin().subset([args.language]).head(args.per_relation)
    layers = [int(x) for x in args.layers.split(",")]
    pairs = list(itertools.combinations(layers, 2))

    timings, results = {}, {}
    for reuse in (False, True):
        start = time.perf_counter()
        results[reuse] = probe_projection_grid(
            model, facts, vectors, args.language, pairs, pivot=args.pivot, reuse=reuse
        )
        timings[reuse] = time.perf_counter() - start
    same = sum(
        a["predicted"] == b["predicted"]
        for pair in pairs
        for a, b in zip(results[False][pair].predictions, results[True][pair].predictions)
    )
    naive_blocks, shared_blocks = blocks_run(int(model.cfg.n_layers), pairs)
    print(f"{len(facts)} facts x {len(pairs)} pairs (layers {layers}), language {args.language}")
    print(f"naive grid  {timings[False]:7.1f} s")
    print(f"shared grid {timings[True]:7.1f} s")
    print(f"speed-up {timings[False] / timings[True]:.2f}x")
    print(f"block ratio {naive_blocks / shared_blocks:.2f} ({naive_blocks} / {shared_blocks})")
    print(f"same predictions {same} / {len(facts) * len(pairs)}")
    if same != len(facts) * len(pairs):
        raise SystemExit("the shared grid predicted differently from the naive grid")


if __name__ == "__main__":
    main()
