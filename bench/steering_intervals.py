"""What the intervals cost the steering-side commands: steer, steer-sweep, fallback, ses,
logit-lens.

    python bench/steering_intervals.py --run DIR [--wall steer=71 --wall fallback=19 ...]

For each command whose result is in DIR (e.g. a report run of the built-in model), the
work the intervals add when the command saves and prints its result (``to_json``, which
writes them, ``describe`` and ``tables``, which compute them again) is timed (median of 5)
and divided by the command's wall time: from DIR/report.json's steps, or ``--wall NAME=S``.
Target: at most 5% per command.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from mlneurons.interfaces.commands import command

COMMANDS = ("steer", "steer-sweep", "fallback", "ses", "logit-lens")
TARGET = 0.05


def interval_seconds(name: str, run: Path, repeats: int = 5) -> float:
    spec = command(name)
    result = spec.load(run)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result.to_json()
        spec.describe(result)
        spec.tables(result)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run directory with the results")
    parser.add_argument("--wall", action="append", default=[], help="NAME=SECONDS")
    args = parser.parse_args()
    run = Path(args.run)
    walls = {}
    if (run / "report.json").exists():
        steps = json.loads((run / "report.json").read_text()).get("steps", {})
        walls = {k: v.get("wall_time_s") for k, v in steps.items()}
    walls.update({k: float(v) for k, v in (w.split("=", 1) for w in args.wall)})
    for name in COMMANDS:
        if not command(name).saved(run):
            print(f"{name:<12} no result in {run}")
            continue
        seconds = interval_seconds(name, run)
        wall = walls.get(name)
        if not wall:
            print(f"{name:<12} intervals {seconds * 1000:.1f} ms (no wall time: give --wall)")
            continue
        ratio = seconds / wall
        verdict = "ok" if ratio <= TARGET else f"over the {TARGET:.0%} target"
        print(
            f"{name:<12} intervals {seconds * 1000:.1f} ms / command {wall:.1f} s "
            f"= {ratio:.3%} ({verdict})"
        )


if __name__ == "__main__":
    main()
