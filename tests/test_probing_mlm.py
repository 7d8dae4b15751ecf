"""Masked-LM probing on a tiny BERT: typed ranking, Zhao's matching, mask activations."""

from __future__ import annotations

import pytest
import torch

import mlneurons.methods.probing.masked as pm
from mlneurons.data.facts import Fact, FactSet
from mlneurons.methods.probing import probe
from mlneurons.methods.probing.result import ProbeResult
from mlneurons.models.hooks import mlp_neuron_hook

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["lives", "in", "habite", "à", ".", "\u2581"] + [f"s{i}" for i in range(4)]
OBJECTS = [f"o{i}" for i in range(6)]
VOCAB = SPECIALS + WORDS + OBJECTS
ID = {w: i for i, w in enumerate(VOCAB)}
PLANTED = "o2"  # the planted model gives this token the highest logit at every position


def make_bert(directory, *, planted: bool = False, seed: int = 0):
    """Save a tiny BertForMaskedLM with a word-level [CLS]/[SEP] tokenizer to ``directory``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(ID, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", ID["[CLS]"]), ("[SEP]", ID["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        pad_token="[PAD]",
        unk_token="[UNK]",
    )
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
        pad_token_id=ID["[PAD]"],
    )
    config.architectures = ["BertForMaskedLM"]
    model = BertForMaskedLM(config).eval()
    if planted:
        with torch.no_grad():
            model.cls.predictions.bias[ID[PLANTED]] = 30.0
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def bert(bert_dir):
    import mlneurons

    return mlneurons.load_model(str(bert_dir), device="cpu")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    import mlneurons

    path = make_bert(tmp_path_factory.mktemp("planted_bert"), planted=True)
    return mlneurons.load_model(str(path), device="cpu")


@pytest.fixture(scope="module")
def plain_hf(bert_dir):
    """The same weights as ``bert``, loaded by transformers alone (no bridge)."""
    from transformers import BertForMaskedLM

    return BertForMaskedLM.from_pretrained(bert_dir).eval()


def fact_set() -> FactSet:
    facts = [
        Fact("u0", "en", "P1", "s0", "o2"),
        Fact("u1", "en", "P1", "s1", "o0"),
        Fact("u2", "en", "P1", "s2", "o1 o3"),
        Fact("u3", "en", "P1", "s3", "o4 o5 o0"),
        Fact("u0", "fr", "P1", "s0", "o2"),
        Fact("u2", "fr", "P1", "s2", "o1 o3"),
    ]
    templates = {("en", "P1"): "[X] lives in [Y] .", ("fr", "P1"): "[X] habite à [Y] ."}
    candidates = {("en", "P1"): ["o0", "o2", "o5", "o1 o3", "o3 o4", "o4 o5 o0"]}
    return FactSet(facts, templates, candidates)


def hand_ids(text: str) -> list[int]:
    return [ID["[CLS]"], *(ID[w] for w in text.split()), ID["[SEP]"]]


def hand_query(facts: FactSet, fact: Fact, n_masks: int) -> list[int]:
    return hand_ids(facts.fill(fact, " ".join(["[MASK]"] * n_masks)))


def hand_scores(hf, facts: FactSet, lang: str, relation: str) -> torch.Tensor:
    """Mean log-prob of each candidate's tokens at its own masks, one unpadded forward each."""
    group = facts.facts_for(lang, relation)
    candidates = facts.candidates[(lang, relation)]
    out = torch.empty(len(group), len(candidates))
    for i, fact in enumerate(group):
        for c, cand in enumerate(candidates):
            target = [ID[w] for w in cand.split()]
            ids = hand_query(facts, fact, len(target))
            with torch.no_grad():
                logprobs = hf(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
            masks = [k for k, t in enumerate(ids) if t == ID["[MASK]"]]
            out[i, c] = torch.stack([logprobs[p, t] for p, t in zip(masks, target)]).mean()
    return out


def test_bridge_boots_bert_with_mlp_hooks(bert):
    assert type(bert.original_model).__name__ == "BertForMaskedLM"
    for layer in range(2):
        name, to_act = mlp_neuron_hook(bert, layer)
        assert name == f"blocks.{layer}.mlp.hook_post"
        assert to_act(torch.ones(2)).equal(torch.ones(2))
        assert f"blocks.{layer}.mlp.hook_pre" in bert.hook_dict
    assert pm.object_ids(bert.tokenizer, "o1 o3") == [ID["o1"], ID["o3"]]
    assert pm._masked_query(fact_set(), fact_set().facts[2], bert.tokenizer, 2) == hand_query(
        fact_set(), fact_set().facts[2], 2
    )


def test_object_ids_drop_bare_word_boundary_pieces(bert):
    assert pm.object_ids(bert.tokenizer, "\u2581 o4") == [ID["o4"]]
    assert pm.object_ids(bert.tokenizer, "\u2581") == [ID["\u2581"]]  # nothing else left


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_typed_scores_equal_hand_computed_mean_log_probs(bert, plain_hf, lang):
    facts = fact_set()
    group, candidates, scores = pm.typed_scores(bert, facts, lang, "P1", batch_size=3)
    assert [f.uuid for f in group] == [f.uuid for f in facts.facts_for(lang, "P1")]
    assert candidates == facts.candidates[(lang, "P1")]
    expected = hand_scores(plain_hf, facts, lang, "P1")
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)
    assert scores.shape[1] == len(candidates)
    lengths = {len(c.split()) for c in candidates}
    assert len(lengths) > 1  # multi-token candidates of several lengths are scored


def test_probe_masked_predicts_argmax_candidate(bert, plain_hf):
    facts = fact_set()
    result = pm.probe_masked(bert, facts, batch_size=2, progress=False)
    assert result.settings["method"] == "masked: typed ranking (Kassner)"
    assert [(p["uuid"], p["lang"]) for p in result.predictions] == [
        (f.uuid, f.lang) for f in facts.facts
    ]
    for lang in ("en", "fr"):
        expected = hand_scores(plain_hf, facts, lang, "P1")
        candidates = facts.candidates[(lang, "P1")]
        rows = [p for p in result.predictions if p["lang"] == lang]
        for i, p in enumerate(rows):
            assert set(p) >= {"uuid", "lang", "relation", "gold", "predicted", "correct"}
            assert p["predicted"] == candidates[int(expected[i].argmax())]
            assert p["correct"] == (p["predicted"] == p["gold"])
            gold = expected[i, candidates.index(p["gold"])]
            assert p["gold_rank"] == int((expected[i] > gold + 1e-5).sum())


def test_masked_sum_scoring_and_per_fact_candidates(bert, plain_hf):
    facts = fact_set()
    _, candidates, sums = pm.typed_scores(bert, facts, "en", "P1", scoring="sum")
    lengths = torch.tensor([len(c.split()) for c in candidates], dtype=torch.float32)
    expected = hand_scores(plain_hf, facts, "en", "P1")
    torch.testing.assert_close(sums, expected * lengths, atol=1e-5, rtol=1e-5)
    # A fact's own candidates (BMLAMA) are ranked among themselves only.
    own = FactSet(
        facts.facts,
        facts.templates,
        facts.candidates,
        fact_candidates={("u3", "en"): ["o1 o3", "o4 o5 o0"]},
    )
    result = probe(bert, own, scoring="sum", progress=False)
    assert result.settings["scoring"] == "sum"
    row = next(p for p in result.predictions if (p["uuid"], p["lang"]) == ("u3", "en"))
    pair = (sums[3, candidates.index("o1 o3")], sums[3, candidates.index("o4 o5 o0")])
    assert row["predicted"] == ("o1 o3" if pair[0] > pair[1] else "o4 o5 o0")
    assert row["gold_rank"] == int(pair[0] > pair[1]) and row["tied"] == 1


def test_planted_fact_is_ranked_first(planted):
    facts = fact_set()
    result = pm.probe_masked(planted, facts, progress=False)
    by_key = {(p["uuid"], p["lang"]): p for p in result.predictions}
    for lang in ("en", "fr"):
        assert by_key[("u0", lang)]["correct"] and by_key[("u0", lang)]["gold_rank"] == 0
    assert all(p["predicted"] == PLANTED for p in result.predictions)
    table = result.p_at_1()
    assert table["en"]["micro"] == pytest.approx(1 / 4)
    assert table["fr"]["micro"] == pytest.approx(1 / 2)
    # the planted fact against an independent forward: o2 has the best mean log-prob
    hf = planted.original_model
    ids = hand_query(facts, facts.facts[0], 1)
    with torch.no_grad():
        logprobs = hf(input_ids=torch.tensor([ids])).logits[0, ids.index(ID["[MASK]"])]
    assert int(logprobs.argmax()) == ID[PLANTED]


def test_probe_dispatches_masked_models(planted):
    facts = fact_set()
    via_probe = probe(planted, facts, progress=False)
    direct = pm.probe_masked(planted, facts, progress=False)
    assert via_probe.settings["method"] == pm.TYPED_RANKING
    assert via_probe.predictions == direct.predictions


def test_match_full_and_partial():
    assert pm.match([1, 2], [[3], [1, 2], [2, 1, 1]]) == (True, True)
    assert pm.match([1, 2], [[1], [2, 1], [2, 2, 1]]) == (False, True)
    assert pm.match([1, 2], [[1], [2, 3], [1, 3, 3]]) == (False, False)  # ids split over m
    assert pm.match([4], [[4]]) == (True, True)
    assert pm.match([4], []) == (False, False)


def test_zhao_match_on_hand_made_predictions(bert, monkeypatch):
    i = ID
    # per (uuid, lang): the predicted ids for m = 1, 2, 3 (M = 3 in en, 2 in fr)
    made = {
        ("u0", "en"): [[i["o2"]], [i["o2"], i["o0"]], [i["o1"]] * 3],  # full at m=1
        ("u1", "en"): [[i["o1"]], [i["o0"], i["o0"]], [i["o3"]] * 3],  # partial only
        ("u2", "en"): [
            [i["o1"]],
            [i["o3"], i["o1"]],
            [i["\u2581"], i["o1"], i["o3"]],
        ],  # full after strip
        ("u3", "en"): [[i["o4"]], [i["o5"], i["o0"]], [i["o4"], i["o5"], i["o1"]]],  # neither
        ("u0", "fr"): [[i["o1"]], [i["o3"], i["o2"]]],  # partial only
        ("u2", "fr"): [[i["o1"]], [i["o1"], i["o0"]]],  # neither
    }
    calls = []

    def fake(model, facts, group, n_masks, *, batch_size=32):
        calls.append((group[0].lang, n_masks, len(group)))
        return [made[(f.uuid, f.lang)][n_masks - 1] for f in group]

    monkeypatch.setattr(pm, "greedy_predictions", fake)
    result = pm.zhao_match(bert, fact_set(), progress=False)
    assert sorted(calls) == sorted(
        [("en", 1, 4), ("en", 2, 4), ("en", 3, 4), ("fr", 1, 2), ("fr", 2, 2)]
    )
    assert result.settings["method"] == "masked: Zhao full/partial match"
    got = {(p["uuid"], p["lang"]): (p["correct"], p["partial"]) for p in result.predictions}
    assert got == {
        ("u0", "en"): (True, True),
        ("u1", "en"): (False, True),
        ("u2", "en"): (True, True),
        ("u3", "en"): (False, False),
        ("u0", "fr"): (False, True),
        ("u2", "fr"): (False, False),
    }
    shown = {(p["uuid"], p["lang"]): p["predicted"] for p in result.predictions}
    assert shown[("u0", "en")] == "o2"  # m = gold length 1
    assert shown[("u2", "en")] == "o3 o1"  # m = gold length 2
    assert shown[("u3", "en")] == "o4 o5 o1"
    assert result.p_at_1()["en"]["micro"] == pytest.approx(2 / 4)
    assert result.p_at_1()["fr"]["micro"] == 0.0
    partial = pm.partial_p_at_1(result)
    assert partial["en"]["micro"] == pytest.approx(3 / 4)
    assert partial["fr"]["micro"] == pytest.approx(1 / 2)
    assert pm.partial_result(result).jaccard()["en"]["fr"] == pytest.approx(1 / 2)


def test_zhao_match_greedy_on_planted_model(planted, tmp_path):
    facts = fact_set()
    result = pm.zhao_match(planted, facts, batch_size=3, progress=False)
    for p in result.predictions:
        assert all(ids == [ID[PLANTED]] * (m + 1) for m, ids in enumerate(p["pred_ids"]))
        assert p["correct"] == p["partial"] == (p["gold"] == PLANTED)
    # the greedy top-1 of every mask agrees with a plain argmax
    group = facts.facts_for("en", "P1")
    hf = planted.original_model
    for fact, pred in zip(group, pm.greedy_predictions(planted, facts, group, 2)):
        ids = hand_query(facts, fact, 2)
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([ids])).logits[0]
        assert pred == [int(logits[k].argmax()) for k, t in enumerate(ids) if t == ID["[MASK]"]]
    loaded = ProbeResult.load(result.save(tmp_path))
    assert pm.partial_p_at_1(loaded) == pm.partial_p_at_1(result)


def test_partial_needs_zhao_result(planted):
    result = pm.probe_masked(planted, fact_set(), progress=False)
    with pytest.raises(ValueError, match="zhao_match"):
        pm.partial_p_at_1(result)


def test_mask_activations_equal_run_with_cache(bert, plain_hf):
    facts = fact_set()
    acts = pm.mask_activations(bert, facts, batch_size=4)
    assert set(acts) == {(f.uuid, f.lang) for f in facts.facts}
    names = [f"blocks.{layer}.mlp.hook_post" for layer in range(2)]
    intermediate = {}
    handles = [
        layer.intermediate.register_forward_hook(
            lambda mod, args, out, k=k: intermediate.__setitem__(k, out.detach())
        )
        for k, layer in enumerate(plain_hf.bert.encoder.layer)
    ]
    try:
        for fact in facts.facts:
            ids = hand_query(facts, fact, len(fact.object.split()))
            masks = [k for k, t in enumerate(ids) if t == ID["[MASK]"]]
            _, cache = bert.run_with_cache(torch.tensor([ids]), names_filter=names)
            expected = torch.cat([cache[name][0, masks].mean(0) for name in names])
            got = acts[(fact.uuid, fact.lang)]
            assert got.shape == (2 * 48,)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
            with torch.no_grad():
                plain_hf(input_ids=torch.tensor([ids]))
            plain = torch.cat([intermediate[k][0, masks].mean(0) for k in range(2)])
            torch.testing.assert_close(got, plain, atol=1e-5, rtol=1e-5)
    finally:
        for handle in handles:
            handle.remove()


def test_mask_activations_keys_and_batching(bert):
    facts = fact_set()
    one = pm.mask_activations(bert, facts, batch_size=1)
    some = pm.mask_activations(bert, facts, batch_size=6, keys=[("u2", "fr"), ("u3", "en")])
    assert set(some) == {("u2", "fr"), ("u3", "en")}
    for key, value in some.items():
        torch.testing.assert_close(value, one[key], atol=1e-5, rtol=1e-5)


def test_causal_models_are_refused(gpt2_model):
    with pytest.raises(ValueError, match="ForMaskedLM"):
        pm.mask_activations(gpt2_model, fact_set())


def test_mask_logits_head_only_equals_full_forward(bert, monkeypatch):
    facts = fact_set()
    rows = [hand_query(facts, f, n) for f, n in zip(facts.facts, [1, 3, 2, 3, 1, 2])]
    fast = pm.mask_logits(bert, rows)
    monkeypatch.setattr(pm, "_mlm_head", lambda hf: None)
    slow = pm.mask_logits(bert, rows)
    assert [x.shape for x in fast] == [(n, len(VOCAB)) for n in [1, 3, 2, 3, 1, 2]]
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_zhao_mask_count_comes_from_all_objects_of_the_relation(bert, monkeypatch):
    """M is the longest object among all of the (language, relation)'s objects (its
    candidates), so probing a `head` or a `split` part gives every fact the verdict it
    has in the whole set, although the longest gold objects may be left out."""
    o = {w: ID[w] for w in OBJECTS}
    made = {  # (uuid, lang) -> the predicted ids for m = 1, 2, 3
        ("u0", "en"): [[o["o1"]], [o["o1"], o["o3"]], [o["o4"], o["o2"], o["o5"]]],  # partial, m=3
        ("u1", "en"): [[o["o2"]], [o["o2"], o["o1"]], [o["o1"], o["o1"], o["o0"]]],  # partial, m=3
        ("u2", "en"): [[o["o1"]], [o["o1"], o["o3"]], [o["o3"]] * 3],  # full at m=2
        ("u3", "en"): [[o["o4"]], [o["o4"], o["o5"]], [o["o4"], o["o5"], o["o1"]]],  # neither
        ("u0", "fr"): [[o["o0"]], [o["o3"], o["o2"]]],  # partial at m=2
        ("u2", "fr"): [[o["o3"]], [o["o3"], o["o1"]]],  # partial only (wrong order)
    }
    asked = {}

    def fake(model, facts, group, n_masks, *, batch_size=32):
        for f in group:
            asked.setdefault((f.uuid, f.lang), []).append(n_masks)
        return [made[(f.uuid, f.lang)][n_masks - 1] for f in group]

    monkeypatch.setattr(pm, "greedy_predictions", fake)

    def verdicts(facts):
        asked.clear()
        result = pm.zhao_match(bert, facts, progress=False)
        # every fact is asked with m = 1..M, M = 3 in en and 2 in fr (the candidates' longest)
        assert asked == {k: [1, 2, 3] if k[1] == "en" else [1, 2] for k in asked}
        return {(p["uuid"], p["lang"]): (p["correct"], p["partial"]) for p in result.predictions}

    whole = verdicts(fact_set())
    assert whole == {
        ("u0", "en"): (False, True),
        ("u1", "en"): (False, True),
        ("u2", "en"): (True, True),
        ("u3", "en"): (False, False),
        ("u0", "fr"): (False, True),
        ("u2", "fr"): (False, True),
    }
    dev, test = fact_set().split(0.5, seed=0)
    head = fact_set().head(2)
    assert [f.uuid for f in head.facts] == ["u0", "u1", "u0"]  # no two- or three-token gold
    assert {f.uuid for f in dev.facts} == {"u0", "u2"}  # no three-token gold
    for part in (head, dev, test):
        got = verdicts(part)
        assert got == {key: whole[key] for key in got}
