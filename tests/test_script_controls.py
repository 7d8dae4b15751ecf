"""Script and word-order controls: the text transforms and LAPE under them (known answers)."""

from __future__ import annotations

import random

import pytest
import torch
from tiny import PLANTED, language_text

from mlneurons.data.controls import controlled, romanise, shuffle_words
from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.methods import lape
from mlneurons.methods.script_controls import ScriptControlsResult, script_controls
from mlneurons.stats.activation import collect_activation_stats


def test_romanise_only_non_latin_scripts() -> None:
    assert romanise("Россия и Китай", "ru") == "Rossiya i Kitay"
    assert romanise("中国", "zh") == "ZhongGuo"
    assert romanise("Ça va très bien", "fr") == "Ça va très bien"  # Latin script: unchanged


def test_shuffle_keeps_each_sentences_words() -> None:
    text = "the cat sat on the mat. a dog ran! who knows?"
    out = shuffle_words(text, "en", random.Random(1))
    sentences = ["the cat sat on the mat.", "a dog ran!", "who knows?"]
    words = out.split()
    start = 0
    for sentence in sentences:  # each sentence's words stay within it, in some order
        n = len(sentence.split())
        assert sorted(words[start : start + n]) == sorted(sentence.split())
        start += n
    assert out != text and shuffle_words(text, "en", random.Random(1)) == out
    zh = shuffle_words("我们是朋友。你好吗？", "zh", random.Random(0))
    assert sorted(zh[:6]) == sorted("我们是朋友。") and sorted(zh[6:]) == sorted("你好吗？")


def test_controlled_corpus_checks_and_records() -> None:
    corpus = MultilingualCorpus({"ru": lambda: ["Россия. Москва"], "en": lambda: ["a b. c d"]})
    romanised = controlled(corpus, "romanised")
    assert list(romanised.sources["ru"]()) == ["Rossiya. Moskva"]  # type: ignore[operator]
    assert romanised.description["romanised"] == ["ru"]
    assert romanised.key() != corpus.key()  # cached rows of one never serve the other
    with pytest.raises(UserError, match="control='latin' is not valid; choose from original"):
        controlled(corpus, "latin")
    ids = MultilingualCorpus({"en": torch.arange(10)})
    with pytest.raises(UserError, match="token ids"):
        controlled(ids, "shuffled")


def test_lape_under_controls_on_the_planted_model(planted_model) -> None:
    """The planted model reads each token alone (attention writes nothing): shuffling the
    words leaves every count as it is, and its Latin-script words do not romanise, so the
    three controls select the same neurons, the planted ones, and overlap fully."""
    corpus = MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 600)]) for lang in ("en", "fr")},
        seq_len=32,
    )
    rate = 4 / 64  # the four planted neurons of en and fr, of 2 x 32
    result = script_controls(planted_model, corpus, top_rate=rate, batch_size=8)
    stats = collect_activation_stats(planted_model, corpus, batch_size=8, progress=False)
    direct = lape.select(stats, top_rate=rate)
    for lang in ("en", "fr"):
        assert result.neurons["original"][lang] == direct[lang].tolist()  # the LAPE command's
        for control in ("original", "romanised", "shuffled"):
            assert sorted(map(tuple, result.neurons[control][lang])) == sorted(PLANTED[lang])
    assert result.population == 2 * 32 and result.romanised == []
    overlaps = result.overlaps()
    assert set(overlaps) == {"original~romanised", "original~shuffled"}
    row = overlaps["original~shuffled"]["en"]
    assert (row["a"], row["b"], row["overlap"], row["jaccard"]) == (2, 2, 2, 1.0)
    assert row["chance"]["expected"] == pytest.approx(2 * 2 / 64)
    assert row["chance"]["p_value"] == pytest.approx(1 / (64 * 63 / 2))  # both of C(64, 2)
    assert row["p_holm"] == pytest.approx(2 / (64 * 63 / 2))
    loaded = ScriptControlsResult.from_json(result.to_json())
    assert loaded.overlaps() == overlaps


def test_hand_made_overlaps() -> None:
    neurons = {
        "original": {"ru": [[0, 1], [0, 2], [1, 3]], "en": [[0, 5]]},
        "romanised": {"ru": [[0, 7], [1, 3]], "en": [[0, 5]]},
    }
    result = ScriptControlsResult(["ru", "en"], ["original", "romanised"], neurons, 100, ["ru"])
    row = result.overlaps()["original~romanised"]["ru"]
    assert (row["overlap"], row["jaccard"]) == (1, 1 / 4)
    assert row["chance"]["expected"] == pytest.approx(3 * 2 / 100)


def test_example_and_cli(planted_dir, tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    from mlneurons.interfaces.cli import main as cli_main

    folder = tmp_path / "corpus"
    folder.mkdir()
    for lang in ("en", "fr"):
        (folder / f"{lang}.txt").write_text(language_text(lang, 600) + "\n")
    path = Path(__file__).resolve().parent.parent / "examples" / "script_controls.py"
    spec = importlib.util.spec_from_file_location("script_controls_example", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    args = ["--model", str(planted_dir), "--corpus", str(folder), "--languages", "en,fr"]
    result = example.main([*args, "--top-rate", "0.0625", "--out", str(tmp_path / "ex")])
    assert sorted(map(tuple, result.neurons["shuffled"]["fr"])) == sorted(PLANTED["fr"])
    assert (tmp_path / "ex" / "script_controls.png").stat().st_size > 1000
    out = tmp_path / "cli"
    code = cli_main(["script-controls", *args, "--top-rate", "0.0625", "--seq-len", "64",
                     "--controls", "shuffled", "--out", str(out)])  # fmt: skip
    assert code == 0
    saved = ScriptControlsResult.load(out)
    assert saved.controls == ["original", "shuffled"]
    assert (out / "script_controls.png").exists() and (out / "cfg.json").exists()
