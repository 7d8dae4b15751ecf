"""Integration on the built-in Gemma 3 270M (de-quantised once into the user cache)."""

import json

import pytest
import torch

import mlneurons
from mlneurons import MultilingualCorpus, lape
from mlneurons.interventions import deactivate, intervene

pytestmark = pytest.mark.slow


def test_gemma_lape_small_budget(gemma, tmp_path):
    fp = mlneurons.fingerprint(gemma)
    assert (fp["n_layers"], fp["d_mlp"]) == (18, 2048)
    corpus = MultilingualCorpus.builtin(["en", "zh", "ja"], seq_len=64, tokens_per_language=126)
    stats = mlneurons.collect_activation_stats(gemma, corpus, batch_size=2, progress=False)
    assert stats.token_counts.tolist() == [126, 126, 126]  # 2 rows of 63 language tokens

    # The counts equal an independent count from run_with_cache on the bridge's full forward.
    rows = torch.cat(list(corpus.rows("zh", gemma.tokenizer)))
    _, cache = gemma.run_with_cache(rows, names_filter=lambda n: n.endswith("mlp.hook_pre"))
    fires = torch.stack(
        [(cache[f"blocks.{layer}.mlp.hook_pre"][:, 1:] > 0).sum((0, 1)) for layer in range(18)]
    )
    assert torch.equal(stats.fire_counts[1], fires)

    neurons = lape.select(stats.activation_probs, stats.languages, model=stats.model)
    assert neurons.model == fp
    neurons.save(tmp_path)
    assert json.loads((tmp_path / "neurons.json").read_text()).keys() == {"en", "zh", "ja"}

    # Deactivating the Chinese neurons hurts Chinese text more than English text.
    text = {lang: torch.cat(list(corpus.rows(lang, gemma.tokenizer)))[:1] for lang in ("en", "zh")}
    base = {lang: gemma(t, return_type="loss").item() for lang, t in text.items()}
    with intervene(gemma, deactivate(neurons["zh"], model=gemma)):
        hit = {lang: gemma(t, return_type="loss").item() for lang, t in text.items()}
    assert hit["zh"] - base["zh"] > hit["en"] - base["en"]


def test_gemma_candidate_scores_match_full_forward(gemma):
    """The shared-prefix KV-cache reuse is exact on Gemma's hybrid sliding-window cache."""
    from mlneurons.probing import candidate_scores

    sentences = [
        "The capital of France is Paris.",
        "The capital of France is Lyon.",
        "The capital of France is Saint-Étienne.",
    ]
    scores = candidate_scores(gemma, sentences, batch_size=2)
    full = []
    for s in sentences:
        ids = gemma.tokenizer(s, return_tensors="pt")["input_ids"]
        logp = torch.log_softmax(gemma(ids)[0, :-1].double(), -1)
        full.append(logp.gather(-1, ids[0, 1:, None]).sum().item())
    full = torch.tensor(full, dtype=torch.float64)
    torch.testing.assert_close((scores - scores[0]).double(), full - full[0], rtol=1e-3, atol=2e-3)
    assert scores.argmax() == 0  # Paris
