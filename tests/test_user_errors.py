"""User mistakes are caught before any long computation: one line, exit status 2.

Each CLI test checks the exit status, that stderr is one line naming the bad value
and the valid choices, and that no model was loaded and no statistics pass started
(the loaders are replaced by functions that fail the test when called).
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from tiny import LANGS, PLANTED, language_text, tiny_facts

import mlneurons
import mlneurons.evaluation.langid
import mlneurons.methods.lrp2
import mlneurons.methods.steering
import mlneurons.models.hooks
import mlneurons.models.loading
import mlneurons.stats.activation
from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.data.facts import OBJECTS_DIR, FactSet
from mlneurons.data.questions import load_questions
from mlneurons.errors import UserError
from mlneurons.interfaces.cli import main as cli_main
from mlneurons.methods import lape
from mlneurons.methods.interventions import activate, deactivate, intervene
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.models.loading import load_model
from mlneurons.stats.activation import ActivationStats


def _fail(*args, **kwargs):
    raise AssertionError("a long computation started after a user mistake")


@pytest.fixture()
def no_computation(monkeypatch):
    """Make loading a model, de-quantising the built-in one and the statistics pass fail."""
    monkeypatch.setattr(mlneurons.models.loading, "load_model", _fail)
    monkeypatch.setattr(mlneurons.models.loading, "_builtin_gemma_dir", _fail)
    monkeypatch.setattr(mlneurons.stats.activation, "collect_activation_stats", _fail)


def run(argv, capsys):
    """Run the CLI in-process; returns (exit status, stderr)."""
    try:
        code = cli_main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    return code, capsys.readouterr().err


def one_line_error(code, err, *parts, after_loading=False):
    """Exit status 2 and one error line; ``after_loading``: progress lines may come before."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 or after_loading, err
    assert lines[-1].startswith("mlneurons ") and " error: " in lines[-1]
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[-1], (part, err)


@pytest.fixture()
def neurons_dir(tmp_path):
    """Planted neurons of fr and zh (no statistics: the mistakes come before they are read)."""
    neurons = LanguageNeurons({lang: torch.tensor(PLANTED[lang]) for lang in ("fr", "zh")}, 2, 32)
    neurons.save(tmp_path / "neurons")
    return tmp_path / "neurons"


@pytest.fixture()
def mlama_without_candidates(tmp_path):
    root = tiny_facts().to_mlama(tmp_path / "mlama")
    for path in (root / OBJECTS_DIR).iterdir():
        path.unlink()
    (root / OBJECTS_DIR).rmdir()
    return root


# --- options checked when parsed -----------------------------------------------------


@pytest.mark.parametrize(
    "argv, parts",
    [
        (
            ["lape", "--model", "gemma-3-270"],
            ["--model", "'gemma-3-270'", "did you mean 'gemma-3-270m'?", "hub names need network"],
        ),
        (["lape", "--top-rate", "1.5"], ["--top-rate", "'1.5'", "(0, 1]"]),
        (["lape", "--filter-rate", "0"], ["--filter-rate", "'0'", "(0, 1]"]),
        (["lape", "--batch-size", "0"], ["--batch-size", "'0'", ">= 1"]),
        (["lape", "--seq-len", "1"], ["--seq-len", "'1'", ">= 2"]),
        (["lape", "--tokens-per-language", "ten"], ["--tokens-per-language", "'ten'", ">= 1"]),
        (["probe", "--batch-size", "0"], ["--batch-size", "'0'", ">= 1"]),
        (["probe", "--max-facts-per-relation", "0"], ["--max-facts-per-relation", "'0'"]),
        (["probe", "--facts", "mlama"], ["--facts", "'mlama'", "'builtin'", "'mlama:DIR'"]),
        (["probe", "--facts", "bmlama:"], ["--facts", "'bmlama:'", "names no directory"]),
        (["probe", "--scoring", "best"], ["--scoring", "'best'", "sentence", "sentence-ce"]),
        (
            ["probe", "--method", "zhao", "--scoring", "sum"],
            ["--scoring 'sum' ranks candidates", "--method zhao ranks none"],
        ),
        (["lrp2", "--sentences", "0"], ["--sentences", "'0'", ">= 1"]),
        (["lrp2", "--layers", "3,x"], ["--layers", "'x'", "'3,x'", "e.g. 3,6,9"]),
        (["fact-neurons", "--k", "-5"], ["--k", "'-5'", ">= 1"]),
        (
            ["steer", "--neurons", "n", "--source", "fr", "--target", "zh", "--n-questions", "-1"],
            ["--n-questions", "'-1'", ">= 1"],
        ),
        (
            ["steer", "--neurons", "n", "--source", "fr", "--target", "zh", "--batch-size", "0"],
            ["--batch-size", "'0'"],
        ),
    ],
)
def test_bad_option_values(argv, parts, tmp_path, capsys, no_computation):
    code, err = run([*argv, "--out", str(tmp_path / "out")], capsys)
    one_line_error(code, err, *parts)
    assert not (tmp_path / "out").exists()


def test_cuda_device_without_cuda(monkeypatch, tmp_path, capsys, no_computation):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = run(["lape", "--device", "cuda", "--out", str(tmp_path)], capsys)
    one_line_error(code, err, "--device", "'cuda'", "valid: cpu")


def test_library_checks_device_before_loading(monkeypatch, no_computation):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(mlneurons.models.loading, "resolve_model_path", _fail)
    with pytest.raises(UserError, match=r"device 'cuda' is not available here; valid: cpu"):
        load_model("gemma-3-270m", device="cuda")


def test_misspelt_builtin_name_in_the_library(no_computation):
    with pytest.raises(UserError, match=r"did you mean 'gemma-3-270m'\? .*hub names need network"):
        mlneurons.models.loading.resolve_model_path("gemma-3-270")
    assert mlneurons.models.loading.resolve_model_path("org/model") == "org/model"  # a hub name


# --- checked after reading files, before the model -----------------------------------


def test_languages_normalised_and_unknown_listed(tmp_path, capsys, no_computation):
    code, err = run(["lape", "--languages", "FR,xx", "--out", str(tmp_path)], capsys)
    one_line_error(code, err, "'xx'", "available: ar (ara)", "zh (zho)")
    code, err = run(["lape", "--languages", "zh-TW,en", "--out", str(tmp_path)], capsys)
    one_line_error(code, err, "'zh-TW'", "did you mean 'zh'?")


def test_one_language_normaliser(tmp_path):
    assert MultilingualCorpus.builtin([" FR ", "deu"]).languages == ["fr", "de"]
    files = MultilingualCorpus.from_files(_text_files(tmp_path))
    assert files.subset(["FR", "eng"]).languages == ["fr", "en"]
    facts = FactSet.from_mlama(tiny_facts().to_mlama(tmp_path / "m"), languages=["DE", "eng"])
    assert facts.languages == ["de", "en"]
    assert tiny_facts().subset(languages=["EN"]).languages == ["en"]
    assert load_questions("FRA") == load_questions("fr")
    assert mlneurons.evaluation.langid.identify("fr1 fr2", languages=["FR", "ENG"]) in ("fr", "en")
    neurons = LanguageNeurons({"fr": torch.tensor([[0, 1]])}, 2, 32)
    assert neurons["FR"].tolist() == [[0, 1]]
    with pytest.raises(UserError, match=r"unknown language 'de'; these neurons have \['fr'\]"):
        neurons["de"]


def _text_files(tmp_path):
    folder = tmp_path / "text"
    folder.mkdir()
    for lang in ("fr", "en"):
        (folder / f"{lang}.txt").write_text(language_text(lang, 50) + "\n")
    return folder


def test_mlama_without_candidate_files(mlama_without_candidates, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mlneurons.models.loading, "load_model", _fail)
    facts = f"mlama:{mlama_without_candidates}"
    code, err = run(["probe", "--facts", facts, "--out", str(tmp_path / "o")], capsys)
    one_line_error(code, err, "no candidate objects", "de/P1, en/P1", "--candidates gold")
    # Asking for the gold objects explicitly goes on to load the model.
    with pytest.raises(AssertionError, match="long computation"):
        cli_main(["probe", "--facts", facts, "--candidates", "gold", "--out", str(tmp_path)])
    with pytest.warns(UserWarning, match=r"no candidate objects .* de/P1, en/P1"):
        loaded = FactSet.from_mlama(mlama_without_candidates)
    assert loaded.description["gold_candidates"] == ["de/P1", "en/P1"]


@pytest.fixture()
def mlama(tmp_path):
    return f"mlama:{tiny_facts().to_mlama(tmp_path / 'facts')}"


def test_inputs_checked_before_the_model(mlama, neurons_dir, tmp_path, capsys, no_computation):
    out = ["--out", str(tmp_path / "o")]
    code, err = run(["trace", "--facts", mlama, "--corpus", str(tmp_path / "none"), *out], capsys)
    one_line_error(code, err, "corpus folder", "none' does not exist")
    code, err = run(["fact-neurons", "--facts", mlama, "--probe", str(tmp_path), *out], capsys)
    one_line_error(code, err, "probe.json")
    code, err = run(["lrp2", "--facts", mlama, "--pivot", "xx", *out], capsys)
    one_line_error(code, err, "--pivot 'xx'", "['de', 'en']")
    code, err = run(["probe", "--facts", mlama, "--languages", "EN,fr", *out], capsys)
    one_line_error(code, err, "unknown language 'fr'", "available: de, en")
    code, err = run(["ablate", "--neurons", str(neurons_dir), "--languages", "de", *out], capsys)
    one_line_error(code, err, "unknown language 'de'", "available: fr, zh")
    assert not (tmp_path / "o").exists()


def test_trace_corpus_checked_before_the_model(mlama, tmp_path, capsys, no_computation):
    from datasets import Dataset

    out = ["--out", str(tmp_path / "o")]
    trace = ["trace", "--facts", mlama, "--corpus"]
    code, err = run([*trace, f"hf:{tmp_path / 'none'}", *out], capsys)
    one_line_error(code, err, "dataset folder", "none' does not exist")
    Dataset.from_dict({"body": ["en1 en2"]}).to_json(tmp_path / "hf" / "en.jsonl")
    capsys.readouterr()
    code, err = run([*trace, f"hf:{tmp_path / 'hf'}", *out], capsys)
    one_line_error(code, err, "--text-column 'text' is not a column of language 'en'", "['body']")
    hf = [*trace, f"hf:{tmp_path / 'hf'}", "--text-column", "body"]
    code, err = run([*hf, "--language-column", "lang", *out], capsys)
    one_line_error(code, err, "--language-column 'lang' is not a column", "['body']")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "xx.txt").write_text("en1 en2\n")
    code, err = run([*trace, str(tmp_path / "text"), *out], capsys)
    one_line_error(code, err, "has none of the facts' languages (de, en)", "it has xx")
    (tmp_path / "text" / "en.txt").write_text("\n  \n")
    code, err = run([*trace, str(tmp_path / "text"), *out], capsys)
    one_line_error(code, err, "text' is empty: no text in en")
    code, err = run([*trace, str(tmp_path / "text"), "--text-column", "body", *out], capsys)
    one_line_error(code, err, "--text-column 'body' applies only to an hf: corpus")
    code, err = run([*trace, "builtin", "--match", "lemma", *out], capsys)
    one_line_error(code, err, "--match: invalid choice: 'lemma' (choose from 'exact', 'stem')")
    assert not (tmp_path / "o").exists()


def test_lrp2_layers_checked_before_the_language_vectors(
    planted_dir, mlama, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(mlneurons.methods.lrp2, "language_vectors", _fail)
    argv = ["lrp2", "--model", str(planted_dir), "--facts", mlama, "--layers", "0,5"]
    code, err = run([*argv, "--out", str(tmp_path / "o")], capsys)
    one_line_error(code, err, "--layers 0,5", "at least two layers in 0..1", after_loading=True)


def test_too_many_questions(neurons_dir, tmp_path, capsys, no_computation):
    argv = ["steer", "--neurons", str(neurons_dir), "--source", "FR", "--target", "zh"]
    code, err = run([*argv, "--n-questions", "1000", "--out", str(tmp_path)], capsys)
    one_line_error(code, err, "--n-questions 1000", "questions in 'fr'", "valid: 1..")
    code, err = run([*argv[:-2], "--target", "de", "--out", str(tmp_path)], capsys)
    one_line_error(code, err, "'de'", "available: fr, zh")


def test_neurons_that_do_not_fit_the_model(planted_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(mlneurons.methods.steering, "steer", _fail)
    LanguageNeurons({"fr": torch.tensor([[2, 1]]), "zh": torch.tensor([[0, 1]])}, 3, 32).save(
        tmp_path / "n"
    )
    ActivationStats.empty(["fr", "zh"], 3, 32).save(tmp_path / "n")
    argv = ["steer", "--neurons", str(tmp_path / "n"), "--model", str(planted_dir)]
    code, err = run([*argv, "--source", "fr", "--target", "zh", "--out", str(tmp_path)], capsys)
    one_line_error(code, err, "3 layers x 32 neurons", "has 2 x 32", after_loading=True)


def test_interventions_checked_when_built(planted_model):
    with pytest.raises(UserError, match=r"valid: layer 0\.\.1, neuron 0\.\.31"):
        deactivate([(0, 32)], model=planted_model)
    with pytest.raises(UserError, match=r"valid: layer 0\.\.1"):
        activate([(2, 0)], 1.0, model=planted_model)
    with pytest.raises(UserError, match=">= 0"):
        deactivate([(0, -1)])
    # Without a model, the hooks are checked when applied, before any forward pass.
    with pytest.raises(UserError, match=r"hook point 'blocks\.5\.mlp\.hook_post'"):
        with intervene(planted_model, deactivate([(5, 1)])):
            pass
    with pytest.raises(UserError, match=r"neuron 40 .*valid: 0\.\.31"):
        with intervene(planted_model, deactivate([(1, 40)])):
            pass
    assert not mlneurons.models.hooks.hooks_attached(planted_model)


def test_steer_needs_a_pad_token_for_batches(planted_model, monkeypatch):
    from mlneurons.methods.steering import steer

    monkeypatch.setattr(planted_model, "generate", _fail)
    options = dict(source="fr", target="zh", intervention=[], identify=lambda t: ["fr"] * len(t))
    planted_model.tokenizer.pad_token = None
    try:
        with pytest.raises(UserError, match=r"no pad token.*--batch-size 1"):
            steer(planted_model, ["fr1", "fr2"], batch_size=2, **options)
    finally:
        planted_model.tokenizer.pad_token = "<pad>"
    assert planted_model.tokenizer.pad_token_id == 0
    with pytest.raises(UserError, match="batch_size must be at least 1, got 0"):
        steer(planted_model, ["fr1"], batch_size=0, **options)


def test_library_checks_before_the_statistics_pass(planted_model, monkeypatch):
    corpus = MultilingualCorpus({"fr": lambda: [language_text("fr", 100)]}, seq_len=16)
    monkeypatch.setattr(MultilingualCorpus, "token_stream", _fail)  # no row is ever built
    with pytest.raises(UserError, match="batch_size must be at least 1, got 0"):
        mlneurons.collect_activation_stats(planted_model, corpus, batch_size=0, progress=False)
    with pytest.raises(UserError, match=r"top_rate=1\.5 is not a rate in \(0, 1\]"):
        lape.select(torch.rand(2, 2, 4), ["a", "b"], top_rate=1.5)


# --- lape --stats: re-selection without a forward pass -------------------------------


def test_lape_reselects_from_saved_statistics(tmp_path, capsys, no_computation):
    g = torch.Generator().manual_seed(0)
    stats = ActivationStats(
        list(LANGS),
        torch.randint(0, 100, (4, 2, 32), generator=g),
        torch.rand(4, 2, 32, generator=g, dtype=torch.float64),
        torch.full((4,), 100),
        model={"name": "tiny", "hash": "0123"},
    )
    stats.save(tmp_path / "first")
    argv = ["lape", "--stats", str(tmp_path / "first"), "--activation-bar-ratio", "0.8"]
    assert cli_main([*argv, "--top-rate", "0.2", "--out", str(tmp_path / "again")]) == 0
    expected = lape.select(stats.activation_probs, LANGS, top_rate=0.2, activation_bar_ratio=0.8)
    again = LanguageNeurons.load(tmp_path / "again")
    assert again.counts() == expected.counts() and sum(expected.counts().values()) > 0
    for lang in LANGS:
        assert torch.equal(again[lang], expected[lang])
    assert again.model == stats.model
    assert ActivationStats.load(tmp_path / "again").languages == list(LANGS)
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["constants"]["activation_bar_ratio"] == 0.8
    # A subset of the languages, named in any case.
    argv = [*argv, "--languages", "FR,zh", "--out", str(tmp_path / "sub")]
    assert cli_main(argv) == 0
    sub = stats.select(["fr", "zh"])
    expected = lape.select(sub.activation_probs, ["fr", "zh"], activation_bar_ratio=0.8)
    assert LanguageNeurons.load(tmp_path / "sub").counts() == expected.counts()
    capsys.readouterr()
    code, err = run([*argv[:-4], "--languages", "fr,de", "--out", str(tmp_path / "x")], capsys)
    one_line_error(code, err, "'de'", "en, fr, ja, zh")


# --- not user mistakes -----------------------------------------------------------------


def test_internal_bug_keeps_its_traceback(planted_dir, tmp_path):
    folder = _text_files(tmp_path)
    script = textwrap.dedent(
        """
        import sys
        import mlneurons.stats.collector

        def broken(*args, **kwargs):
            raise KeyError("a bug inside a hook")

        mlneurons.stats.collector.Accumulator.add = broken
        from mlneurons.interfaces.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    argv = ["lape", "--model", str(planted_dir), "--corpus", str(folder), "--languages", "fr,en"]
    argv += ["--tokens-per-language", "40", "--seq-len", "16", "--out", str(tmp_path / "o")]
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" in done.stderr and "KeyError: 'a bug inside a hook'" in done.stderr
    assert "error:" not in done.stderr


@pytest.mark.parametrize("command, resumes", [("lape", True), ("probe", False)])
def test_interrupt_advice_only_where_the_command_resumes(
    command, resumes, monkeypatch, tmp_path, capsys
):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(mlneurons.models.loading, "load_model", interrupt)
    argv = [command, "--languages", "en,fr", "--out", str(tmp_path)]
    if command == "probe":
        monkeypatch.setattr(FactSet, "builtin", lambda **kw: tiny_facts())
    code, err = run(argv, capsys)
    assert code == 130 and "interrupted" in err
    assert ("run the same command again to resume" in err) == resumes
