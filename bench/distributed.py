"""Data-parallel LAPE statistics: 2 ranks against 1 on this machine's CPU cores.

Runs ``torchrun --standalone --nproc-per-node=N -m mlneurons lape --shards 8`` on the
built-in model for N = 1 and 2 (each rank gets cores / N threads), with the token rows
already cached, and prints the throughput of the whole command (tokens counted / wall
seconds, model loading and the process group included) and the ratio 2 ranks / 1 rank.
On 2 cores the ratio mainly shows the overhead (a second model load, the process group,
the shards, the all_reduce): the work per core is the same.

Run: ``.venv/bin/python bench/distributed.py [--tokens 4096] [--languages en,fr]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(nproc: int, tokens: int, languages: str, out: Path) -> dict[str, float]:
    threads = max(1, (os.cpu_count() or 2) // nproc)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc-per-node={nproc}", "-m", "mlneurons", "lape", "--device", "cpu",
        "--languages", languages, "--tokens-per-language", str(tokens), "--shards", "8",
        "--out", str(out),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    summary = json.loads((out / "summary.json").read_text())
    counted = sum(summary["tokens_per_language"].values())
    return {"ranks": nproc, "tokens": counted, "wall_s": wall, "tok_per_s": counted / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per language")
    parser.add_argument("--languages", default="en,fr,zh")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(1, args.tokens, args.languages, Path(tmp) / "warm")  # caches the token rows
        results = [run(n, args.tokens, args.languages, Path(tmp) / f"n{n}") for n in (1, 2)]
    for r in results:
        print(
            f"{r['ranks']} rank(s): {r['tokens']} tokens in {r['wall_s']:.1f} s "
            f"(whole command, model loading included): {r['tok_per_s']:.0f} tok/s"
        )
    print(f"ratio 2 ranks / 1 rank: {results[1]['tok_per_s'] / results[0]['tok_per_s']:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
