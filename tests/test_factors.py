"""Zhao et al.'s factors: P@1 by the object's token count (known split on a word-level
tokenizer and the planted model), Spearman with text size (hand-computed, ties, scipy)."""

import json
import math

import numpy as np
import pytest
from tiny import make_tokenizer, tiny_facts

from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import Uncertainty, wilson
from mlneurons.interfaces.cli import main as cli_main
from mlneurons.methods.probing.factors import (
    ONE,
    SEVERAL,
    Factors,
    corpus_text_sizes,
    factors,
    object_token_counts,
    parse_text_sizes,
    permutation_p,
    ranks,
    spearman,
    spearman_estimate,
    token_split,
)
from mlneurons.methods.probing.result import ProbeResult


def test_object_token_counts_on_a_word_level_tokenizer(tmp_path):
    tokenizer = make_tokenizer(tmp_path)
    counts = object_token_counts(tokenizer, tiny_facts())
    assert counts == {
        ("f1", "en"): 1,
        ("f2", "en"): 1,
        ("f3", "en"): 1,
        ("f1", "de"): 1,  # the two-token subject does not count
        ("f2", "de"): 1,
        ("f4", "de"): 2,  # "en4 en6"
    }


def _probing(rows):
    predictions = [
        {"uuid": u, "lang": lang, "relation": "P1", "gold": "g", "predicted": "g", "correct": ok}
        for u, lang, ok in rows
    ]
    return ProbeResult(["en", "de"], ["P1"], predictions)


ROWS = [("a", "en", True), ("b", "en", True), ("c", "en", False), ("d", "en", False),
        ("a", "de", True), ("b", "de", False), ("c", "de", False)]  # fmt: skip
COUNTS = {("a", "en"): 1, ("b", "en"): 1, ("c", "en"): 1, ("d", "en"): 3,
          ("a", "de"): 1, ("b", "de"): 2, ("c", "de"): 2}  # fmt: skip


def test_token_split_known_counts_and_wilson():
    split = token_split(_probing(ROWS), COUNTS)
    assert list(split) == ["en", "de", "all"]
    assert split["en"] == {ONE: wilson(2, 3), SEVERAL: wilson(0, 1)}
    assert split["de"] == {ONE: wilson(1, 1), SEVERAL: wilson(0, 2)}
    assert split["all"] == {ONE: wilson(3, 4), SEVERAL: wilson(0, 3)}
    one_language = token_split(_probing(ROWS[:3]), COUNTS)
    assert SEVERAL not in one_language["en"]  # no several-token fact: left out
    with pytest.raises(UserError, match="no object token count for 1 probed facts"):
        token_split(_probing(ROWS), {k: v for k, v in COUNTS.items() if k != ("d", "en")})


def test_spearman_hand_computed_with_ties():
    assert ranks([3.0, 1.0, 2.0, 2.0]).tolist() == [4.0, 1.0, 2.5, 2.5]
    # ranks x = 1, 2.5, 2.5, 4; y = 1..4: sum dx*dy = 4.5, |dx|^2 = 4.5, |dy|^2 = 5
    assert spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / math.sqrt(22.5))
    # no ties: 1 - 6 sum d^2 / (n (n^2 - 1)); d = 0, 1, -1, 0, 0 -> 1 - 12 / 120
    assert spearman([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(0.9)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, 9), rng.normal(size=9)
        if len(set(x)) > 1:
            assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_permutation_p_and_bootstrap_interval():
    # |rho| = 1 in 2 of the 24 orderings of 4 items
    assert permutation_p([1, 2, 3, 4], [5, 6, 7, 9]) == pytest.approx(2 / 24)
    assert permutation_p([1, 2, 3, 4, 5], [1, 3, 2, 4, 5]) == pytest.approx(
        sum(abs(spearman([1, 2, 3, 4, 5], p)) >= 0.9 - 1e-12
            for p in __import__("itertools").permutations([1, 2, 3, 4, 5])) / 120
    )  # fmt: skip
    few = spearman_estimate([1, 2, 3], [1, 2, 3])
    assert few.value == 1 and not few.has_interval  # under MIN_RESAMPLED languages
    many = spearman_estimate(list(range(12)), [x * x for x in range(12)], Uncertainty(samples=200))
    assert (many.value, many.lo, many.hi) == (1.0, 1.0, 1.0)  # monotone in every resample
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=15), rng.normal(size=15)
    noisy = spearman_estimate(x, y, Uncertainty(samples=300))
    assert noisy.lo < noisy.value < noisy.hi and noisy.n == 15
    assert permutation_p(x, y, Uncertainty(samples=300)) > 0.05  # independent draws


def test_text_sizes_given_or_counted(tmp_path):
    assert parse_text_sizes("en=3e9, de=1.5e9") == {"en": 3e9, "de": 1.5e9}
    for bad in ("en", "en=x", "=3", "en=-1", "en=inf"):
        with pytest.raises(UserError, match="not valid"):
            parse_text_sizes(bad)
    with pytest.raises(UserError, match="twice"):
        parse_text_sizes("en=1,en=2")
    (tmp_path / "en.txt").write_text("abc\n", encoding="utf-8")
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "a.txt").write_text("é\n", encoding="utf-8")  # 3 bytes
    (tmp_path / "de" / "b.txt").write_text("xy", encoding="utf-8")
    assert corpus_text_sizes(tmp_path) == {"en": 4, "de": 5}


def test_factors_result_round_trip(tmp_path):
    result = factors(_probing(ROWS), COUNTS, sizes={"en": 10, "de": 1, "fr": 5})
    assert result.sizes == {"en": 10.0, "de": 1.0}  # only probed languages
    assert result.p_at_1() == {"en": wilson(2, 4), "de": wilson(1, 3)}
    rho, p = result.correlation()
    assert rho.value == 1.0 and not rho.has_interval and p == 1.0  # 2 languages: both orders
    result.save(tmp_path)
    again = Factors.load(tmp_path)
    assert again.split() == result.split() and again.sizes == result.sizes
    saved = json.loads((tmp_path / "factors.json").read_text())
    assert saved["spearman"]["value"] == 1.0 and saved["spearman"]["lo"] is None
    with pytest.raises(UserError, match="the probed languages are en, de"):
        factors(_probing(ROWS), COUNTS, sizes={"fr": 5})


def test_the_command_on_the_planted_model(planted_dir, tmp_path, capsys):
    root = tmp_path / "mlama"
    tiny_facts().to_mlama(root)
    out, common = tmp_path / "run", ["--model", str(planted_dir), "--facts", f"mlama:{root}"]
    assert cli_main(["probe", *common, "--out", str(out)]) == 0
    capsys.readouterr()
    argv = ["factors", *common, "--probe", str(out), "--text-sizes", "en=10,de=1"]
    assert cli_main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    # en: f1, f3 right, f2 wrong (one token each); de: f1 right, f2 wrong, f4 ("en4 en6") right
    assert f"en: one token {wilson(2, 3).text()} (3 facts), several – (no fact)" in printed
    assert f"de: one token {wilson(1, 2).text()} (2 facts)" in printed
    assert f"several {wilson(1, 1).text()} (1 facts)" in printed
    assert "undefined (no spread)" in printed  # en and de both 2/3
    assert (out / "factors.png").exists() and (out / "factors.json").exists()

    streamlit = pytest.importorskip("streamlit.testing.v1")
    from test_app import APP, clean

    at = streamlit.AppTest.from_file(str(APP), default_timeout=180)
    at.query_params.update(run=str(out), live="false")
    at.run()
    at.switch_page("views/facts.py").run()
    clean(at)
    assert any("Zhao et al." in h.value for h in at.subheader)
    split = next(d.value for d in at.dataframe if "one-token facts" in d.value.columns)
    rows = split.set_index("language")
    assert rows["one-token facts"].to_dict() == {"en": 3, "de": 2, "all": 5}
    assert rows["several-token facts"].to_dict() == {"en": 0, "de": 1, "all": 1}


def test_bad_sizes_refused_before_the_model(tmp_path, capsys, monkeypatch):
    import mlneurons.models.loading

    def fail(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr(mlneurons.models.loading, "load_model", fail)
    out = str(tmp_path / "o")
    assert cli_main(["factors", "--text-sizes", "en=big", "--out", out]) == 2
    assert "text size 'en=big' is not valid" in capsys.readouterr().err
    assert cli_main(["factors", "--text-sizes", "en=1", "--text-corpus", ".", "--out", out]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli_main(["factors", "--text-corpus", str(tmp_path / "none"), "--out", out]) == 2
    assert "no such folder" in capsys.readouterr().err
