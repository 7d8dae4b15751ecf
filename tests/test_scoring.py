"""Scoring modes of causal candidate ranking, and the tie rule (issue #20, item 1)."""

from __future__ import annotations

import pytest
import torch
from tiny import make_random_llama, tiny_facts

import mlneurons
from mlneurons.data.facts import Fact, FactSet
from mlneurons.errors import UserError
from mlneurons.methods.probing import causal, probe
from mlneurons.methods.probing.causal import (
    candidate_scores,
    check_cached_scoring,
    probe_causal_scorings,
)
from mlneurons.methods.probing.result import TIE_ATOL, ProbeResult, tie_break
from mlneurons.models.canary import FastPathMismatch

MODES = ("sentence", "sum", "mean", "sentence-ce")


@pytest.fixture(scope="module")
def peaked(tmp_path_factory):
    """A tiny random Llama whose next-token distributions depend on the context."""
    path = make_random_llama(tmp_path_factory.mktemp("peaked"), n_layers=2, initializer_range=0.3)
    return mlneurons.load_model(str(path), device="cpu")


def _by_hand(model, subject, objects, after):
    """Each mode's scores from TransformerLens logits of whole sentences (float64), with the
    object's positions counted by hand from the word-level tokenizer."""
    rows = {mode: [] for mode in MODES}
    for obj in objects:
        words = [*subject.split(), *obj.split(), *after.split()]
        text = " ".join(words)
        ids = torch.tensor([[1, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]])
        assert ids.shape[1] == len(words) + 1  # one token a word, BOS first
        logp = torch.log_softmax(model(ids)[0, :-1].double(), -1)
        per_token = logp.gather(-1, ids[0, 1:, None])[:, 0]  # entry t-1: token t
        first = len(subject.split())  # the object's first token is at position first + 1
        obj_lp = per_token[first : first + len(obj.split())]
        rows["sentence"].append(per_token.sum())
        rows["sum"].append(obj_lp.sum())
        rows["mean"].append(obj_lp.mean())
        rows["sentence-ce"].append(per_token.mean())
    return {mode: torch.stack(v) for mode, v in rows.items()}


@pytest.mark.parametrize(
    "objects",
    [
        ["fr4 fr5", "fr4 zh6", "ja3", "en1 en2 en3"],  # the shared prefix ends before the object
        ["fr4 fr5", "fr4 zh6", "fr4 ja3 en1"],  # the object's first token is in the shared prefix
    ],
)
def test_every_mode_equals_an_independent_whole_sentence_computation(peaked, objects):
    facts = FactSet(
        [Fact("u", "en", "P1", "fr1 fr2", objects[0])],
        {("en", "P1"): "[X] [Y] en7 zh2"},  # template tokens after the object
        {("en", "P1"): objects},
    )
    fact = facts.facts[0]
    filled = [facts.fill_spans(fact, c) for c in objects]
    assert filled[0] == ("fr1 fr2 fr4 fr5 en7 zh2", [(8, 15)])
    expected = _by_hand(peaked, "fr1 fr2", objects, "en7 zh2")
    texts, spans = [t for t, _ in filled], [s for _, s in filled]
    for mode in MODES:
        got = candidate_scores(peaked, texts, batch_size=2, scoring=mode, spans=spans).double()
        want = expected[mode]
        if mode == "sentence":  # counted from the shared prefix on: equal up to a constant
            got, want = got - got[0], want - want[0]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=mode)
    # The modes rank differently here, so each is read, not the same number four times.
    assert len({tuple(expected[m].argsort().tolist()) for m in MODES}) > 1


def test_several_modes_in_one_pass_equal_one_probe_per_mode(peaked):
    facts = tiny_facts()
    together = probe_causal_scorings(peaked, facts, batch_size=3, progress=False)
    for mode in MODES:
        alone = probe(peaked, facts, scoring=mode, batch_size=2, progress=False)
        assert together[mode].predictions == alone.predictions, mode
        assert alone.settings["scoring"] == mode and "tie" in alone.settings["ties"]


def test_the_canary_compares_every_token_not_only_the_sums(planted_dir, monkeypatch):
    """Token log-probabilities in the wrong order keep the sentence sums, not the modes."""
    model = mlneurons.load_model(str(planted_dir), device="cpu")  # not yet checked
    original = causal.batch_token_logprobs
    monkeypatch.setattr(
        causal, "batch_token_logprobs", lambda m, p: [lp.flip(0) for lp in original(m, p)]
    )
    with pytest.raises(FastPathMismatch, match="shared-prefix cached candidate scoring"):
        check_cached_scoring(model)


# --- ties ------------------------------------------------------------------------------


def test_tie_rule_by_hand():
    # A tie that includes the gold counts as wrong, wherever the gold is listed.
    assert tie_break(["a", "b", "gold"], [1.0, 1.0, 1.0], "gold") == ("a", 3)
    assert tie_break(["gold", "a", "b"], [1.0, 0.0, 1.0], "gold") == ("b", 2)
    assert tie_break(["gold", "a"], [-3.0, -3.0 - TIE_ATOL / 2], "gold") == ("a", 2)
    assert tie_break(["gold", "a"], [-3.0, -3.0 - 10 * TIE_ATOL], "gold") == ("gold", 1)
    assert tie_break(["a", "b", "gold"], [5.0, 5.0, 1.0], "gold") == ("a", 2)  # no gold in it
    assert tie_break(["gold"], [-2.0], "gold") == ("gold", 1)
    assert tie_break(["gold", "a"], [float("-inf"), float("-inf")], "gold") == ("a", 2)
    with pytest.raises(ValueError, match="NaN"):
        tie_break(["a", "gold"], [float("nan"), 0.0], "gold")
    with pytest.raises(ValueError, match="2 candidates with 1 scores"):
        tie_break(["a", "gold"], [0.0], "gold")


def test_a_tie_with_the_gold_counts_as_wrong(planted_model, tmp_path):
    """After an English subject the planted model gives every non-English word the same
    probability, so "ja5" and "fr5" tie exactly; a plain argmax would pick the gold."""
    facts = FactSet(
        [Fact("t", "en", "P1", "en3", "ja5"), Fact("s", "en", "P1", "en3", "en4")],
        {("en", "P1"): "[X] [Y]"},
        {("en", "P1"): ["ja5", "fr5", "en4"]},
        fact_candidates={("t", "en"): ["ja5", "fr5"]},
    )
    scores = candidate_scores(planted_model, ["en3 ja5", "en3 fr5"])
    assert scores[0] == scores[1] and int(scores.argmax()) == 0  # argmax: the gold
    for mode in MODES:
        result = probe(planted_model, facts, scoring=mode, progress=False)
        tied, clear = result.predictions
        assert (tied["predicted"], tied["correct"], tied["tied"]) == ("fr5", False, 2), mode
        assert (clear["predicted"], clear["correct"], clear["tied"]) == ("en4", True, 1), mode
        assert result.ties() == {"en": 1} and result.p_at_1()["en"]["micro"] == 0.5
    result.save(tmp_path)
    assert ProbeResult.load(tmp_path).ties() == {"en": 1}


def test_scoring_modes_a_model_cannot_take_are_refused(planted_model, monkeypatch):
    from mlneurons.methods import probing

    facts = tiny_facts()  # (a value outside the Literal is refused by the config: CLI tests)
    monkeypatch.setattr(mlneurons.models.hooks, "is_masked_lm", lambda model: True)
    with pytest.raises(UserError, match=r"'sentence-ce' is not valid for a masked LM; .*mean, sum"):
        probing.probe(planted_model, facts, scoring="sentence-ce")
    with pytest.raises(UserError, match="method 'zhao' ranks none"):
        probing.probe(planted_model, facts, method="zhao", scoring="mean")
