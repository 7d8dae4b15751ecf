"""Integration on the built-in Gemma 3 270M (de-quantised once into the user cache)."""

import json

import pytest
import torch

import mlneurons
from mlneurons import MultilingualCorpus
from mlneurons.methods import lape
from mlneurons.methods.interventions import deactivate, intervene

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
    from mlneurons.methods.probing.causal import candidate_scores

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


def test_gemma_scoring_modes_against_hugging_face(gemma):
    """sentence-ce is the cross-entropy Hugging Face's own loss gives (RankC's computation),
    and the object's tokens are found by character offsets with Gemma's own BOS."""
    from mlneurons.data.facts import Fact, FactSet
    from mlneurons.methods.probing.causal import candidate_scores

    facts = FactSet(
        [Fact("u", "zh", "P36", "日本", "东京")],
        {("zh", "P36"): "[X]的首都是[Y]。"},
        {("zh", "P36"): ["东京", "大阪", "名古屋"]},
    )
    filled = [facts.fill_spans(facts.facts[0], c) for c in facts.candidates[("zh", "P36")]]
    texts, spans = [t for t, _ in filled], [s for _, s in filled]
    ce = candidate_scores(gemma, texts, scoring="sentence-ce", spans=spans)
    sums = candidate_scores(gemma, texts, scoring="sum", spans=spans)
    hf = gemma.original_model
    for k, text in enumerate(texts):
        ids = gemma.tokenizer(text, return_tensors="pt")["input_ids"]
        assert ids[0, 0] == gemma.tokenizer.bos_token_id
        with torch.no_grad():
            loss = hf(input_ids=ids, labels=ids).loss.item()
            logp = torch.log_softmax(hf(input_ids=ids).logits[0, :-1].double(), -1)
        assert ce[k].item() == pytest.approx(-loss, abs=1e-4)
        # the object's tokens by decoding prefixes: the first that reaches into the object to
        # the first that covers it (the final "。" not among them)
        per_token = logp.gather(-1, ids[0, 1:, None])[:, 0]
        pieces = [gemma.tokenizer.decode(ids[0, 1 : t + 1]) for t in range(ids.shape[1])]
        first = next(t for t in range(1, len(pieces)) if len(pieces[t]) > spans[k][0][0])
        last = next(t for t in range(1, len(pieces)) if len(pieces[t]) >= spans[k][0][1])
        assert sums[k].item() == pytest.approx(per_token[first - 1 : last].sum().item(), abs=1e-3)


def test_gemma_shared_lrp2_grid_equals_projection_hooks(gemma):
    """Block replay matches the hooks on Gemma's hybrid cache (sliding-window and global layer
    types; these prompts are shorter than the 512-token window)."""
    from mlneurons.data.facts import FactSet
    from mlneurons.methods.lrp2 import language_vectors, projection, projection_grid_scores
    from mlneurons.methods.probing.causal import candidate_scores

    corpus = MultilingualCorpus.builtin(["en", "de"])
    vectors = language_vectors(gemma, corpus, max_sentences=8, max_tokens=32, progress=False)
    facts = FactSet.builtin().subset(["de"], ["P30"]).head(1)
    fact = facts.facts[0]
    sentences = [facts.fill(fact, c) for c in facts.candidates[("de", "P30")]]
    pairs = [(3, 9), (3, 17), (9, 17)]
    shared = projection_grid_scores(gemma, sentences, vectors, "de", pairs, batch_size=4)
    plain = candidate_scores(gemma, sentences, batch_size=4)
    assert max((shared[p] - plain).abs().max() for p in pairs) > 1e-2  # projections matter
    for i, j in pairs:
        with intervene(gemma, projection(vectors, "de", lirp_layer=i, lsrp_layer=j)):
            naive = candidate_scores(gemma, sentences, batch_size=4)
        torch.testing.assert_close(shared[(i, j)], naive, rtol=1e-4, atol=2e-3)
