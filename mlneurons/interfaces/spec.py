"""One spec per command: its config, the function that runs it, its figures and its words.

A :class:`Command` is declared once, in its module of :mod:`mlneurons.interfaces.commands`;
the command line's flags, the report's plan and sections, the command line recorded in
``report.json`` and the app's "Reproduce" lines are all generated from it. :func:`execute`
is the one library call behind a command: run it, save its result and figures.
"""

from __future__ import annotations

import dataclasses
import importlib
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from mlneurons.config import Config, flag_of
from mlneurons.errors import UserError
from mlneurons.models.bridge import TransformerBridge
from mlneurons.results import Result
from mlneurons.world import World

if TYPE_CHECKING:
    from matplotlib.figure import Figure

C = TypeVar("C", bound=Config)
R = TypeVar("R", bound=Result)


class OtherRank(Exception):
    """Raised on ranks other than 0 once their share of an item-parallel command is done:
    rank 0 writes the results, the others end (exit status 0)."""


@dataclass
class Context:
    """What a command runs in: its output directory, the launch and the loaded models.

    Attributes:
        out: the directory results go to (checkpoints, shards and the secondary results a
            command writes on its way, e.g. the probing result of ``fact-neurons``); None
            in a script that keeps the results in memory.
        world: this process's place in a torchrun launch.
        models: loaded models by (name, device, dtype, replica), shared by the steps of a
            report so that the model loads once.
    """

    out: Path | None = None
    world: World = field(default_factory=World.from_env)
    models: dict[tuple[Any, ...], TransformerBridge] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)
    """The files saved into :attr:`out` so far."""

    def model(self, cfg: Config, name: str | None = None) -> TransformerBridge:
        """The model of ``cfg`` (``name`` instead of ``cfg.model`` when given), loaded once."""
        import torch

        from mlneurons.models import DEFAULT_MODEL
        from mlneurons.models.loading import load_model, replica_placement

        name = name or cfg.model or DEFAULT_MODEL
        device = cfg.device
        if device is None and self.world.size > 1 and torch.cuda.is_available():
            device = f"cuda:{self.world.local_rank}"  # one GPU per rank
        key = (name, device, cfg.dtype, cfg.gpus_per_replica)
        if key not in self.models:
            replica = cfg.gpus_per_replica
            placement = replica_placement(self.world.local_rank, replica) if replica else None
            print(f"loading model {name} ...", file=sys.stderr)
            self.models[key] = load_model(
                name, device=device, dtype=getattr(torch, cfg.dtype), placement=placement
            )
        return self.models[key]

    def only_rank_0(self) -> None:
        """End the command on ranks other than 0 once their share of the work is done."""
        if self.world.rank != 0:
            raise OtherRank

    @property
    def parallel(self) -> World | None:
        """The world when the ranks can reach each other (they split the work), else None."""
        return self.world if self.world.connected else None

    def keep(self, result: Result, cfg: Config | None = None, figures: Figures = None) -> None:
        """Save a secondary result (and its figures) into :attr:`out`, when there is one
        (on rank 0 of a torchrun launch)."""
        if self.out is not None and self.world.rank == 0:
            self.written += save(result, self.out, cfg, figures or {})


Figures = Mapping[str, Callable[[], "Figure"]] | None
"""File name -> a function that draws the figure (called only when it is saved)."""


@dataclass(frozen=True)
class Table:
    """A table of a command's findings, shown by the report and the app."""

    header: list[str]
    rows: list[list[Any]]
    caption: str = ""
    details: bool = False
    """Folded away by default (long per-layer listings)."""


@dataclass(frozen=True)
class Step:
    """The command as a step of ``mlneurons report``.

    Attributes:
        budgets: per budget (``default``, ``full``), the config's values beyond the defaults.
        reuse: the config field through which it reads an earlier step's output in the
            run directory (``neurons`` or ``probe``), if any.
        needs: steps whose outputs it reads; it runs again when one of them did.
    """

    budgets: Mapping[str, Mapping[str, Any]]
    reuse: str | None = None
    needs: tuple[str, ...] = ()


def _no_figures(result: Any, cfg: Any, out: Path) -> dict[str, Callable[[], Figure]]:
    return {}


def _no_tables(result: Any) -> list[Table]:
    return []


@dataclass(frozen=True)
class Command(Generic[C, R]):
    """One command, declared once.

    Attributes:
        name: the subcommand (``mlneurons <name>``).
        title: the heading of its report section and app page part.
        config: its config class (fields, help texts, checks).
        result: ``"module:Class"`` of the result it returns (files of constant names),
            imported only when needed so that ``--help`` stays light.
        run: ``run(cfg, context) -> result``: the library function behind the command.
        describe: its findings in words, one string each, for the CLI, report and app.
        figures: ``figures(result, cfg, out)``: file name -> drawing function.
        tables: its findings as tables (the report and the app show them).
        step: how ``mlneurons report`` runs it (None: not a report step).
        parallel: it splits its work across the ranks of a torchrun launch (for every
            config, or for those a function of the config picks).
        offline_shards: its ranks also work without a rendezvous, leaving shards that
            ``mlneurons merge`` adds (Slurm job arrays).
        default_out: the output directory when ``--out`` is not given (None: required).
        resumes: whether running the same config again resumes an interrupted run.
    """

    name: str
    title: str
    config: type[C]
    result: str
    run: Callable[[C, Context], R]
    describe: Callable[[R], list[str]]
    figures: Callable[[R, C, Path], Mapping[str, Callable[[], Figure]]] = _no_figures
    tables: Callable[[R], list[Table]] = _no_tables
    step: Step | None = None
    parallel: Callable[[C], bool] | bool = False
    offline_shards: bool = False
    default_out: str | None = None
    resumes: Callable[[C], bool] | None = None

    def result_class(self) -> type[R]:
        """The class of the command's result."""
        module, name = self.result.split(":")
        kind: type[R] = getattr(importlib.import_module(module), name)
        return kind

    def load(self, directory: str | Path) -> R:
        """The result this command saved in ``directory``."""
        return self.result_class().load(directory)

    def reproduce(self, directory: str | Path) -> str | None:
        """The command line that reproduces this command's result in ``directory``, from
        the config recorded in its ``cfg.json`` (None when it records none)."""
        try:
            cfg = self.config.load(directory)
        except (UserError, FileNotFoundError):
            return None
        return shlex.join(["mlneurons", *cfg.to_argv(), "--out", str(directory)])

    def producer(self, directory: str | Path) -> str:
        """A command line that writes this command's result into ``directory``: its
        required options as placeholders, the earlier step's output read from there."""
        argv = ["mlneurons", self.name]
        reuse = self.step.reuse if self.step else None
        for item in dataclasses.fields(self.config):
            if item.metadata.get("required"):
                value = str(directory) if item.name == reuse else item.name.upper()
                argv += [flag_of(item), value]
        return shlex.join([*argv, "--out", str(directory)])

    def splits(self, cfg: C) -> bool:
        """Whether ``cfg``'s run splits its work across the ranks of a launch."""
        return self.parallel(cfg) if callable(self.parallel) else self.parallel

    def saved(self, directory: str | Path) -> bool:
        """Whether ``directory`` holds this command's result."""
        return all((Path(directory) / name).exists() for name in self.result_class().files())


def plot(file: str, name: str) -> Callable[[Any, Any, Path], dict[str, Callable[[], Figure]]]:
    """The figures of a command that draws one plot of its result: ``plots.<name>(result)``
    into ``file``."""

    def figures(result: Any, cfg: Any, out: Path) -> dict[str, Callable[[], Figure]]:
        from mlneurons.interfaces import plots

        draw = getattr(plots, name)
        return {file: lambda: draw(result)}

    return figures


def save(result: Result, out: Path, cfg: Config | None, figures: Mapping[str, Any]) -> list[str]:
    """Save ``result`` (with ``cfg``) and draw ``figures`` into ``out``; the file names."""
    from mlneurons.interfaces.plots import save_figure

    result.save(out, config=cfg)
    for name, draw in figures.items():
        save_figure(draw(), out / name)
    return [*result.files(), *figures]


def execute(spec: Command[Any, Any], cfg: Config, context: Context) -> Result | None:
    """Run a command and save its result and figures into ``context.out`` (when set).

    Returns the result; None on ranks other than 0 of a torchrun launch (rank 0 writes).
    """
    if not isinstance(cfg, spec.config):
        raise UserError(f"{spec.name} takes a {spec.config.__name__}, not a {type(cfg).__name__}")
    try:
        result: Result = spec.run(cfg, context)
    except OtherRank:
        return None
    if context.out is not None:
        context.out.mkdir(parents=True, exist_ok=True)
        context.written += save(result, context.out, cfg, spec.figures(result, cfg, context.out))
    return result


def run_command(
    spec: Command[Any, Any],
    cfg: Config,
    out: Path,
    models: dict[tuple[Any, ...], TransformerBridge] | None = None,
) -> Result | None:
    """Run ``spec`` with ``cfg`` into ``out`` as the command line does: print its findings
    (``describe``) and the files it wrote. ``models``: loaded models shared by a report's steps.
    """
    context = Context(out=out, models=models if models is not None else {})
    result = execute(spec, cfg, context)
    if result is not None:
        for line in spec.describe(result):
            print(line)
        print(f"wrote {out}/: {' '.join(dict.fromkeys(context.written))}")
    return result


__all__ = [
    "Command",
    "Context",
    "OtherRank",
    "Step",
    "Table",
    "execute",
    "plot",
    "run_command",
    "save",
]
