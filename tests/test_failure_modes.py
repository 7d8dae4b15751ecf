"""Recall vs translation failures (Lu et al. 2025): the "rises" rule on synthetic curves,
known answers on the planted model, the lens against the model's own output, the command."""

import pytest
import torch
from tiny import bos_ids

from mlneurons.data.facts import Fact, FactSet
from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import wilson
from mlneurons.interfaces.cli import main as cli_main
from mlneurons.methods.failure_modes import (
    FailureModes,
    answer_tokens,
    failure_modes,
    middle_band,
    rises,
)
from mlneurons.methods.probing import probe


def test_middle_band_layers():
    assert middle_band(18, 0.25, 0.75) == list(range(4, 14))
    assert middle_band(2, 0.25, 0.75) == [0, 1]
    assert middle_band(10, 0.0, 1.0) == list(range(10))
    for start, end in ((0.5, 0.5), (0.8, 0.2), (-0.1, 0.5), (0.2, 1.5)):
        with pytest.raises(UserError, match="middle band"):
            middle_band(18, start, end)


def test_rises_on_synthetic_curves():
    ranks = [50, 9, 50, 0]
    p_en = [0.1, 0.3, 0.2, 0.9]
    p_answer = [0.2, 0.2, 0.2, 0.0]
    assert rises(ranks, p_en, p_answer, [1])  # rank 9 < 10
    assert not rises(ranks, p_en, p_answer, [1], top_k=9)  # 9 is not below 9
    assert not rises(ranks, p_en, p_answer, [0, 2])  # the last layer is outside the band
    assert rises(ranks, p_en, p_answer, [1], criterion="probability")  # 0.3 > 0.2
    assert not rises(ranks, p_en, p_answer, [0, 2], criterion="probability")  # 0.2 = 0.2: no


def _hand_made(ranks, settings=None):
    items = [{"uuid": f"u{i}", "lang": lang} for i, lang in enumerate(["de", "de", "de", "zh"])]
    ranks = torch.tensor(ranks)
    zeros = torch.zeros(ranks.shape)
    settings = {"criterion": "rank", "top_k": 10, "band": [0.25, 0.75], **(settings or {})}
    shared = [{"uuid": "u9", "lang": "zh"}]
    return FailureModes(
        ["de", "zh"], "en", items, zeros, zeros, ranks, ranks, shared, 0, {}, settings
    )


def test_modes_and_shares_with_wilson_intervals(tmp_path):
    # 4 layers: the band (0.25, 0.75) is layers 1 and 2
    result = _hand_made([[0, 50, 50, 0], [50, 3, 50, 50], [50, 50, 9, 50], [50, 10, 11, 0]])
    assert result.band() == [1, 2]
    assert result.modes() == ["recall", "translation", "translation", "recall"]
    shares = result.shares()
    assert shares["de"]["translation"] == 2 and shares["de"]["recall"] == 1
    assert shares["de"]["share"] == wilson(2, 3)
    assert shares["zh"]["translation"] == 0 and shares["zh"]["shared"] == 1
    assert result.modes(top_k=4) == ["recall", "translation", "recall", "recall"]
    assert result.share_text("de").startswith("2 of 3: 66.7% [")
    result.save(tmp_path)
    again = FailureModes.load(tmp_path)
    assert again.modes() == result.modes() and torch.equal(again.rank_english, result.rank_english)


def planted_facts():
    """Right in English, wrong in German: after a French subject the planted model answers in
    French, so the English answer (French) is on top in every layer while the German gold
    (an "en" token) loses: a translation failure. After a Chinese subject the English answer
    (Japanese) stays below all 24 Chinese tokens: a recall failure. h3's German gold starts
    with the English answer's token: set aside."""
    facts = [
        Fact("h1", "en", "P1", "fr1", "fr5"),
        Fact("h1", "de", "P1", "fr2", "en7"),
        Fact("h2", "en", "P1", "ja1", "ja6"),
        Fact("h2", "de", "P1", "zh2", "en8"),
        Fact("h3", "en", "P3", "fr3", "fr9"),
        Fact("h3", "de", "P3", "zh3", "fr9 en1"),
        Fact("h4", "en", "P1", "zh4", "fr5"),  # wrong in English: no failure to explain
        Fact("h4", "de", "P1", "zh4", "fr5"),
    ]
    candidates = {  # one candidate per planted language where a fact must come out right
        ("en", "P1"): ["zh5", "fr5", "ja6"],
        ("de", "P1"): ["fr8", "zh8", "en7", "en8", "fr5"],
        ("en", "P3"): ["zh9", "fr9"],
        ("de", "P3"): ["zh9", "fr9 en1"],
    }
    templates = {(lang, rel): "[X] [Y]" for lang in ("en", "de") for rel in ("P1", "P3")}
    return FactSet(facts, templates, candidates)


def test_recall_and_translation_failures_on_the_planted_model(planted_model):
    facts = planted_facts()
    probing = probe(planted_model, facts, progress=False)
    correct = probing.correct_map()
    assert [correct[(u, "en")] for u in ("h1", "h2", "h3", "h4")] == [True, True, True, False]
    assert not any(correct[(u, "de")] for u in ("h1", "h2", "h3"))
    result = failure_modes(planted_model, facts, probing, progress=False)
    assert [(i["uuid"], i["lang"]) for i in result.items] == [("h1", "de"), ("h2", "de")]
    assert result.modes() == ["translation", "recall"]
    assert [s["uuid"] for s in result.shared] == ["h3"]
    assert result.rank_english[0].tolist() == [0, 0]  # French on top (tied) in both layers
    assert result.rank_english[1].tolist() == [24, 24]  # below the 24 Chinese tokens
    shares = result.shares()["de"]
    assert (shares["translation"], shares["recall"], shares["shared"]) == (1, 1, 1)
    assert shares["share"] == wilson(1, 2)
    # the probability criterion agrees: French > the German gold after fr2; after zh2 both
    # answers have the same (zero) logit, so the English one never exceeds it
    assert result.modes(criterion="probability") == ["translation", "recall"]

    # the lens's last layer is the model's own next-token distribution
    tokenizer = planted_model.tokenizer
    for i, (prefix, english) in enumerate((("fr2", "fr5"), ("zh2", "ja6"))):
        with torch.no_grad():
            logits = planted_model(bos_ids(planted_model, prefix), return_type="logits")[0, -1]
        ids = answer_tokens(tokenizer, english)
        own = logits.float().softmax(-1)[ids].sum()
        assert result.p_english[i, -1] == pytest.approx(float(own), abs=1e-6)
        assert result.rank_english[i, -1] == int((logits > logits[ids].max()).sum())
    assert not any(hp.fwd_hooks for hp in planted_model.hook_dict.values())


def test_answer_tokens_skip_whitespace_and_add_the_sentence_token(planted_model):
    tokenizer = planted_model.tokenizer
    fr5 = tokenizer("fr5", add_special_tokens=False)["input_ids"][0]
    en1 = tokenizer("en1", add_special_tokens=False)["input_ids"][0]
    assert answer_tokens(tokenizer, "fr5 en1") == [fr5]
    assert answer_tokens(tokenizer, " fr5 ", in_sentence=en1) == sorted({fr5, en1})


def merged_facts():
    """These facts and the knowledge-neuron tests' (relation P2, uuids prefixed with x)."""
    from test_knowledge_neurons import planted_facts as likn_facts

    merged, extra = planted_facts(), likn_facts()
    return FactSet(
        merged.facts + [Fact("x" + f.uuid, f.lang, "P2", f.subject, f.object) for f in extra.facts],
        {**merged.templates, **{(lang, "P2"): "[X] [Y]" for lang in ("en", "de")}},
        {**merged.candidates, **{(lang, "P2"): c for (lang, _), c in extra.candidates.items()}},
    )


def test_knowledge_neurons_example(planted_dir):
    from test_examples_and_cli import _load_example

    example = _load_example("knowledge_neurons")
    likn, lost = example.knowledge_and_failures(str(planted_dir), merged_facts(), k=3)
    # right in both languages: xg1, xg2 (h1-h4 and xg3 are wrong in de)
    assert sorted(likn.neurons) == ["xg1", "xg2"] and likn.sources["xg1"] == ["en", "de"]
    assert all(len(p) <= 3 for p in likn.neurons.values())
    assert [(i["uuid"], lost.modes()[n]) for n, i in enumerate(lost.items)] == [
        ("h1", "translation"),
        ("h2", "recall"),
    ]


def test_the_commands_and_the_facts_page(planted_dir, tmp_path, capsys):
    root = tmp_path / "mlama"
    merged_facts().to_mlama(root)
    out, common = tmp_path / "run", ["--model", str(planted_dir), "--facts", f"mlama:{root}"]
    assert cli_main(["probe", *common, "--out", str(out)]) == 0
    assert (
        cli_main(["fact-neurons", *common, "--probe", str(out), "--k", "3", "--out", str(out)]) == 0
    )
    capsys.readouterr()
    assert cli_main(["knowledge-neurons", *common, "--probe", str(out), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "language-independent knowledge neurons" in printed and "knowledge_neurons.png" in printed
    )
    assert cli_main(["failure-modes", *common, "--probe", str(out), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # h1 translation, h2 recall; h3 and xg3 (the same gold zh5 in both languages) set aside
    assert "de: 1 of 2: 50.0% [" in printed and "(1 recall); 2 set aside" in printed, printed
    assert (out / "failure_modes.png").exists() and (out / "knowledge_neurons.png").exists()

    streamlit = pytest.importorskip("streamlit.testing.v1")
    from test_app import APP, clean

    at = streamlit.AppTest.from_file(str(APP), default_timeout=180)
    at.query_params.update(run=str(out), live="false")
    at.run()
    at.switch_page("views/facts.py").run()
    clean(at)
    assert any("knowledge neurons" in h.value.lower() for h in at.subheader)
    fact = at.selectbox(key="fact")
    fact.set_value(next(o for o in fact.options if o.startswith("h1 "))).run()
    clean(at)
    curves = [d.value for d in at.dataframe if "P(English answer)" in d.value.columns]
    assert len(curves) == 1 and len(curves[0]) == 2  # one row per layer of the planted model
    assert "translation failure" in "\n".join(c.value for c in at.caption)


def test_band_checked_before_the_model(tmp_path, capsys, monkeypatch):
    import mlneurons.models.loading

    def fail(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr(mlneurons.models.loading, "load_model", fail)
    argv = ["failure-modes", "--band-start", "0.8", "--band-end", "0.5", "--out", str(tmp_path)]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1 and "--band-start 0.8" in err and "0 <= start < end <= 1" in err
    )
