"""Cost of the exactness canaries on the built-in model, as a share of default runs.

    python bench/canaries.py

Each canary runs once per model and process; this times each one on a freshly loaded,
warmed-up model and divides by the measured wall time of the default command it guards
(README, "Measured on the built-in model").
"""

from __future__ import annotations

import argparse
import time

import torch

import mlneurons
from mlneurons.methods import lrp2
from mlneurons.methods.probing import causal as probing
from mlneurons.models import DEFAULT_MODEL, generation
from mlneurons.models.forward import run_body
from mlneurons.stats import collector as stats

DEFAULT_RUN_S = {"lape": 184.0, "probe": 654.0, "lrp2": 992.0, "steer": 56.0}
CANARIES = {
    "lape": stats.check_statistics_pass,
    "probe": probing.check_cached_scoring,
    "lrp2": lrp2.check_block_replay,
    "steer": generation.check_cached_generation,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    for command, check in CANARIES.items():
        model = mlneurons.load_model(args.model, device="cpu")
        with torch.inference_mode():  # warm-up, as the run itself would have paid it
            run_body(model, torch.tensor([[2, *range(1000, 1063)]]))
        if command == "lrp2":
            probing.check_cached_scoring(model)  # its own row; replay checks it first
        start = time.perf_counter()
        check(model)
        seconds = time.perf_counter() - start
        share = seconds / DEFAULT_RUN_S[command]
        print(
            f"{command:6s} canary {seconds:6.2f} s; default run {DEFAULT_RUN_S[command]:.0f} s; "
            f"ratio {share:.4f} ({share:.1%}); max |fast - exact| "
            f"{max(model._mlneurons_canaries.values()):.2g}"
        )


if __name__ == "__main__":
    main()
