"""Cost of the head passes against one scoring forward over the same rows.

``mlneurons heads`` runs three passes: the importance (one forward and one backward per
batch, through a soft mask on every head's ``hook_z``), the output statistics through the
collector (a body forward without the unembedding), and the deactivation matrix (scoring
forwards, every condition of a row in shared batches). On the built-in Gemma 3 270M this
prints the CPU seconds of each over the same rows and their ratio to plain scoring
(:func:`~mlneurons.evaluation.perplexity.sequence_nll`), the unit the report's budget is
counted in; CPU time, because wall time on cores that other jobs use says little.

Run: ``.venv/bin/python bench/head_importance.py [--rows 16] [--seq-len 33]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch


def cpu_seconds(work: Callable[[], Any]) -> float:
    start = time.process_time()
    work()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=33)
    args = parser.parse_args()

    import mlneurons
    from mlneurons import MultilingualCorpus
    from mlneurons.evaluation.perplexity import sequence_nll
    from mlneurons.methods import heads

    model = mlneurons.load_model("gemma-3-270m", device="cpu")
    budget = args.rows * (args.seq_len - 1)
    corpus = MultilingualCorpus.builtin(["en"], tokens_per_language=budget, seq_len=args.seq_len)
    rows = torch.cat(list(corpus.rows("en", model.tokenizer, batch_size=64)))
    tokens = rows[:, 1:].numel()

    def score() -> None:
        with torch.inference_mode():
            for start in range(0, len(rows), 8):
                sequence_nll(model, rows[start : start + 8])

    score()  # warm up
    base = cpu_seconds(score)
    importance = cpu_seconds(
        lambda: heads.head_importance(model, corpus, norms=False, progress=False)
    )
    norms = cpu_seconds(lambda: heads.head_statistics(model, corpus, progress=False))
    conditions = [[], [(0, 0)], [(9, 1), (11, 2)], [(17, 3)]]
    with torch.inference_mode():
        masked = cpu_seconds(lambda: heads.masked_head_nll(model, rows, conditions, progress=False))
    print(f"{len(rows)} rows, {tokens} predicted tokens, {torch.get_num_threads()} threads")
    for name, seconds, per in [
        ("scoring (sequence_nll)", base, 1),
        ("importance (forward + backward)", importance, 1),
        ("output statistics (collector)", norms, 1),
        (f"deactivation, {len(conditions)} conditions", masked, len(conditions)),
    ]:
        ratio = seconds / (base * per)
        print(f"{name:34s} {seconds:6.1f} s cpu, {1000 * seconds / tokens / per:6.2f} ms/token, "
              f"ratio to scoring {ratio:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
