"""The examples and the CLI, run end to end on the tiny planted model."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
from tiny import LANGS, PLANTED, language_text

from mlneurons import ActivationStats, LanguageNeurons
from mlneurons import fingerprint as mlneurons_fingerprint
from mlneurons.interfaces.cli import main as cli_main

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
    from mlneurons.config import Config
    from mlneurons.interfaces.commands.lape import LapeConfig

    config = Config.load(out)  # cfg.json reproduces the run
    assert config == LapeConfig(
        model=str(planted_dir),
        corpus=str(text_dir),
        languages=("en", "fr", "zh"),
        tokens_per_language=1000,
        seq_len=64,
        top_rate=0.1,
    )
    assert summary["config"] == config.to_dict()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["lape", "--languages", "en,xx"], "unknown language 'xx'"),
        (["lape", "--model", "/no/such/dir"], "unknown model"),
        (["lape", "--languages", "en"], "at least two"),
    ],
)
def test_cli_user_errors_exit_2_without_traceback(argv, message, tmp_path, capsys):
    assert cli_main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err.lower() or message in err
    assert "Traceback" not in err


def test_deactivate_and_steer_example(planted_dir, planted_model, tmp_path):
    import torch

    import mlneurons
    from mlneurons import MultilingualCorpus

    example = _load_example("deactivate_and_steer")
    corpus = MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 300)]) for lang in ("fr", "zh")}, seq_len=50
    )
    stats = mlneurons.collect_activation_stats(planted_model, corpus, progress=False)
    stats.save(tmp_path)
    LanguageNeurons(
        {lang: torch.tensor(PLANTED[lang]) for lang in ("fr", "zh")}, 2, 32, model=stats.model
    ).save(tmp_path)
    matrix, steering = example.ablation_and_steering(
        tmp_path,
        model_name=str(planted_dir),
        source="fr",
        target="zh",
        corpus=corpus,
        questions=[language_text("fr", 5, seed=s) for s in range(3)],
        template="{question}",
    )
    assert matrix.diagonal_dominance() == {"fr": True, "zh": True}
    # the planted model answers in the current language; activating zh switches it to zh words
    words = [(s["before"].split(), s["after"].split()) for s in steering.samples]
    assert len(words) == 3 and all(before and after for before, after in words)
    assert all(w.startswith("fr") for before, _ in words for w in before)
    assert all(w.startswith("zh") for _, after in words for w in after)


def _planted_run(planted_model, directory):
    """Statistics of the planted model and its planted neurons saved in ``directory`` (as
    ``mlneurons lape`` writes them); returns the corpus of the statistics."""
    import torch

    import mlneurons
    from mlneurons import MultilingualCorpus

    corpus = MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 600)]) for lang in LANGS}, seq_len=50
    )
    stats = mlneurons.collect_activation_stats(planted_model, corpus, progress=False)
    stats.save(directory)
    planted = {lang: torch.tensor(PLANTED[lang]) for lang in LANGS}
    LanguageNeurons(planted, 2, 32, model=stats.model).save(directory)
    return corpus


def test_compare_baselines_example(planted_dir, planted_model, tmp_path):
    example = _load_example("compare_baselines")
    corpus = _planted_run(planted_model, tmp_path)
    comparison, matrix = example.baselines_and_controls(
        tmp_path, model_name=str(planted_dir), corpus=corpus, draws=2, bins=4
    )
    scores = comparison.specificity()
    # the planted neurons (as LAPE) and LAP find exactly them (capped LAP under the
    # quantile reading too: the plants fire on every token); random neurons do nothing
    assert scores["lape"]["score"] > 0.95 and scores["lap"]["score"] > 0.95
    assert scores["lap-capped"]["score"] > 0.95
    assert comparison.counts["lap-capped"] == comparison.counts["lape"]
    assert scores["rs"]["own"] < 0.01
    matched = matrix.relative_change("matched_control").diagonal()
    assert (matrix.relative_change().diagonal() > 10 * matched.abs()).all()
    tests = matrix.own_changes()  # 12 held-out rows per language
    assert all(tests[lang].versus_matched.significant() for lang in matrix.languages)
    assert comparison.specificity_intervals()["lape"].score.lo > 0.9


def test_steering_modes_example(planted_dir, planted_model, tmp_path):
    example = _load_example("steering_modes")
    _planted_run(planted_model, tmp_path)
    questions = {lang: [language_text(lang, 5, seed=s) for s in range(3)] for lang in ("fr", "zh")}
    sweep, curve = example.modes_and_fallback(
        tmp_path,
        model_name=str(planted_dir),
        source="fr",
        target="zh",
        questions=questions,
        top_rates=(8 / 64,),  # LAPE re-selects exactly the planted neurons
        template="{question}",
        max_new_tokens=4,
        identify=lambda texts: [t.split()[0][:2] if t.split() else "unknown" for t in texts],
    )
    by_mode = {p.mode: p for p in sweep.points if p.alpha == 1.0}
    assert sweep.baseline.target_rate == 0 and by_mode["add"].target_rate == 1.0
    assert sweep.best("replace").target_rate == 1.0
    # all of zh's neurons off: the planted model no longer writes zh words
    assert curve.points[0].distribution["zh"] == 1.0
    assert curve.points[-1].distribution["zh"] < 1.0


def test_where_the_language_is_example(planted_dir, planted_model, tmp_path):
    import torch

    example = _load_example("where_the_language_is")
    LanguageNeurons(
        {lang: torch.tensor(PLANTED[lang]) for lang in LANGS},
        2,
        32,
        model=mlneurons_fingerprint(planted_model),
    ).save(tmp_path)
    sentences = {lang: [language_text(lang, 6, seed=s) for s in range(4)] for lang in LANGS}
    words = {lang: [f"{lang}{i}" for i in range(1, 7)] for lang in ("fr", "zh", "en")}
    ses, lens, correlation = example.ses_and_logit_lens(
        tmp_path, model_name=str(planted_dir), sentences=sentences, words=words
    )
    assert ses.similarity.shape == (2, 4, 4) and lens.n_items == 6
    assert math.isnan(correlation)  # 4 neurons in each layer: no correlation is defined
    pairs = [(a, b) for a in range(4) for b in range(4) if a != b]  # 12 ordered pairs
    by_hand = sum(ses.similarity[:, a, b] for a, b in pairs) / len(pairs)
    assert torch.allclose(ses.mean_offdiagonal(), by_hand)


def test_facts_example(planted_dir, tmp_path):
    from tiny import tiny_facts

    from mlneurons import MultilingualCorpus

    example = _load_example("facts_across_languages")
    corpus = MultilingualCorpus({"en": lambda: ["fr1 fr5 en2"], "de": lambda: ["en3 en4 en6"]})
    probed, neurons, traced = example.facts_across_languages(
        str(planted_dir), tiny_facts(), corpus, k=3
    )
    assert probed.p_at_1()["en"]["micro"] == pytest.approx(2 / 3)  # f1, f3 right; f2 wrong
    # PROBELESS neurons for exactly the correctly predicted facts, k of them each
    assert {lang: sorted(by_fact) for lang, by_fact in neurons.neurons.items()} == {
        "en": ["f1", "f3"],
        "de": ["f1", "f4"],
    }
    assert all(
        len(pairs) == 3 for by_fact in neurons.neurons.values() for pairs in by_fact.values()
    )
    assert traced.codes["en"]["f1"] == 3


def test_lrp2_example(planted_dir):
    from tiny import tiny_facts

    from mlneurons import MultilingualCorpus

    example = _load_example("lrp2_projection")
    corpus = MultilingualCorpus(
        {"en": lambda: ["fr1 fr5 en2", "en3 en4"], "de": lambda: ["zh2 ja5"]}
    )
    result = example.lrp2_transfer(str(planted_dir), tiny_facts(), corpus, layers=[0, 1], k=3)
    assert result.languages == ["de"] and result.selected["de"] == [0, 1]  # the only pair
    # "before" is plain probing of the held-out German facts, computed independently here
    import mlneurons
    from mlneurons.methods.probing import probe

    _, test = tiny_facts().split(0.5, seed=0)
    model = mlneurons.load_model(str(planted_dir), device="cpu")
    plain = probe(model, test.subset(["de"]), progress=False).p_at_1()["de"]["micro"]
    assert result.test_p_at_1["de"]["before"] == plain
