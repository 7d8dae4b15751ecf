"""The examples and the CLI, run end to end on the tiny planted model."""

import importlib.util
import json
from pathlib import Path

import pytest
from tiny import LANGS, PLANTED, language_text

from mlneurons import ActivationStats, LanguageNeurons
from mlneurons.cli import main as cli_main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def text_dir(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for lang in LANGS:
        (folder / f"{lang}.txt").write_text(language_text(lang, 2500) + "\n")
    return folder


def test_lape_example_recovers_planted_neurons(planted_dir, text_dir, tmp_path):
    example = _load_example("lape_language_neurons")
    neurons = example.main(
        [
            "--model",
            str(planted_dir),
            "--corpus",
            str(text_dir),
            "--languages",
            ",".join(LANGS),
            "--tokens-per-language",
            "2000",
            "--top-rate",
            "0.125",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    for lang in LANGS:
        assert sorted(map(tuple, neurons[lang].tolist())) == sorted(PLANTED[lang])
    assert (tmp_path / "out" / "neurons_per_layer.png").stat().st_size > 1000


def test_cli_lape_writes_everything(planted_dir, text_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli_main(
        [
            "lape",
            "--model",
            str(planted_dir),
            "--corpus",
            str(text_dir),
            "--languages",
            "en,fr,zh",
            "--tokens-per-language",
            "1000",
            "--seq-len",
            "64",
            "--top-rate",
            "0.1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert f"wrote {out}" in capsys.readouterr().out
    for name in (
        "stats.safetensors",
        "neurons.json",
        "summary.json",
        "neurons_per_layer.png",
        "overlap.png",
    ):
        assert (out / name).exists(), name
    assert not (out / "stats.checkpoint.safetensors").exists()
    neurons_json = json.loads((out / "neurons.json").read_text())
    assert sorted(map(tuple, neurons_json["fr"])) == sorted(PLANTED["fr"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["languages"] == ["en", "fr", "zh"]
    assert summary["tokens_per_language"] == {"en": 945, "fr": 945, "zh": 945}  # 15 rows of 63
    assert summary["neurons_per_language"] == {"en": 2, "fr": 2, "zh": 2}
    assert summary["model"]["hash"] == ActivationStats.load(out).model["hash"]
    assert LanguageNeurons.load(out).counts() == summary["neurons_per_language"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["lape", "--languages", "en,xx"], "unknown language code 'xx'"),
        (["lape", "--model", "/no/such/dir"], "unknown model"),
        (["lape", "--languages", "en"], "at least two"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(argv, message, tmp_path, capsys):
    assert cli_main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err.lower() or message in err
    assert "Traceback" not in err
