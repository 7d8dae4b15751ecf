"""The commands of mlneurons: one module each, declaring its :class:`~mlneurons.interfaces.spec.Command` once.

A command's module holds its config, the library function that runs it, its figures,
tables and ``describe``; this registry holds its name and one-line help, in the order of
``mlneurons --help`` and of the report. Adding a command is a module and a line here.
Modules import lazily, so ``mlneurons --help`` loads none of them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlneurons.config import Config
    from mlneurons.interfaces.spec import Command
    from mlneurons.results import Result

COMMANDS: dict[str, str] = {
    "lape": "find language-specific neurons (LAPE, Tang et al. 2024)",
    "ablate": "perplexity matrix with language neurons deactivated",
    "compare-methods": "LAPE against Tang et al.'s baselines LAP, LAVE and RS",
    "steer": "steer the output language by activating language neurons",
    "steer-sweep": "steering modes x strengths x LAPE budgets: rates and fluency",
    "steer-compare": "residual directions vs language neurons: forcing, relevance, fluency",
    "fallback": "deactivate growing shares of a language's neurons: which language answers?",
    "probe": "factual probing across languages: P@1 and Jaccard",
    "fact-neurons": "PROBELESS fact neurons and their language overlap",
    "trace": "knowledge tracing: fact presence in text x correctness",
    "consistency": "cross-lingual consistency: RankC, answer consistency (AC3), transfer",
    "knowledge-neurons": "language-independent knowledge neurons and their deactivation",
    "failure-modes": "facts lost outside English: recall vs translation failures (logit lens)",
    "factors": "P@1 by object token count and by training-text size (Zhao et al.)",
    "lrp2": "LRP2 projection: does moving a language into English help?",
    "ses": "sentence-embedding similarity of parallel sentences per layer",
    "logit-lens": "latent language: P(target) vs P(English) per layer (Wendler et al.)",
    "script-controls": "LAPE on original, romanised and word-shuffled text (Verma et al.)",
    "heads": "attention heads per language: importance, specific heads, deactivation (LAHIS)",
}
"""Command name -> its one-line help; the module is ``commands/<name with _>.py``."""


def command(name: str) -> Command[Any, Any]:
    """The spec of command ``name``."""
    from mlneurons.config import one_of

    one_of("command", name, tuple(COMMANDS))
    module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    spec: Command[Any, Any] = module.SPEC
    return spec


def every() -> list[Command[Any, Any]]:
    """Every command's spec, in registry order (imports them all)."""
    return [command(name) for name in COMMANDS]


def producer_of(file_name: str) -> Command[Any, Any] | None:
    """The command whose result is the file ``file_name`` (e.g. ``probe.json``), if any."""
    return next((spec for spec in every() if file_name in spec.result_class().files()), None)


def run(cfg: Config, *, out: str | Path | None = None) -> Result | None:
    """Run the command of ``cfg`` as ``mlneurons <command>`` does: one library call.

    Args:
        cfg: a command's config, e.g. ``SteerConfig(neurons="runs/lape", source="es",
            target="zh")`` or ``Config.load("runs/report", method="steer")``.
        out: the directory to save the result, its ``cfg.json`` and its figures into
            (None: keep the result in memory only).

    Returns:
        The command's result; None on ranks other than 0 of a torchrun launch.
    """
    from mlneurons.interfaces.spec import Context, execute

    context = Context(out=Path(out) if out is not None else None)
    return execute(command(cfg.method), cfg, context)


__all__ = ["COMMANDS", "command", "every", "producer_of", "run"]
