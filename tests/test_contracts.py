"""Small contracts of the core modules that mutation testing found unchecked.

Each test pins a value or a message that a one-token change of the code would alter
(see bench/mutation.py).
"""

import pytest
import torch
from typecheck import REFUSED

import mlneurons
from mlneurons import LanguageNeurons
from mlneurons.evaluation.perplexity import _masked_post
from mlneurons.methods.deactivation import PerplexityMatrix
from mlneurons.methods.interventions import activate
from mlneurons.methods.lrp2 import LanguageVectors, evaluate_lrp2
from mlneurons.methods.probeless import FactNeurons
from mlneurons.stats.activation import ActivationStats


def test_activate_checks_the_neurons_model(planted_model):
    other = LanguageNeurons({"fr": torch.tensor([[0, 1]])}, 2, 32, model={"name": "x", "hash": "a"})
    with pytest.raises(ValueError, match="selected on model 'x'"):
        activate(other, 1.0, model=planted_model)


def test_masked_post_keeps_the_activation_dtype():
    act = torch.full((2, 3, 4), 2.0, dtype=torch.bfloat16)
    keep = torch.tensor([[[1.0, 0.0, 1.0, 1.0]], [[0.0, 1.0, 1.0, 1.0]]])  # [row, layer, neuron]
    out = _masked_post(act, hook=None, layer=0, state={"keep": keep})
    assert out.dtype == torch.bfloat16
    assert out[0, :, 1].tolist() == [0.0] * 3 and out[1, :, 0].tolist() == [0.0] * 3
    assert out[0, :, 0].tolist() == [2.0] * 3


def test_difference_is_long_even_when_empty():
    neurons = LanguageNeurons({"a": [[0, 1]], "b": [[0, 1], [1, 2]]}, 2, 4)
    assert neurons.difference("b", "a").tolist() == [[1, 2]]
    none = neurons.difference("a", "b")
    assert none.dtype == torch.long and none.shape == (0, 2)


def test_reference_mask_infers_d_mlp_and_records_its_source(tmp_path):
    path = tmp_path / "m.pth"
    torch.save(
        [[torch.tensor([2]), torch.tensor([6, 1])], [torch.tensor([], dtype=torch.long)] * 2], path
    )
    neurons = LanguageNeurons.from_reference_mask(path, ["en", "fr"])
    assert (neurons.n_layers, neurons.d_mlp) == (2, 7)  # largest index 6, plus one
    assert neurons["en"].tolist() == [[0, 2], [1, 1], [1, 6]] and neurons["fr"].tolist() == []
    assert neurons.constants == {"source": str(path)}
    torch.save([[torch.tensor([], dtype=torch.long)]] * 2, path)
    assert LanguageNeurons.from_reference_mask(path, ["en", "fr"]).d_mlp == 1
    torch.save({"en": []}, path)
    with pytest.raises(ValueError, match="is not a LAPE mask"):
        LanguageNeurons.from_reference_mask(path, ["en"])


def test_fact_neurons_save_load_round_trip(tmp_path):
    neurons = {"en": {"u1": torch.tensor([[1, 3], [0, 2]])}, "fr": {"u1": torch.tensor([[1, 3]])}}
    saved = FactNeurons(["en", "fr"], 2, neurons, 3, 5, {"name": "m", "hash": "h"})
    saved.save(tmp_path)
    back = FactNeurons.load(tmp_path)
    assert (back.languages, back.k, back.n_layers, back.d_mlp) == (["en", "fr"], 2, 3, 5)
    assert back.model == {"name": "m", "hash": "h"}
    assert {
        lang: {u: p.tolist() for u, p in per.items()} for lang, per in back.neurons.items()
    } == {
        "en": {"u1": [[1, 3], [0, 2]]},
        "fr": {"u1": [[1, 3]]},
    }
    assert back.overlap()["en"]["fr"] == pytest.approx(1 / 2)


def test_merging_statistics_of_two_models_names_both():
    a = ActivationStats.empty(["en"], 1, 2, model={"name": "m1", "hash": "h1"})
    b = ActivationStats.empty(["fr"], 1, 2, model={"name": "m2", "hash": "h2"})
    with pytest.raises(ValueError, match=r"'m1' \(h1\) and 'm2' \(h2\)"):
        a + b


def test_perplexity_matrix_save_load_round_trip(tmp_path):
    matrix = PerplexityMatrix(
        ["en", "fr"],
        {"en": 2.0, "fr": 4.0},
        {"en": {"en": 3.0, "fr": 4.0}, "fr": {"en": 2.0, "fr": 8.0}},
        {"en": {"en": 2.0, "fr": 4.0}, "fr": {"en": 2.0, "fr": 4.0}},
        10,
        {"name": "m"},
    )
    matrix.save(tmp_path)
    back = PerplexityMatrix.load(tmp_path)
    assert back == matrix
    assert back.relative_change().tolist() == [[0.5, 0.0], [0.0, 1.0]]
    assert back.diagonal_dominance() == {"en": True, "fr": True}


def test_lrp2_default_layers_on_a_two_block_model(planted_model):
    from tiny import tiny_facts

    vectors = LanguageVectors(["en", "de"], torch.zeros(2, 2, planted_model.cfg.d_model), [1, 1])
    vectors.model = mlneurons.fingerprint(planted_model)
    # every third block of two is block 0 alone: too few for a (LIRP, LSRP) pair
    with pytest.raises(ValueError, match=r"layers 0: give at least two layers in 0\.\.1"):
        evaluate_lrp2(planted_model, tiny_facts(), vectors, progress=False)


def test_lrp2_default_layers_are_every_third_block(monkeypatch):
    from types import SimpleNamespace

    from tiny import tiny_facts

    import mlneurons.methods.lrp2 as lrp2

    class Probed(Exception):
        pass

    def probe(*args, **kwargs):
        raise Probed

    monkeypatch.setattr(lrp2, "probe", probe)
    model = SimpleNamespace(cfg=SimpleNamespace(n_layers=4))  # never run: probe is stubbed
    vectors = LanguageVectors(["en", "de"], torch.zeros(2, 4, 8), [1, 1])
    with pytest.raises(Probed):  # blocks 0 and 3 make a pair: probing starts
        evaluate_lrp2(model, tiny_facts(), vectors, progress=False)


def test_projection_names_the_vectors_of_another_model(planted_model):
    from mlneurons.methods.lrp2 import projection

    d_model = planted_model.cfg.d_model
    vectors = LanguageVectors(
        ["en", "fr"], torch.zeros(2, 2, d_model), [1, 1], {"name": "x", "hash": "a"}
    )
    with pytest.raises(ValueError, match="these language vectors was computed on model 'x'"):
        projection(vectors, "fr", lirp_layer=0, lsrp_layer=1, model=planted_model)


def test_statistics_that_never_fire_are_refused(planted_model, monkeypatch):
    import mlneurons.stats.activation as stats
    import mlneurons.stats.collector as collector
    from mlneurons import MultilingualCorpus

    monkeypatch.setattr(collector, "check_statistics_pass", lambda model: None)
    monkeypatch.setattr(collector, "run_body", lambda model, batch, **kw: None)  # no hook fires
    corpus = MultilingualCorpus({"en": lambda: ["en1 en2 en3 en4"]}, seq_len=4)
    with pytest.raises(RuntimeError, match="did not fire in every layer"):
        stats.collect_activation_stats(planted_model, corpus, progress=False)


def test_shape_messages_name_the_shape_given():
    shape = r"(?s)token_counts must have shape \(2,\), got \(3,\)|'token_counts'.*i64\[3\]"
    with pytest.raises(REFUSED, match=shape):
        ActivationStats(
            ["en", "fr"],
            torch.zeros(2, 1, 2, dtype=torch.int64),
            torch.zeros(2, 1, 2, dtype=torch.float64),
            torch.zeros(3, dtype=torch.int64),
        )
    from mlneurons.methods.lape import as_pairs

    with pytest.raises(ValueError, match=r"\[layer, neuron\], got shape \(1, 2, 3\)"):
        as_pairs(torch.zeros(1, 2, 3, dtype=torch.bool))


def test_probe_result_save_load_keeps_the_model(tmp_path):
    from mlneurons.methods.probing.result import ProbeResult

    prediction = {"uuid": "u", "lang": "en", "relation": "P1", "gold": "a", "predicted": "a"}
    result = ProbeResult(["en"], ["P1"], [dict(prediction, correct=True)], {"name": "m"}, {"k": 1})
    back = ProbeResult.load(result.save(tmp_path))
    assert (back.model, back.settings) == ({"name": "m"}, {"k": 1})
    assert back == result


def test_sentence_ids_start_with_one_bos(tmp_path):
    from tiny import make_tokenizer

    from mlneurons.models.tokens import sentence_ids

    plain = make_tokenizer(tmp_path)  # adds no special tokens of its own
    words = plain("en1 en2", add_special_tokens=False)["input_ids"]
    assert plain("en1 en2")["input_ids"] == words
    assert sentence_ids(plain, "en1 en2") == [1, *words]
    assert sentence_ids(plain, "<bos> en1 en2") == [1, *words]


def test_fact_neurons_defaults_and_overlap_without_shared_facts(planted_model):
    from tiny import tiny_facts

    from mlneurons.methods.probeless import fact_neurons

    correct = {("f1", "en"): True, ("f3", "en"): True}
    result = fact_neurons(planted_model, tiny_facts(), correct, progress=False)
    assert (result.languages, result.k, result.n_layers, result.d_mlp) == (["en"], 50, 2, 32)
    assert result.model == mlneurons.fingerprint(planted_model)
    assert [p.shape for p in result.neurons["en"].values()] == [(50, 2), (50, 2)]
    with pytest.raises(ValueError, match=r"k must be in 1\.\.64, got 65"):
        fact_neurons(planted_model, tiny_facts(), correct, k=65, progress=False)
    apart = FactNeurons(
        ["en", "fr"],
        1,
        {"en": {"u1": torch.tensor([[0, 1]])}, "fr": {"u2": torch.tensor([[0, 1]])}},
        1,
        2,
    )
    assert apart.overlap() == {"en": {"en": 1.0, "fr": None}, "fr": {"en": None, "fr": 1.0}}


def test_fast_statistics_need_one_act_fn_module_per_layer(planted_model, monkeypatch):
    import mlneurons.stats.collector as collector

    own = collector.act_fn_modules(planted_model)
    assert len(own) == 2 and own[0] is not own[1]
    shared = own[0]  # MLPs that share one module cannot be told apart by its hooks
    monkeypatch.setattr(collector, "mlp_neuron_hook", lambda model, layer: ("hook", shared))
    assert collector.act_fn_modules(planted_model) is None
