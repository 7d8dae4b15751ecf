"""mlneurons' command line with a dead worker: rank CRASH_RANK exits without a word at its
CRASH_BATCH-th forward pass of the first attempt (torchrun restarts it). Every forward pass
of the corpus is logged to BATCH_LOG as "attempt rank count", so tests can count the recomputed batches."""

import os
import sys

from mlneurons.interfaces.cli import main
from mlneurons.stats import collector

CRASH_RANK, CRASH_BATCH = (int(x) for x in os.environ.get("CRASH_AT", "-1:-1").split(":"))
ATTEMPT = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
RANK = int(os.environ.get("RANK", "0"))
original = collector.run_batch
count = 0


def run_batch(model, batch, acc):
    global count
    if acc.n_labels == 1:  # the canary's own pass, not a corpus batch
        return original(model, batch, acc)
    count += 1
    with open(os.environ["BATCH_LOG"], "a") as log:
        log.write(f"{ATTEMPT} {RANK} {count}\n")
    if RANK == CRASH_RANK and ATTEMPT == 0 and count == CRASH_BATCH:
        os._exit(1)  # a worker that dies (no exception, no cleanup)
    original(model, batch, acc)


collector.run_batch = run_batch
sys.exit(main())
