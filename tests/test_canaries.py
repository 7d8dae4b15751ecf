"""Exactness canaries catch a broken fast path; cached paths are exact on every architecture;
results record what they were computed with."""

import pytest
import torch
from tiny import make_bloom, make_gpt2, make_random_llama, tiny_facts

import mlneurons
from mlneurons import MultilingualCorpus
from mlneurons.methods import lrp2
from mlneurons.methods.probing import causal as probing
from mlneurons.models import fingerprint as models
from mlneurons.models import generation
from mlneurons.models.canary import FastPathMismatch, verify
from mlneurons.provenance import versions
from mlneurons.stats import activation as stats
from mlneurons.stats import collector

MAKERS = {"llama": make_random_llama, "gpt2": make_gpt2, "bloom": make_bloom}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    return {
        name: make(tmp_path_factory.mktemp(name), n_layers=3, seed=1)
        for name, make in MAKERS.items()
    }


def fresh(model_dirs, name="llama", **kwargs):
    """A newly loaded model: the canaries run once per model, so each test needs its own."""
    return mlneurons.load_model(str(model_dirs[name]), device="cpu", **kwargs)


def empty_cache(cache, rows):
    from transformers import DynamicCache

    return DynamicCache()


def ignore_past(self, k, v, **kwargs):
    return k, v


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_cached_scoring_equals_full_forwards(model_dirs, name):
    """The shared-prefix cache (transformers 5.24 passes it as ``cache=``) is exact."""
    model = fresh(model_dirs, name)
    ids = [[1, 5, 9, 33, 34], [1, 5, 9, 40, 41, 42, 43], [1, 5, 9, 60]]
    exact = probing.full_forward_scores(model, ids, 3)
    fast = probing.batch_scores(model, probing.id_batches(ids, batch_size=2))
    assert exact.std() > 0.1  # the candidates differ
    torch.testing.assert_close(fast, exact, rtol=1e-5, atol=1e-4)
    probing.check_cached_scoring(model)
    assert model._mlneurons_canaries["shared-prefix cached candidate scoring"] < 1e-3


def test_cached_scoring_canary_catches_a_cache_that_forgets_the_prefix(model_dirs, monkeypatch):
    model = fresh(model_dirs)
    monkeypatch.setattr(probing, "repeated_cache", empty_cache)
    with pytest.raises(FastPathMismatch) as error:
        probing.candidate_scores(model, ["en1 en2 fr3", "en1 en2 fr4 fr5"])
    message = str(error.value)
    assert "shared-prefix cached candidate scoring" in message
    assert f"transformers {versions()['transformers']}" in message
    assert "transformer-lens" in message and "differs from the exact path by up to" in message
    # Not marked as checked: the next call checks (and fails) again.
    with pytest.raises(FastPathMismatch):
        probing.candidate_scores(model, ["en1 en2 fr3", "en1 en2 fr4 fr5"])


def test_canary_runs_once_per_model(model_dirs, monkeypatch):
    model = fresh(model_dirs)
    calls = []
    original = probing.full_forward_scores
    monkeypatch.setattr(
        probing, "full_forward_scores", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    for _ in range(3):
        probing.candidate_scores(model, ["en1 en2 fr3", "en1 en2 fr4 fr5"])
    assert len(calls) == 1
    probing.candidate_scores(fresh(model_dirs), ["en1 en2 fr3", "en1 en2 fr4"])
    assert len(calls) == 2


def test_statistics_canary_catches_counters_on_the_wrong_layers(model_dirs, monkeypatch):
    model = fresh(model_dirs)
    right = collector.act_fn_modules(model)
    monkeypatch.setattr(collector, "act_fn_modules", lambda m: right[::-1])
    corpus = MultilingualCorpus({"en": lambda: ["en1 en2 en3 en4 en5"]}, seq_len=6)
    with pytest.raises(FastPathMismatch, match=r"statistics pass \(unwrapped HF modules\)"):
        stats.collect_activation_stats(model, corpus, progress=False)


def test_statistics_canary_passes_and_is_exact(model_dirs):
    model = fresh(model_dirs)
    collector.check_statistics_pass(model)
    assert model._mlneurons_canaries["statistics pass (unwrapped HF modules)"] < 1e-5


def test_block_replay_canary_catches_a_replay_that_forgets_the_prefix(model_dirs, monkeypatch):
    model = fresh(model_dirs)
    probing.check_cached_scoring(model)  # the exact path is sound
    monkeypatch.setattr(lrp2, "repeated_cache", empty_cache)
    facts = tiny_facts().subset(["en"])
    fact = facts.facts[0]
    sentences = [facts.fill(fact, c) for c in facts.candidates[("en", "P1")]]
    vectors = lrp2.LanguageVectors(
        ["en", "de"], torch.randn(2, 3, 32), [1, 1], mlneurons.fingerprint(model)
    )
    with pytest.raises(FastPathMismatch, match="LRP2 block replay"):
        lrp2.projection_grid_scores(model, sentences, vectors, "de", [(0, 2)])


def test_block_replay_canary_passes(model_dirs):
    for name in MAKERS:
        model = fresh(model_dirs, name)
        lrp2.check_block_replay(model)
        assert model._mlneurons_canaries["LRP2 block replay"] < 1e-3


def test_generation_canary_catches_attention_that_ignores_the_cache(model_dirs, monkeypatch):
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    model = fresh(model_dirs)
    generation.check_cached_generation(model)  # sound as installed
    model = fresh(model_dirs)
    monkeypatch.setattr(AttentionBridge, "_update_kv_cache", ignore_past)
    with pytest.raises(FastPathMismatch, match="cached batched generation"):
        generation.generate_answers(model, ["en1 en2", "fr1 fr2 fr3"], progress=False)


def test_verify_compares_shapes_and_tolerances():
    class Model:
        pass

    model = Model()
    assert verify(model, "a", lambda: (torch.tensor([1.0]), torch.tensor([1.00001]))) < 1e-4
    with pytest.raises(FastPathMismatch, match="b: the fast path differs"):
        verify(model, "b", lambda: (torch.tensor([1.0]), torch.tensor([1.01])))
    with pytest.raises(FastPathMismatch, match="c: the fast path gave shape"):
        verify(model, "c", lambda: (torch.zeros(2), torch.zeros(3)))


def test_fingerprint_ignores_dtype_and_sees_edits(model_dirs):
    model = fresh(model_dirs)
    first = mlneurons.fingerprint(model)
    assert first["dtype"] == "float32" and first["edited"] is False
    half = mlneurons.fingerprint(fresh(model_dirs, dtype=torch.bfloat16))
    assert half["hash"] == first["hash"] and half["dtype"] == "bfloat16"
    other = mlneurons.fingerprint(fresh(model_dirs, "gpt2"))
    assert other["hash"] != first["hash"]
    with torch.no_grad():
        model.original_model.model.layers[0].mlp.down_proj.weight[0, 0] += 1.0
    edited = mlneurons.fingerprint(model)
    assert edited["edited"] is True and edited["hash"] != first["hash"]
    assert mlneurons.fingerprint(model)["hash"] == edited["hash"]  # stable until the next edit


def test_checkpoint_hash_is_cached_by_file_version(model_dirs, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("MLNEURONS_CACHE", str(tmp_path / "cache"))
    copy = shutil.copytree(model_dirs["llama"], tmp_path / "copy")
    first = models.checkpoint_hash(copy)
    assert models.checkpoint_hash(model_dirs["llama"]) == first  # same bytes, same hash
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert models.checkpoint_hash(copy) != first


def test_saved_results_record_versions_and_lock_hash(model_dirs, tmp_path):
    model = fresh(model_dirs)
    corpus = MultilingualCorpus({"en": lambda: ["en1 en2 en3 en4 en5"]}, seq_len=6)
    result = stats.collect_activation_stats(model, corpus, progress=False)
    result.save(tmp_path)
    saved = stats.ActivationStats.load(tmp_path).model
    assert saved["provenance"]["versions"] == versions()
    assert set(versions()) == {"mlneurons", "torch", "transformers", "transformer-lens"}
    assert saved["provenance"]["lock_hash"] and len(saved["provenance"]["lock_hash"]) == 16
    assert saved["dtype"] == "float32"
