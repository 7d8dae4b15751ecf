"""Command line: ``mlneurons <command> ...``, generated from the command specs.

Every method command's flags come from its config's fields (help, checks and choices
declared once, in :mod:`mlneurons.interfaces.commands`); ``merge``, ``report`` and
``app`` are the command line's own. Only the chosen command's module is imported, so
``mlneurons --help`` starts without torch.

User mistakes (a value out of range, an unknown language or model, a missing file)
are caught before any long computation: one line naming the value and the valid
choices, exit status 2, no traceback. Every other exception is a bug or a failure
of the environment: it keeps its traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlneurons.config import Config, choices, flag_of, unwrap
from mlneurons.errors import FastPathMismatch, UserError
from mlneurons.interfaces.commands import COMMANDS, command
from mlneurons.interfaces.spec import run_command

if TYPE_CHECKING:
    from mlneurons.interfaces.spec import Command


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n")


# ---- argparse types: each refuses a bad value in one line naming the valid ones ------


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an integer >= {minimum}; valid: {minimum}, {minimum + 1}, ..."
            )
        return value

    return parse


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    value = _at_least(1)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; valid: 1..65535")
    return value


def _rate(text: str) -> float:
    """An argparse type: a fraction in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate in (0, 1], e.g. 0.01")
    return value


def _layers(text: str) -> list[int]:
    """An argparse type: comma-separated layer numbers, e.g. ``3,6,9``."""
    layers = []
    for part in text.split(","):
        if not part.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} in {text!r} is not a layer number; valid: comma-separated "
                "integers >= 0, e.g. 3,6,9"
            )
        layers.append(int(part))
    return layers


def _device(text: str) -> str:
    """An argparse type: a torch device this machine has."""
    from mlneurons.errors import check_device

    try:
        return check_device(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _model(text: str) -> str:
    """An argparse type: a built-in model, a local directory or a hub name (checked cheaply)."""
    from mlneurons.models.loading import BUILTIN_MODELS, resolve_model_path

    if text not in BUILTIN_MODELS:  # resolving a built-in name would load it
        try:
            resolve_model_path(text)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _codes(text: str) -> list[str]:
    """A comma-separated list of codes (languages, relations)."""
    codes = [code.strip() for code in text.split(",") if code.strip()]
    if not codes:
        raise argparse.ArgumentTypeError(f"give at least one code, e.g. en,fr,zh; got {text!r}")
    return codes


def _floats(text: str) -> list[float]:
    """A comma-separated list of numbers."""
    try:
        return [float(x) for x in _codes(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"give numbers such as 0.5,1,2; got {text!r}") from None


def _optional_float(text: str) -> float | None:
    """A number, or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a number or 'none'; got {text!r}") from None


# ---- flags from a config's fields ------------------------------------------------------


def _parse_type(item: dataclasses.Field[Any], hint: Any) -> Callable[[str], Any] | None:
    """The argparse type of a config field, from its annotation and metadata."""
    inner, sequence = unwrap(hint)
    optional = type(None) in getattr(hint, "__args__", ())
    if item.name == "model":
        return _model
    if item.name == "device":
        return _device
    if sequence:
        return {int: _layers, float: _floats}.get(inner, _codes)
    if inner is int:
        minimum = item.metadata.get("minimum")
        return _at_least(minimum) if minimum is not None else int
    if inner is float:
        if item.metadata.get("rate"):
            return _rate
        return _optional_float if optional else float
    return None


def _help(item: dataclasses.Field[Any]) -> str:
    """The field's help, with its default unless the help says it."""
    from mlneurons.models import DEFAULT_MODEL

    text: str = item.metadata["help"]
    default = item.default
    if item.name == "model" and default is None and "default" not in text:
        return f"{text} (default {DEFAULT_MODEL})"
    if default in (None, "", ()) or isinstance(default, bool) or "(default" in text:
        return text
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else f"{default}"
    return f"{text} (default {shown})"


def add_options(parser: argparse.ArgumentParser, spec: Command[Any, Any]) -> None:
    """Add the flags of ``spec``'s config (and ``--out``) to ``parser``."""
    import typing

    hints = typing.get_type_hints(spec.config)
    for item in dataclasses.fields(spec.config):
        flag, hint = flag_of(item), hints[item.name]
        if isinstance(item.default, bool):
            parser.add_argument(flag, dest=item.name, action="store_true", help=_help(item))
            continue
        options: dict[str, Any] = {"dest": item.name, "help": _help(item)}
        if item.metadata.get("required"):
            options["required"] = True
        else:
            options["default"] = item.default
        allowed = choices(hint)
        if allowed is not None and not unwrap(hint)[1]:
            options["choices"] = allowed
        kind = _parse_type(item, hint)
        if kind is not None:
            options["type"] = kind
        parser.add_argument(flag, **options)
    if spec.default_out:
        parser.add_argument(
            "--out", default=spec.default_out, help=f"output directory (default {spec.default_out})"
        )
    else:
        parser.add_argument("--out", required=True, help="output directory")


def build_parser(only: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; ``only``: give flags to these commands alone (the
    others are listed with their help), so that parsing imports just the chosen one."""
    parser = _Parser(
        prog="mlneurons", description="Neuron-level study of multilingual language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in COMMANDS.items():
        p = sub.add_parser(name, help=text)
        if only is None or name in only:
            add_options(p, command(name))

    p = sub.add_parser("merge", help="add the shard files of data-parallel passes into one result")
    p.add_argument("directories", nargs="+", metavar="DIR", help="directories with manifest.json")
    p.add_argument("--out", default=None, help="output directory (default: the first DIR)")

    p = sub.add_parser(
        "report", help="every method on the built-in defaults: one directory and index.html"
    )
    config = next(f for f in dataclasses.fields(Config) if f.name == "model")
    p.add_argument("--model", type=_model, default=None, help=_help(config))
    p.add_argument("--device", type=_device, default=None, help="torch device (default: cuda if available, else cpu)")  # fmt: skip
    p.add_argument(
        "--full", action="store_true", help="the paper-scale budgets of docs/ (about 1.5 hours)"
    )
    p.add_argument("--out", default="runs/report", help="run directory (default runs/report)")

    p = sub.add_parser("app", help="open the Streamlit app on a run directory")
    p.add_argument(
        "--run",
        dest="run_dir",
        metavar="DIR",
        default="runs/report",
        help="directory written by mlneurons (default runs/report)",
    )
    p.add_argument(
        "--model",
        type=_model,
        default=None,
        help="model of the live views (default: the one the run was computed on)",
    )
    p.add_argument("--port", type=_port, default=8501, help="local port (default 8501)")
    return parser


# ---- running ---------------------------------------------------------------------------


def _runs_on_this_rank(spec: Command[Any, Any], cfg: Config) -> bool:
    """False on ranks other than 0 for a command that does not split its work (they would
    all compute, and write, the same files)."""
    from mlneurons.world import World

    world = World.from_env()
    if world.rank == 0 or (spec.splits(cfg) and (world.connected or spec.offline_shards)):
        return True
    print(f"rank {world.rank}: mlneurons {spec.name} runs on rank 0 only", file=sys.stderr)
    return False


def _flagged(message: str, config: type[Config] | None) -> str:
    """A library error that starts with a field's name, with the command-line flag instead."""
    for item in dataclasses.fields(config) if config is not None else ():
        for sep in ("=", " "):
            if message.startswith(item.name + sep):
                return flag_of(item) + " " + message[len(item.name) + 1 :]
    return message


def cmd_merge(args: argparse.Namespace) -> Path:
    """Add the shard files of a data-parallel pass (e.g. Slurm job arrays) into one result."""
    from mlneurons.interfaces.commands.inputs import user_input
    from mlneurons.stats.activation import STATS_FILE, ActivationStats
    from mlneurons.stats.distributed import merge_shards

    with user_input():
        total = merge_shards(*args.directories)
    out = Path(args.out or args.directories[0])
    if total.fires:  # a LAPE pass
        stats = ActivationStats.from_collected(total)
        path = stats.save(out / STATS_FILE)
        print(f"wrote {path}: select the neurons with mlneurons lape --stats {path} --out DIR")
    else:
        path = total.save(out / "collected.safetensors")
        print(f"wrote {path}")
    return out


def cmd_report(args: argparse.Namespace) -> Path:
    """Run every method on the built-in defaults into one directory with ``index.html``."""
    from mlneurons.interfaces.report import run_report

    return run_report(args.out, full=args.full, model=args.model, device=args.device)


def cmd_app(args: argparse.Namespace) -> int:
    """Serve the Streamlit app on a run directory (until stopped)."""
    from mlneurons.interfaces.app_server import serve

    return serve(Path(args.run_dir), model=args.model, port=args.port)


OWN = {"merge": cmd_merge, "report": cmd_report, "app": cmd_app}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user mistake)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser(only=[chosen] if chosen in COMMANDS else [])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2), already printed
        return int(exc.code or 0)
    spec = command(args.command) if args.command in COMMANDS else None
    config = spec.config if spec is not None else None
    resumes = args.command == "report"
    try:
        if spec is None:
            code = OWN[args.command](args)
            return code if isinstance(code, int) else 0
        cfg = spec.config.from_args(args)
        resumes = spec.resumes is not None and spec.resumes(cfg)
        if _runs_on_this_rank(spec, cfg):
            run_command(spec, cfg, Path(args.out))
    except UserError as exc:
        message = _flagged(" ".join(str(exc).split()), config)
        print(f"mlneurons {args.command}: error: {message}", file=sys.stderr)
        return 2
    except FastPathMismatch as exc:  # not the user's mistake: the installed libraries'
        print(f"mlneurons {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # lape keeps a checkpoint; the report skips its finished steps
        advice = "; run the same command again to resume" if resumes else ""
        print(f"mlneurons {args.command}: interrupted{advice}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
