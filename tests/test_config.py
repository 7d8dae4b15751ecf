"""Typed configs: JSON round trips, one-line errors, the CLI's defaults and cfg.json."""

import json

import pytest

import mlneurons
from mlneurons.config import Config
from mlneurons.errors import UserError
from mlneurons.interfaces.cli import build_parser
from mlneurons.interfaces.commands import every
from mlneurons.interfaces.commands.ablate import AblateConfig
from mlneurons.interfaces.commands.lape import LapeConfig
from mlneurons.interfaces.commands.lrp2 import Lrp2Config
from mlneurons.interfaces.commands.probe import ProbeConfig
from mlneurons.interfaces.commands.steer import SteerConfig

CONFIGS = [spec.config for spec in every()]
REQUIRED = {
    "lape": [],
    "ablate": ["--neurons", "n", "--out", "o"],
    "compare-methods": ["--neurons", "n", "--out", "o"],
    "steer": ["--neurons", "n", "--source", "es", "--target", "zh", "--out", "o"],
    "steer-sweep": ["--neurons", "n", "--source", "es", "--target", "zh", "--out", "o"],
    "steer-compare": ["--neurons", "n", "--source", "es", "--target", "zh", "--out", "o"],
    "fallback": ["--neurons", "n", "--language", "zh", "--out", "o"],
    "ses": ["--out", "o"],
    "logit-lens": ["--out", "o"],
    "probe": ["--out", "o"],
    "fact-neurons": ["--out", "o"],
    "trace": ["--out", "o"],
    "lrp2": ["--out", "o"],
    "script-controls": ["--out", "o"],
    "heads": ["--out", "o"],
    "knowledge-neurons": ["--out", "o"],
    "failure-modes": ["--out", "o"],
    "factors": ["--out", "o"],
    "consistency": ["--out", "o"],
}


@pytest.mark.parametrize("kind", CONFIGS, ids=lambda kind: kind.method)
def test_round_trip_through_cfg_json(kind, tmp_path):
    config = kind()
    assert Config.from_dict(config.to_dict()) == config
    config.save(tmp_path)
    data = json.loads((tmp_path / "cfg.json").read_text())
    assert list(data) == [kind.method]
    assert Config.load(tmp_path) == config and type(Config.load(tmp_path)) is kind
    assert kind.load(tmp_path) == config


def test_one_directory_holds_the_config_of_each_command(tmp_path):
    lape, probe = LapeConfig(top_rate=0.05), ProbeConfig(batch_size=4)
    lape.save(tmp_path)
    probe.save(tmp_path)
    assert LapeConfig.load(tmp_path) == lape and ProbeConfig.load(tmp_path) == probe
    assert Config.load(tmp_path, method="probe") == probe
    assert mlneurons.Config.load(tmp_path, method="probe") == probe  # as the README shows
    with pytest.raises(UserError, match="holds the configs of lape, probe; pass method="):
        Config.load(tmp_path)
    with pytest.raises(UserError, match="no 'steer' config"):
        SteerConfig.load(tmp_path)


@pytest.mark.parametrize("kind", CONFIGS, ids=lambda kind: kind.method)
def test_command_line_defaults_are_the_config_defaults(kind):
    args = build_parser().parse_args([kind.method, *REQUIRED[kind.method]])
    built = kind.from_args(args)
    given = {"neurons": "n", "source": "es", "target": "zh", "language": "zh"}
    expected = kind(**{k: v for k, v in given.items() if f"--{k}" in REQUIRED[kind.method]})
    assert built == expected


def test_lists_become_tuples_and_survive_json():
    config = Lrp2Config(languages=["en", "fr"], layers=[3, 6])
    assert config.languages == ("en", "fr") and config.layers == (3, 6)
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    "make, parts",
    [
        (lambda: LapeConfig(top_rate=0), ["top_rate=0", "(0, 1]"]),
        (lambda: LapeConfig(batch_size=0), ["batch_size=0", ">= 1"]),
        (lambda: LapeConfig(seq_len=1), ["seq_len=1", ">= 2"]),
        (lambda: LapeConfig(dtype="float8"), ["dtype='float8'", "float32, bfloat16, float16"]),
        (lambda: AblateConfig(tokens_per_language=True), ["tokens_per_language=True"]),
        (lambda: ProbeConfig(candidates="all"), ["candidates='all'", "files, gold"]),
        (lambda: ProbeConfig(probing="mlm"), ["probing='mlm'", "typed, zhao"]),
        (lambda: ProbeConfig(facts="mlama"), ["facts='mlama'", "'mlama:DIR'"]),
        (lambda: Config.from_dict({"method": "lapе"}), ["method='lapе'", "ablate, "]),
        (lambda: Config.from_dict({"method": "steer", "scal": 2}), ["'scal'", "scale"]),
        (lambda: SteerConfig.from_dict({"method": "lape"}), ["'lape' config, not a 'steer'"]),
    ],
)
def test_bad_values_are_one_line_errors(make, parts):
    with pytest.raises(UserError) as caught:
        make()
    message = str(caught.value)
    assert "\n" not in message
    for part in parts:
        assert part in message


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        LapeConfig().top_rate = 0.5  # type: ignore[misc]
    assert LapeConfig().replace(top_rate=0.5).top_rate == 0.5
    with pytest.raises(UserError, match="top_rate=2"):
        LapeConfig().replace(top_rate=2)


@pytest.mark.parametrize(
    "command, fields, message",
    [
        ("steer", {"mode": "mult"}, "mode='mult' is not valid; choose from replace, add"),
        ("steer-sweep", {"top_rates": (0.01, 2.0)}, "top_rates=2.0 is not a rate"),
        ("fallback", {"shares": (0.5, 1.5)}, "shares=1.5 is not a share in [0, 1]"),
        ("compare-methods", {"methods": ("pvx",)}, "methods='pvx' is not valid"),
        ("compare-methods", {"methods": ("pv",)}, "pv_checkpoints LANG=PATH,... and pv in"),
        ("compare-methods", {"lap_threshold_kind": "rank"}, "lap_threshold_kind='rank' is not"),
        ("ablate", {"control_draws": -1}, "control_draws=-1 is not an integer >= 0"),
        ("steer", {"scale": float("inf")}, "scale=inf is not a finite number"),
        ("steer-sweep", {"source_value": float("nan")}, "source_value=nan is not a finite"),
        ("steer-sweep", {"alphas": (1.0, float("nan"))}, "alphas=nan is not a finite"),
        ("steer", {"mode": "scale"}, "scale=1.0 with mode 'scale' changes nothing"),
    ],
)
def test_configs_refuse_bad_values(command, fields, message):
    from mlneurons.interfaces.commands import command as spec

    with pytest.raises(UserError, match=message.replace("[", "\\[").replace("]", "\\]")):
        spec(command).config(**fields)
