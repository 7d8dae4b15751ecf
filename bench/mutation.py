"""Mutation testing of the core modules with mutmut 3: the share of mutants the tests kill.

A copy of a git revision (default HEAD) is made in a scratch directory, so edits in
progress in the working tree neither leak into the run nor get hit by it. Its
``[tool.mutmut]`` section (see pyproject.toml) is narrowed to the chosen modules, mutmut
generates every mutant and maps each function to the tests that run it, then a random
sample of the mutants (or all of them) is tested within a wall-clock budget. Run again
with the same arguments to resume: mutants with a result are not tested twice.

    nice -n 19 timeout 2h .venv/bin/python bench/mutation.py --sample 40 --budget-min 50

Prints per module the mutants killed, survived, timed out and not checked, the share
killed (killed + timeout over all tested), and the diff of every survivor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

CORE = [
    "stats/collector",
    "stats/activation",
    "methods/lape",
    "methods/interventions",
    "evaluation/perplexity",
    "methods/probing/causal",
    "methods/probeless",
    "methods/lrp2",
]
ALIASES = {"statistics": "stats/activation", "collector": "stats/collector"}
REPO = Path(__file__).resolve().parents[1]
MUTMUT = str(Path(sys.executable).with_name("mutmut"))
KILLED, SURVIVED, NO_TESTS, TIMEOUT = {1, 3}, {0}, {5, 33}, {24, -24, 36, 152, 255}


def prepare(workdir: Path, rev: str, modules: list[str], tests: list[str]) -> None:
    """Copy ``rev`` into ``workdir`` and narrow its [tool.mutmut] section."""
    if not (workdir / "pyproject.toml").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
        (workdir / ".mutation-rev").write_text(rev)
    path = workdir / "pyproject.toml"
    text = path.read_text()
    files = json.dumps([f"mlneurons/{m}.py" for m in modules])
    text = re.sub(r"(?ms)^only_mutate = \[.*?\]", f"only_mutate = {files}", text)
    if tests:
        selection = json.dumps(tests)
        text = re.sub(
            r"(?m)^pytest_add_cli_args_test_selection = .*$",
            f"pytest_add_cli_args_test_selection = {selection}",
            text,
        )
    path.write_text(text)


def mutmut(workdir: Path, args: list[str], log: Path, timeout: float | None) -> int:
    """Run ``mutmut args`` in ``workdir``; past ``timeout`` seconds stop it like Ctrl-C."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with log.open("a") as out:
        proc = subprocess.Popen(
            [MUTMUT, *args], cwd=workdir, env=env, stdout=out, stderr=out, start_new_session=True
        )
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)  # mutmut stops its workers and saves results
            try:
                return proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                return proc.wait()


def results(workdir: Path, modules: list[str]) -> dict[str, dict[str, int | None]]:
    """module -> mutant name -> mutmut exit code (None: not tested yet)."""
    found = {}
    for module in modules:
        meta = workdir / "mutants" / "mlneurons" / f"{module}.py.meta"
        found[module] = json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}
    return found


def diff(workdir: Path, name: str) -> str:
    shown = subprocess.run(
        [MUTMUT, "show", name], cwd=workdir, capture_output=True, text=True
    ).stdout
    lines = [x for x in shown.splitlines() if x[:1] in "+-" and x[:3] not in ("+++", "---")]
    return "\n".join(f"      {x}" for x in lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="+", default=CORE, help="default: %(default)s")
    parser.add_argument("--rev", default="HEAD", help="git revision to test (default HEAD)")
    parser.add_argument("--sample", type=int, default=0, help="mutants per module (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-min", type=float, default=60, help="wall-clock budget")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="default: /tmp/mlneurons-mutation-<rev>")
    parser.add_argument("--tests", nargs="+", default=[], help="pytest selection (default: all)")
    args = parser.parse_args()
    start = time.monotonic()
    modules = [ALIASES.get(m, m) for m in args.modules]
    unknown = [m for m in modules if not (REPO / "mlneurons" / f"{m}.py").exists()]
    if unknown:
        parser.error(f"no module mlneurons/{unknown[0]}.py; core modules: {' '.join(CORE)}")
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.rev],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    workdir = args.workdir or Path(f"/tmp/mlneurons-mutation-{sha}")
    log = workdir.with_name(workdir.name + ".log")
    prepare(workdir, sha, modules, args.tests)
    sha = (workdir / ".mutation-rev").read_text()  # a reused --workdir keeps its revision
    print(f"revision {sha}, modules {' '.join(modules)}, in {workdir} (log {log})", flush=True)

    if not any(results(workdir, modules).values()):  # generate mutants and test stats only
        mutmut(
            workdir, ["run", "--max-children", str(args.max_children), "no-such-mutant"], log, None
        )
    found = results(workdir, modules)
    if not any(found.values()):
        sys.exit(f"mutmut generated no mutants; see {log}")
    chosen = []
    for module in modules:
        names = sorted(found[module])
        if args.sample:
            names = random.Random(f"{args.seed}:{module}").sample(
                names, min(args.sample, len(names))
            )
        chosen += names
    todo = [n for n in chosen if found[n.split(".")[1]][n] is None]
    left = args.budget_min * 60 - (time.monotonic() - start)
    if todo and left > 60:
        print(f"testing {len(todo)} mutants within {left / 60:.0f} min", flush=True)
        mutmut(workdir, ["run", "--max-children", str(args.max_children), *todo], log, left)

    found = results(workdir, modules)
    total = {"killed": 0, "survived": 0, "tested": 0}
    chosen_set = set(chosen)
    for module in modules:
        codes = [c for n, c in found[module].items() if n in chosen_set]
        killed = sum(c in KILLED for c in codes)
        timeout = sum(c in TIMEOUT for c in codes)
        survived = [n for n, c in found[module].items() if n in chosen_set and c in SURVIVED]
        no_tests = sum(c in NO_TESTS for c in codes)
        unchecked = sum(c is None for c in codes)
        tested = len(codes) - unchecked
        other = tested - killed - timeout - len(survived) - no_tests  # segfault, suspicious
        share = f"{(killed + timeout) / tested:.1%}" if tested else "-"
        print(
            f"{module}: {len(found[module])} mutants, {len(codes)} chosen, {tested} tested: "
            f"{killed} killed, {timeout} timeout, {len(survived)} survived, {no_tests} no tests, "
            f"{other} other, {unchecked} not checked; killed {share}"
        )
        total["killed"] += killed + timeout
        total["survived"] += tested - killed - timeout
        total["tested"] += tested
        for name in survived:
            print(f"  survived {name}\n{diff(workdir, name)}")
    if total["tested"]:
        print(
            f"all: {total['killed']} of {total['tested']} tested mutants killed "
            f"({total['killed'] / total['tested']:.1%}); {total['survived']} not killed"
        )


if __name__ == "__main__":
    main()
