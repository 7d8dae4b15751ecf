"""The app's Heads page (AppTest) on a run of the planted-heads model: the saved importance
and deactivation, and one head's attention on the same sentence in several languages."""

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("circuitsvis")
from test_app import captions, clean, iframes, open_app, views  # noqa: E402
from tiny import LANGS, PLANTED_HEADS, language_text, make_planted_heads_llama  # noqa: E402

from mlneurons.interfaces.cli import main as cli_main  # noqa: E402


@pytest.fixture(scope="module")
def heads_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("heads_run")
    model = make_planted_heads_llama(root / "model")
    for name, seed in (("train", 0), ("held", 9)):
        (root / name).mkdir()
        for lang in LANGS:
            (root / name / f"{lang}.txt").write_text(language_text(lang, 400, seed=seed) + "\n")
    out = root / "run"
    argv = ["heads", "--model", str(model), "--corpus", str(root / "train"), "--heldout"]
    argv += [str(root / "held"), "--languages", ",".join(LANGS), "--seq-len", "33"]
    argv += ["--tokens-per-language", "320", "--heldout-tokens-per-language", "320"]
    assert cli_main([*argv, "--top-rate", "0.25", "--out", str(out)]) == 0
    return out


def test_heads_page_opens_first_and_shows_the_saved_heads(heads_run):
    at = clean(open_app(heads_run, live="false"))  # a run with only heads.json opens on it
    assert at.title[0].value.startswith("Heads")
    assert "general heads (candidates of >= 2 languages): L0 H0" in captions(at)
    scores = at.dataframe[0].value
    layer, head = PLANTED_HEADS["en"]
    assert scores.iloc[layer, head] == scores.to_numpy().max() > 0
    found = next(d.value for d in at.dataframe if "specific heads" in d.value.columns)
    assert dict(zip(found["language"], found["specific heads"])) == {
        lang: f"L{layer} H{head}" for lang, (layer, head) in PLANTED_HEADS.items()
    }
    assert not iframes(at)  # live views off: no model
    assert any("mlneurons heads" in c.value and "--top-rate 0.25" in c.value for c in at.code)


def test_one_head_on_parallel_sentences(heads_run):
    at = open_app(heads_run, "heads", heads_language="fr")
    clean(at)
    assert (at.number_input(key="heads_layer").value, at.number_input(key="heads_head").value) == (
        PLANTED_HEADS["fr"]
    )  # the page opens on the chosen language's first specific head
    assert len(views(iframes(at)[0], "AttentionPattern")) == len(LANGS)  # built-in sentences
    at.radio(key="heads_source").set_value("my own text").run()
    at.text_area(key="heads_text").set_value("fr1 fr2 fr3\nen1 en2").run()
    clean(at)
    french, english = views(iframes(at)[0], "AttentionPattern")
    assert french["tokens"] == ["<bos>", "fr1", " fr2", " fr3"]
    assert english["tokens"] == ["<bos>", "en1", " en2"]
    # queries and keys are 0 in the planted model: uniform attention over each prefix
    assert french["attention"][2] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 0])
    assert "specific to fr" in captions(at)
