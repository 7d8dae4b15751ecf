"""One spec per command: the flags, cfg.json, the reproducing command line, the report's
plan and the app's lines all come from each command's one declaration."""

import dataclasses
import json
import sys
import typing

import corpus_size
import pytest

import mlneurons
from mlneurons.config import Config, choices, unwrap
from mlneurons.errors import UserError
from mlneurons.interfaces import commands, report
from mlneurons.interfaces.cli import build_parser
from mlneurons.interfaces.cli import main as cli_main


def _changed(config: type[Config]) -> dict[str, typing.Any]:
    """A value other than the default for every field the command line can set."""
    hints = typing.get_type_hints(config)
    values: dict[str, typing.Any] = {}
    for item in dataclasses.fields(config):
        hint, default = hints[item.name], item.default
        inner, sequence = unwrap(hint)
        allowed = choices(hint)
        if item.name in ("model", "device"):
            continue  # checked against this machine: see test_user_errors
        if allowed is not None:
            other = [c for c in allowed if c != default and (c,) != default]
            values[item.name] = (other[0],) if sequence else other[0]
        elif isinstance(default, bool):
            values[item.name] = True
        elif sequence:
            values[item.name] = {int: (1, 2), float: (0.5, 0.25)}.get(inner, ("en", "fr"))
        elif inner is int:
            values[item.name] = (default or item.metadata.get("minimum") or 0) + 1
        elif inner is float:
            values[item.name] = 0.5 if default != 0.5 else 0.25
        else:
            values[item.name] = "x" if item.name != "facts" else "mlama:x"
    return values


def _build(config: type[Config], values: dict[str, typing.Any]) -> Config:
    """The config of ``values``, dropping the values a cross-field check refuses."""
    values = dict(values)
    while True:
        try:
            return config(**values)
        except UserError as exc:
            named = [
                name
                for name in values
                if str(exc).startswith(name) or f"--{name.replace('_', '-')}" in str(exc)
            ]
            assert named, exc
            del values[named[0]]


@pytest.mark.parametrize("name", list(commands.COMMANDS))
def test_every_option_survives_the_command_line_and_cfg_json(name, tmp_path):
    spec = commands.command(name)
    cfg = _build(spec.config, _changed(spec.config))
    assert cfg != spec.config()  # every changed value is written by to_argv...
    argv = cfg.to_argv()
    assert argv[0] == name
    args = build_parser().parse_args([*argv, "--out", str(tmp_path)])
    assert spec.config.from_args(args) == cfg  # ...and parsed back by the generated flags
    cfg.save(tmp_path)
    assert Config.load(tmp_path) == cfg
    assert spec.reproduce(tmp_path) == " ".join(
        ["mlneurons", *map(_quoted, argv), "--out", str(tmp_path)]
    )


def _quoted(word: str) -> str:
    import shlex

    return shlex.quote(word)


def test_to_argv_leaves_defaults_out_and_the_model_last():
    from mlneurons.interfaces.commands.steer import SteerConfig

    cfg = SteerConfig(neurons="runs/x", source="es", target="zh", mode="add", scale=2.0, model="m")
    assert cfg.to_argv() == [
        "steer", "--neurons", "runs/x", "--source", "es", "--target", "zh", "--mode", "add",
        "--scale", "2", "--model", "m",
    ]  # fmt: skip
    from mlneurons.interfaces.commands.steer_sweep import SteerSweepConfig

    sweep = SteerSweepConfig(
        neurons="n", source="es", target="zh", source_value=None, top_rates=(0.01,)
    )
    assert sweep.to_argv()[-4:] == ["--top-rates", "0.01", "--source-value", "none"]


def test_choices_are_the_methods_literals():
    from mlneurons.interfaces.commands.compare_methods import CompareMethodsConfig
    from mlneurons.interfaces.commands.fallback import FallbackConfig
    from mlneurons.interfaces.commands.steer import SteerConfig
    from mlneurons.methods import baselines, steering

    hints = typing.get_type_hints
    assert choices(hints(SteerConfig)["mode"]) == steering.STEERING_MODES
    assert choices(hints(FallbackConfig)["order"]) == steering.FALLBACK_ORDERS
    assert choices(hints(CompareMethodsConfig)["methods"]) == baselines.METHODS


def test_a_new_command_is_one_module_and_one_registry_line(monkeypatch, tmp_path, capsys):
    """tests/corpus_size.py is a whole command; registering it gives its flags, its run,
    its cfg.json and reproducing command line, its report step and its producer."""
    monkeypatch.setitem(commands.COMMANDS, "corpus-size", "words of the built-in text")
    monkeypatch.setitem(sys.modules, "mlneurons.interfaces.commands.corpus_size", corpus_size)
    out = tmp_path / "run"

    assert cli_main(["corpus-size", "--split", "dev", "--out", str(out)]) == 2
    assert (
        "invalid choice: 'dev' (choose from 'train', 'heldout', 'all')" in capsys.readouterr().err
    )
    assert (
        cli_main(["corpus-size", "--languages", "en,de", "--split", "all", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out

    from mlneurons.data.corpus import MultilingualCorpus

    english = MultilingualCorpus.builtin(["en"], split="all").sources["en"]()
    words = sum(len(paragraph.split()) for paragraph in english)
    assert f"en {words} words" in printed and f"wrote {out}/: corpus_size.json" in printed
    saved = json.loads((out / "corpus_size.json").read_text())
    assert saved["words"]["en"] == words and saved["config"]["method"] == "corpus-size"
    cfg = Config.load(out, method="corpus-size")
    assert cfg.to_argv() == ["corpus-size", "--languages", "en,de", "--split", "all"]
    assert mlneurons.run(cfg).words == saved["words"]  # the library call behind the command

    spec = commands.command("corpus-size")
    assert spec in report.steps()
    planned = report.step_config(spec, "default", out, model=None, device=None)
    assert planned.to_argv() == ["corpus-size", "--languages", "en,de"]
    assert commands.producer_of("corpus_size.json") is spec
    assert spec.producer(out) == f"mlneurons corpus-size --out {out}"
    assert "en" in report.section(spec, out) and "words" in report.section(spec, out)


def test_producers_name_the_required_options(tmp_path):
    steer = commands.producer_of("steering.json")
    assert steer is not None and steer.name == "steer"
    assert steer.producer(tmp_path) == (
        f"mlneurons steer --neurons {tmp_path} --source SOURCE --target TARGET --out {tmp_path}"
    )
    assert commands.producer_of("stats.safetensors").name == "lape"
    assert commands.producer_of("no-such-file.json") is None


def test_config_load_from_the_package_and_unknown_commands():
    from mlneurons.interfaces.commands.probe import ProbeConfig

    assert mlneurons.Config is Config
    with pytest.raises(
        UserError, match="method='probes' is not valid; choose from ablate, compare-methods, "
    ):
        Config.from_dict({"method": "probes"})
    assert Config.from_dict(ProbeConfig(batch_size=4).to_dict()) == ProbeConfig(batch_size=4)


def test_the_readme_and_commands_md_list_every_registered_command():
    """The two hand-written command tables name exactly the registered commands (plus merge,
    report and app), so a new command cannot be left out of either."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    expected = [*commands.COMMANDS, "merge", "report", "app"]
    readme = (root / "README.md").read_text()
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", readme, flags=re.M)
    assert listed == expected, "README.md's commands table"
    reference = (root / "docs" / "commands.md").read_text()
    listed = re.findall(r"^\| `mlneurons ([a-z0-9-]+)[ `]", reference, flags=re.M)
    assert listed == expected, "docs/commands.md's table"
