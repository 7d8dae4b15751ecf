"""Cost per row of the unembedding (with its log-softmax) against the rows per call.

The built-in Gemma's unembedding is a 262,144 x 640 matrix (670 MB in float32); each
call streams all of it, so few rows per call waste memory bandwidth. Prints ms per row
for several call sizes and the ratio of 32 rows per call to ``UNEMBED_ROWS`` (256), the
chunk that probing, the LRP2 grid and perplexity use.

Run: ``.venv/bin/python bench/unembed_rows.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import mlneurons
    from mlneurons.models.forward import UNEMBED_ROWS, log_likelihood_sums

    torch.set_grad_enabled(False)
    model = mlneurons.load_model("gemma-3-270m", device="cpu")
    generator = torch.Generator().manual_seed(0)
    total = 512  # rows scored per timing, whatever the call size
    states = torch.randn(total, int(model.cfg.d_model), generator=generator)
    targets = torch.randint(0, int(model.cfg.d_vocab), (total,), generator=generator)
    owners = torch.arange(total)
    per_row = {}
    for rows in (8, 32, 128, UNEMBED_ROWS, 512):
        log_likelihood_sums(model, states, targets, owners, total, rows=rows)  # warm up
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            log_likelihood_sums(model, states, targets, owners, total, rows=rows)
            seconds.append(time.perf_counter() - start)
        per_row[rows] = 1000 * statistics.median(seconds) / total
        print(f"{rows:4d} rows per call: {per_row[rows]:6.2f} ms per row")
    print(
        f"ratio, 32 rows / {UNEMBED_ROWS} rows per call: {per_row[32] / per_row[UNEMBED_ROWS]:.2f}"
    )


if __name__ == "__main__":
    main()
