"""Cross-lingual consistency: RankC, its chance level, COverlap, answer consistency, AC3 and
transfer against hand-computed values; the clustering order on a hand-worked example."""

import itertools
import math

import numpy as np
import pytest

from mlneurons.data.facts import Fact
from mlneurons.errors import UserError
from mlneurons.evaluation.clustering import cluster_order, clustered_labels
from mlneurons.methods.consistency import (
    consistency,
    rankc_chance,
    rankc_query,
    rankc_weights,
    ranking,
)
from mlneurons.methods.probing.result import ProbeResult, ranked_prediction

E = math.e


def test_rankc_of_two_tiny_rankings_by_hand():
    # N = 3, softmax weights e^3, e^2, e^1 over depths 1, 2, 3 (normalised).
    # [0, 1, 2] vs [1, 0, 2]: top-1 share nothing, top-2 and top-3 share everything.
    total = E + E**2 + E**3
    assert rankc_query(np.array([0, 1, 2]), np.array([1, 0, 2])) == pytest.approx(
        (E**2 + E) / total
    )
    assert (E**2 + E) / total == pytest.approx(0.33476, abs=1e-5)
    # [0, 1, 2] vs [2, 1, 0]: top-2 share {1} (1/2), top-3 everything.
    assert rankc_query(np.array([0, 1, 2]), np.array([2, 1, 0])) == pytest.approx(
        (E**2 / 2 + E) / total
    )
    # norm1 weights 3/6, 2/6, 1/6; norm2 9/14, 4/14, 1/14
    assert rankc_query(np.array([0, 1, 2]), np.array([2, 1, 0]), "norm1") == pytest.approx(1 / 3)
    assert rankc_query(np.array([0, 1, 2]), np.array([1, 0, 2]), "norm2") == pytest.approx(5 / 14)
    assert rankc_query(np.array([2, 0, 1]), np.array([2, 0, 1])) == pytest.approx(1.0)
    assert rankc_weights(3, "norm1").tolist() == pytest.approx([0.5, 1 / 3, 1 / 6])


def _rankc_as_the_authors(first, second, weights):
    """The authors' loop: top-j sets, |intersection| / j, weighted."""
    return sum(w * len(set(first[: j + 1]) & set(second[: j + 1])) / (j + 1)
               for j, w in enumerate(weights))  # fmt: skip


def test_fast_rankc_equals_the_set_loop_on_random_rankings():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 12, 40):
        for weighting in ("softmax", "norm1", "norm2"):
            a, b = rng.permutation(n), rng.permutation(n)
            expected = _rankc_as_the_authors(list(a), list(b), rankc_weights(n, weighting))
            assert rankc_query(a, b, weighting) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("weighting", ["softmax", "norm1", "norm2"])
def test_chance_level_by_enumeration(weighting):
    for n in (2, 3, 4, 5):
        first = np.arange(n)
        values = [
            rankc_query(first, np.array(p), weighting) for p in itertools.permutations(range(n))
        ]
        assert rankc_chance(n, weighting) == pytest.approx(np.mean(values), abs=1e-12)
    # the values quoted from the paper's setting (softmax)
    if weighting == "softmax":
        assert rankc_chance(10) == pytest.approx(0.158, abs=5e-4)
        assert rankc_chance(5) == pytest.approx(0.310, abs=5e-4)
        assert rankc_chance(2) == pytest.approx(0.634, abs=5e-4)


def test_ranking_breaks_equal_scores_in_candidate_order_with_the_gold_last():
    assert ranking(np.array([1.0, 3.0, 3.0, 2.0])).tolist() == [1, 2, 3, 0]
    assert ranking(np.array([1.0, 3.0, 3.0, 2.0]), gold=1).tolist() == [2, 1, 3, 0]


def _result(table, *, languages=("en", "de", "fr"), n=3):
    """A ProbeResult from ``{uuid: {lang: (predicted, gold)}}``: candidates c0..c{n-1}, the
    predicted one scored 0, the others -1 - position."""
    predictions = []
    for uuid, row in table.items():
        for lang, (predicted, gold) in row.items():
            candidates = [f"{lang}{i}" for i in range(n)]
            scores = [0.0 if i == predicted else -1.0 - i for i in range(n)]
            fact = Fact(uuid, lang, "P1", f"s{uuid}", candidates[gold])
            predictions.append(ranked_prediction(fact, candidates, scores))
    return ProbeResult(list(languages), ["P1"], predictions, {"name": "hand"}, {})


HAND = {
    "q1": {"en": (0, 0), "de": (0, 0), "fr": (0, 0)},  # all right
    "q2": {"en": (1, 0), "de": (1, 0), "fr": (2, 0)},  # all wrong; en = de
    "q3": {"en": (0, 0), "de": (1, 0), "fr": (1, 0)},  # en right; de = fr
    "q4": {"en": (2, 2), "de": (2, 2), "fr": (2, 2)},  # all right
}


def test_stored_scores_identify_candidates_by_position():
    row = _result(HAND).predictions[3]  # q2 in en
    assert (row["gold_index"], row["predicted_index"], row["correct"]) == (0, 1, False)
    assert row["scores"] == [-1.0, 0.0, -3.0]


def test_answer_consistency_ac3_transfer_and_coverlap_by_hand():
    probing = _result(HAND)
    # groups of 2: q1 1, q2 1/3 (en-de), q3 1/3 (de-fr), q4 1 -> 2/3; accuracy 7/12
    pairs = consistency(probing, group_size=2)
    assert pairs.answer("consistency").value == pytest.approx(2 / 3)
    assert pairs.answer("accuracy").value == pytest.approx(7 / 12)
    assert pairs.answer("ac3").value == pytest.approx(28 / 45)
    # one group of 3: q1 and q4 -> 1/2; AC3 = 2 (7/12)(1/2) / (13/12) = 7/13
    whole = consistency(probing, group_size=3)
    assert whole.answers["groups"] == 1
    assert whole.answer("consistency").value == pytest.approx(1 / 2)
    assert whole.answer("ac3").value == pytest.approx(7 / 13)
    # transfer: en right on q1, q3, q4, de on q1, q4
    assert whole.transfer_estimate("en", "de").value == pytest.approx(2 / 3)
    assert whole.transfer_estimate("de", "en").value == pytest.approx(1.0)
    assert whole.transfer_estimate("en", "de").method.startswith("Wilson")
    # COverlap with one gold per query is the Jaccard of correct facts: 2 / 3
    assert whole.estimate("en", "de", "coverlap").value == pytest.approx(2 / 3)
    assert whole.estimate("en", "de", "coverlap").value == pytest.approx(
        probing.jaccard()["en"]["de"]
    )


def test_rankc_of_a_pair_is_the_mean_of_its_queries_and_chance_corrected():
    probing = _result(HAND)
    result = consistency(probing)
    # rankings (scores 0 for the predicted, -1 - i else): predicted first, then by position
    order = {0: [0, 1, 2], 1: [1, 0, 2], 2: [2, 0, 1]}
    per_query = [
        rankc_query(np.array(order[HAND[q]["en"][0]]), np.array(order[HAND[q]["de"][0]]))
        for q in HAND
    ]
    raw = result.estimate("en", "de", "rankc")
    assert raw.value == pytest.approx(np.mean(per_query))
    chance = rankc_chance(3)
    assert result.pair("en", "de")["chance"] == pytest.approx(chance)
    fixed = result.estimate("de", "en", "rankc_corrected")
    assert fixed.value == pytest.approx((raw.value - chance) / (1 - chance))
    assert not raw.has_interval  # 4 queries: too few to resample
    most, least = result.extremes()
    assert set(most["languages"]) == {"en", "de"}  # agree on 3 of 4 first choices


def test_intervals_over_queries_and_saving(tmp_path):
    table = {
        f"q{i}": {"en": (i % 3, 0), "de": (i % 3, 0), "fr": ((i + 1) % 3, 0)} for i in range(30)
    }
    overlap = {
        "en": {"de": 0.1, "fr": 0.8},
        "de": {"en": 0.1, "fr": 0.2},
        "fr": {"en": 0.8, "de": 0.2},
    }
    result = consistency(_result(table), fact_neuron_overlap=overlap)
    assert result.orders["fact_neurons"] == ["en", "fr", "de"]  # en~fr first, same function
    same = result.estimate("en", "de", "rankc")
    assert same.value == pytest.approx(1.0) and same.lo == pytest.approx(1.0)
    other = result.estimate("en", "fr", "rankc_corrected")
    assert other.has_interval and other.lo <= other.value <= other.hi
    assert result.orders["rankc"][:2] in (["en", "de"], ["de", "en"])
    result.save(tmp_path)
    back = type(result).load(tmp_path)
    assert back.matrix("rankc") == result.matrix("rankc")
    assert back.answer("ac3") == result.answer("ac3")


def test_refusals():
    probing = _result(HAND)
    with pytest.raises(UserError, match="group_size=4 is not valid; choose from 2 to 3"):
        consistency(probing, group_size=4)
    old = ProbeResult(
        probing.languages,
        probing.relations,
        [{k: v for k, v in p.items() if k != "scores"} for p in probing.predictions],
        {},
        {},
    )
    with pytest.raises(UserError, match="keeps no candidate scores.*mlneurons probe --out"):
        consistency(old)
    longer = _result({"q1": {"en": (0, 0)}}, n=4).predictions
    shorter = [p for p in probing.predictions if p["uuid"] != "q1" or p["lang"] != "en"]
    misaligned = ProbeResult(probing.languages, ["P1"], shorter + longer, {}, {})
    with pytest.raises(UserError, match="P1 q1 do not align across languages: .* 4 with the gold"):
        consistency(misaligned)


def test_cluster_order_hand_worked():
    # 0~2 (0.9) join first; then [0,2]-1 averages 0.2, [0,2]-3 0.3, 1-3 0.8: 1 and 3 join.
    s = [
        [1.0, 0.1, 0.9, 0.2],
        [0.1, 1.0, 0.3, 0.8],
        [0.9, 0.3, 1.0, 0.4],
        [0.2, 0.8, 0.4, 1.0],
    ]
    assert cluster_order(s) == [0, 2, 1, 3]
    # average, not single linkage: 3 is closest to 0 alone (0.7) but to {0, 1} on average 0.4,
    # to {2} 0.5: 2 and 3 join, not 3 and {0, 1}
    s = [
        [1.0, 0.95, 0.0, 0.7],
        [0.95, 1.0, 0.0, 0.1],
        [0.0, 0.0, 1.0, 0.5],
        [0.7, 0.1, 0.5, 1.0],
    ]
    assert cluster_order(s) == [0, 1, 2, 3]
    table = {"a": {"b": None, "c": 0.9}, "b": {"a": None, "c": 0.1}, "c": {"a": 0.9, "b": 0.1}}
    assert clustered_labels(["a", "b", "c"], table) == ["a", "c", "b"]
    with pytest.raises(ValueError, match="square"):
        cluster_order([[1.0, 0.5]])


def _aligned_facts():
    """en and de with the same candidate list: the planted model picks the candidate in the
    subject's language (fr1 -> fr5, zh -> zh5, ja -> ja5)."""
    from mlneurons.data.facts import FactSet

    facts = [
        Fact("f1", "en", "P1", "fr1", "fr5"),  # right
        Fact("f2", "en", "P1", "zh1", "ja5"),  # wrong: zh5
        Fact("f3", "en", "P1", "ja2", "ja5"),  # right
        Fact("f1", "de", "P1", "fr2", "fr5"),  # right
        Fact("f2", "de", "P1", "zh2", "ja5"),  # wrong: zh5, as in en
        Fact("f3", "de", "P1", "zh3", "ja5"),  # wrong: zh5, en chose ja5
    ]
    candidates = {(lang, "P1"): ["fr5", "zh5", "ja5"] for lang in ("en", "de")}
    templates = {(lang, "P1"): "[X] [Y]" for lang in ("en", "de")}
    return FactSet(facts, templates, candidates)


def test_example_and_cli_on_the_planted_model(planted_dir, planted_model, tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from tiny import tiny_facts

    from mlneurons.interfaces.cli import main as cli_main
    from mlneurons.methods.consistency import ConsistencyResult
    from mlneurons.methods.probing import probe

    path = Path(__file__).resolve().parents[1] / "examples" / "cross_lingual_consistency.py"
    spec = importlib.util.spec_from_file_location("cross_lingual_consistency", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.cross_lingual_consistency(planted_model, _aligned_facts())
    assert "en-de: RankC" in capsys.readouterr().out
    # consistency 2/3 (f1, f2 agree), accuracy 1/2, AC3 = 2 (1/2)(2/3) / (7/6) = 4/7
    assert result.answer("consistency").value == pytest.approx(2 / 3)
    assert result.answer("ac3").value == pytest.approx(4 / 7)
    assert result.transfer_estimate("en", "de").value == pytest.approx(1 / 2)
    assert result.transfer_estimate("de", "en").value == pytest.approx(1.0)
    rankc = result.estimate("en", "de", "rankc").value
    assert rankc_chance(3) < rankc < 1

    probed = tmp_path / "probe"
    probe(planted_model, _aligned_facts(), progress=False).save(probed)
    out = tmp_path / "out"
    assert (
        cli_main(["consistency", "--probe", str(probed), "--weighting", "norm1", "--out", str(out)])
        == 0
    )
    saved = ConsistencyResult.load(out)
    assert saved.settings["weighting"] == "norm1"
    assert saved.answer("ac3").value == pytest.approx(4 / 7)
    assert (out / "rankc.png").stat().st_size > 1000 and (out / "coverlap.png").exists()

    misaligned = probe(planted_model, tiny_facts(), progress=False)  # en 3, de 4 candidates
    with pytest.raises(UserError, match="do not align across languages"):
        consistency(misaligned)
