"""Language-independent knowledge neurons (Chen et al. 2024): the intersection rule on
hand-made fact neurons, hand-computed paired tests, and deactivation on the planted model."""

import pytest
import torch
from tiny import PLANTED

import mlneurons.methods.knowledge_neurons as kn
from mlneurons.data.facts import Fact, FactSet
from mlneurons.errors import UserError
from mlneurons.methods.knowledge_neurons import (
    KnowledgeNeurons,
    knowledge_neurons,
    language_independent,
)
from mlneurons.methods.probeless import FactNeurons
from mlneurons.methods.probing import probe


def _fact_neurons(table, k=3, n_layers=2, d_mlp=32):
    neurons = {
        lang: {u: torch.tensor(pairs, dtype=torch.long) for u, pairs in per.items()}
        for lang, per in table.items()
    }
    return FactNeurons(list(table), k, neurons, n_layers, d_mlp)


HAND_MADE = {
    "en": {"a": [(0, 1), (0, 2), (1, 3)], "b": [(0, 1), (1, 1), (1, 2)], "c": [(0, 7), (1, 7), (1, 8)]},
    "de": {"a": [(0, 2), (1, 3), (0, 5)], "b": [(1, 0), (1, 4), (0, 0)]},
    "fr": {"a": [(1, 3), (0, 2), (0, 9)], "c": [(0, 7), (1, 9), (1, 8)]},
}  # fmt: skip


def _pairs(tensor):
    return [tuple(p) for p in tensor.tolist()]


def test_the_intersection_of_every_correct_language():
    shared = language_independent(_fact_neurons(HAND_MADE))
    assert set(shared) == {"a", "b", "c"}  # each is right in two or three languages
    assert shared["a"].sources == ["en", "de", "fr"]
    assert _pairs(shared["a"].neurons) == [(0, 2), (1, 3)]  # in all three sets, sorted
    assert shared["b"].sources == ["en", "de"] and shared["b"].neurons.shape == (0, 2)
    assert shared["c"].sources == ["en", "fr"] and _pairs(shared["c"].neurons) == [(0, 7), (1, 8)]
    # the rule takes every correct language: fr's set of "a" shrinks nothing further here,
    # but restricting to en and de keeps (0, 2) and (1, 3) and drops c (one language left)
    two = language_independent(_fact_neurons(HAND_MADE), languages=["en", "de"])
    assert set(two) == {"a", "b"} and _pairs(two["a"].neurons) == [(0, 2), (1, 3)]
    three = language_independent(_fact_neurons(HAND_MADE), min_languages=3)
    assert list(three) == ["a"]
    with pytest.raises(UserError, match="min_languages=1"):
        language_independent(_fact_neurons(HAND_MADE), min_languages=1)
    with pytest.raises(UserError, match="no fact neurons for ja"):
        language_independent(_fact_neurons(HAND_MADE), languages=["en", "ja"])


def _result(outcomes, neurons=None, n_layers=2):
    neurons = neurons or {}
    return KnowledgeNeurons(
        ["en", "de"], 3, neurons, {u: ["en", "de"] for u in neurons}, {}, outcomes, n_layers, 32
    )


def test_counts_per_layer_sum_over_facts_or_count_distinct_neurons():
    neurons = {
        "a": torch.tensor([[0, 2], [1, 3]]),
        "b": torch.tensor([[1, 3], [1, 5]]),
        "c": torch.zeros(0, 2, dtype=torch.long),
    }
    result = _result([], neurons)
    assert result.counts_per_layer() == [1, 3]
    assert result.counts_per_layer(distinct=True) == [1, 2]
    assert result.with_neurons() == ["a", "b"] and kn.mean_size(result) == pytest.approx(4 / 3)


def test_effects_are_exact_mcnemar_with_holm_over_languages(tmp_path):
    rows = [
        {"uuid": f"e{i}", "lang": "en", "relation": "P", "before": True, "likn": i >= 8, "control": True}
        for i in range(10)
    ] + [
        {"uuid": "d0", "lang": "de", "relation": "P", "before": True, "likn": False, "control": False},
        {"uuid": "d1", "lang": "de", "relation": "P", "before": True, "likn": True, "control": True},
    ]  # fmt: skip
    effects = _result(rows).effects()
    en, de = effects["en"], effects["de"]
    assert en["n"] == 10 and en["vs_before"].b == 8 and en["vs_before"].c == 0
    assert en["vs_before"].p_value == pytest.approx(2 * 0.5**8)  # exact McNemar, by hand
    assert en["vs_before"].after.value == pytest.approx(0.2)
    assert en["vs_control"].difference.value == pytest.approx(-0.8)
    assert de["vs_before"].p_value == 1.0 and de["vs_control"].p_value == 1.0  # b=1 / no pair
    assert en["vs_before_p_holm"] == pytest.approx(2 * 2 * 0.5**8)  # Holm: 2 languages
    assert de["vs_before_p_holm"] == 1.0
    result = _result(rows, {"e0": torch.tensor([[0, 1]])})
    result.save(tmp_path)
    again = KnowledgeNeurons.load(tmp_path)
    assert again.outcomes == rows and _pairs(again.neurons["e0"]) == [(0, 1)]
    assert again.effects()["en"]["vs_before"].p_value == en["vs_before"].p_value


def planted_facts():
    """The planted model continues in the language of the last token: a French subject is
    answered with the one French candidate. No gold is the first candidate, so once the
    planted neurons are off (every candidate then scores the same) the answer is wrong
    under the first-maximum rule and under any rule that never favours the gold."""
    facts = [
        Fact("g1", "en", "P1", "fr1", "fr5"),
        Fact("g1", "de", "P1", "fr2", "fr5"),
        Fact("g2", "en", "P1", "ja1", "ja6"),
        Fact("g2", "de", "P1", "ja2", "ja6"),
        Fact("g3", "en", "P1", "zh1", "zh5"),
        Fact("g3", "de", "P1", "en1", "zh5"),  # an English subject: en7 wins, wrong
    ]
    candidates = {key: ["en7", "zh5", "ja6", "fr5"] for key in [("en", "P1"), ("de", "P1")]}
    templates = {("en", "P1"): "[X] [Y]", ("de", "P1"): "[X] [Y]"}
    return FactSet(facts, templates, candidates)


def test_deactivating_planted_likn_flips_the_fact_in_both_languages(planted_model, monkeypatch):
    facts = planted_facts()
    probing = probe(planted_model, facts, progress=False)
    assert probing.correct_map() == {
        ("g1", "en"): True, ("g1", "de"): True, ("g2", "en"): True, ("g2", "de"): True,
        ("g3", "en"): True, ("g3", "de"): False,
    }  # fmt: skip
    fr, ja = PLANTED["fr"], PLANTED["ja"]
    neurons = _fact_neurons(
        {
            "en": {"g1": [*fr, (0, 0)], "g2": [*ja, (0, 1)], "g3": [(0, 21), (1, 5), (0, 2)]},
            "de": {"g1": [*fr, (1, 1)], "g2": [*ja, (0, 4)]},
        }
    )
    result = knowledge_neurons(planted_model, facts, probing, neurons, progress=False)
    assert _pairs(result.neurons["g1"]) == sorted(fr) and _pairs(result.neurons["g2"]) == sorted(ja)
    assert "g3" not in result.neurons  # right in English only
    likn = {p for pairs in result.neurons.values() for p in _pairs(pairs)}
    for uuid, pairs in result.control.items():  # same layers, never a LIKN neuron
        assert sorted(pairs[:, 0].tolist()) == sorted(result.neurons[uuid][:, 0].tolist())
        assert not set(_pairs(pairs)) & likn
    rows = {(r["uuid"], r["lang"]): r for r in result.outcomes}
    assert set(rows) == {("g1", "en"), ("g1", "de"), ("g2", "en"), ("g2", "de")}
    assert all(r["before"] and not r["likn"] and r["control"] for r in rows.values())
    effects = result.effects()
    assert effects["en"]["vs_before"].b == 2 and effects["en"]["vs_control"].b == 2
    assert result.settings["facts_read_for_firing"] == 6
    assert not any(hp.fwd_hooks for hp in planted_model.hook_dict.values())  # nothing leaked

    calls = []

    def failing_probe(*args, **kwargs):  # the second deactivated probe fails
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return probe(*args, **kwargs)

    monkeypatch.setattr(kn, "probe", failing_probe)
    with pytest.raises(RuntimeError, match="boom"):
        knowledge_neurons(planted_model, facts, probing, neurons, progress=False)
    assert not any(hp.fwd_hooks for hp in planted_model.hook_dict.values())  # not on errors


def test_fact_neurons_of_another_probing_run_are_refused(planted_model):
    facts = planted_facts()
    probing = probe(planted_model, facts, progress=False)
    neurons = _fact_neurons({"en": {"g1": [(0, 1)]}, "de": {"g3": [(0, 1)]}}, k=1)
    with pytest.raises(UserError, match="de:g3"):
        knowledge_neurons(planted_model, facts, probing, neurons, progress=False)
    wide = _fact_neurons({"en": {"g1": [(0, 1)]}}, k=1, d_mlp=64)
    with pytest.raises(UserError, match="2 x 64"):
        knowledge_neurons(planted_model, facts, probing, wide, progress=False)
