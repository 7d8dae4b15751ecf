"""Per-layer language readouts: sentence-embedding similarity (Tang et al. 2024) and the
logit lens on the latent language (Wendler et al. 2024), against independent computations."""

import pytest
import torch
from tiny import bos_ids, language_text, make_random_llama, vocabulary

from mlneurons.data.facts import FactSet
from mlneurons.data.parallel import builtin_parallel_sentences, builtin_parallel_words
from mlneurons.data.questions import load_questions
from mlneurons.errors import UserError
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.methods.readouts import (
    LatentLanguage,
    SentenceSimilarity,
    latent_language,
    prefix_token_ids,
    sentence_similarity,
    translation_prompt,
)

LANGS = ("en", "fr", "zh")


@pytest.fixture(scope="module")
def random_llama(tmp_path_factory):
    import mlneurons

    path = make_random_llama(tmp_path_factory.mktemp("random_llama"), n_layers=3)
    return mlneurons.load_model(str(path), device="cpu")


def _sentences():
    """Parallel "sentences" of different lengths (3 to 9 tokens) in three languages."""
    return {
        lang: [language_text(lang, n, seed=k) for k, n in enumerate((3, 9, 5, 7, 4))]
        for lang in LANGS
    }


def _tid(word):
    return vocabulary().index(word)


# ---------------------------------------------------------------- sentence similarity


def test_ses_equals_per_sentence_run_with_cache(random_llama):
    model = random_llama
    sentences = _sentences()
    result = sentence_similarity(model, sentences, batch_size=3, progress=False)
    n_layers = model.cfg.n_layers
    assert result.languages == list(LANGS) and result.n_sentences == 5
    assert result.similarity.shape == (n_layers, 3, 3)
    pooled = {}  # one unpadded sentence at a time, BOS left out of the mean
    for lang in LANGS:
        rows = []
        for text in sentences[lang]:
            _, cache = model.run_with_cache(
                bos_ids(model, text), names_filter=lambda n: n.endswith("hook_resid_post")
            )
            rows.append(
                torch.stack(
                    [cache[f"blocks.{layer}.hook_resid_post"][0, 1:].mean(0) for layer in range(3)]
                )
            )
        pooled[lang] = torch.stack(rows)  # [item, layer, d_model]
    for i, a in enumerate(LANGS):
        for j, b in enumerate(LANGS):
            cos = torch.nn.functional.cosine_similarity(pooled[a], pooled[b], dim=-1)
            torch.testing.assert_close(result.similarity[:, i, j], cos.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(result.similarity.diagonal(dim1=1, dim2=2), torch.ones(3, 3))
    torch.testing.assert_close(result.similarity, result.similarity.transpose(1, 2))
    off = torch.stack([result.pair(a, b) for a in LANGS for b in LANGS if a != b], 1).mean(1)
    torch.testing.assert_close(result.mean_offdiagonal(), off)
    # centred: each layer's mean embedding over all sentences of all languages subtracted
    centred = sentence_similarity(model, sentences, center=True, progress=False)
    mean = torch.cat([pooled[lang] for lang in LANGS]).mean(0)
    cos = torch.nn.functional.cosine_similarity(pooled["en"] - mean, pooled["zh"] - mean, dim=-1)
    torch.testing.assert_close(centred.pair("en", "zh"), cos.mean(0), atol=1e-5, rtol=0)
    assert centred.settings["center"] is True


def test_ses_padding_changes_nothing(random_llama, tmp_path):
    sentences = _sentences()
    batched = sentence_similarity(random_llama, sentences, batch_size=5, progress=False)
    alone = sentence_similarity(random_llama, sentences, batch_size=1, progress=False)
    torch.testing.assert_close(batched.similarity, alone.similarity, atol=1e-6, rtol=0)
    batched.save(tmp_path)
    back = SentenceSimilarity.load(tmp_path)
    assert back.languages == batched.languages and back.n_sentences == 5
    assert torch.equal(back.similarity, batched.similarity) and back.model == batched.model


def test_ses_refuses_bad_input(planted_model):
    sentences = _sentences()
    with pytest.raises(UserError, match="at least 2 languages"):
        sentence_similarity(planted_model, {"en": sentences["en"]}, progress=False)
    with pytest.raises(UserError, match=r"same number.*'fr': 4"):
        sentence_similarity(
            planted_model, {"en": sentences["en"], "fr": sentences["fr"][:4]}, progress=False
        )
    with pytest.raises(UserError, match="sentence 1 of 'fr' has no tokens"):
        sentence_similarity(planted_model, {"en": ["en1", "en2"], "fr": ["fr1", " "]})
    with pytest.raises(UserError, match="batch_size must be at least 1, got 0"):
        sentence_similarity(planted_model, sentences, batch_size=0)


def test_builtin_parallel_sentences_are_parallel():
    sentences = builtin_parallel_sentences(["en", "zh", "ja"], n=40)
    assert [len(v) for v in sentences.values()] == [40, 40, 40]
    assert sentences["zh"][:30] == load_questions("zh")  # questions first
    facts = FactSet.builtin(languages=["en", "zh", "ja", "ko"])
    uuid = min(f.uuid for f in facts.facts if f.relation == "P30")  # relations in turn
    first = {f.lang: facts.fill(f) for f in facts.facts if f.uuid == uuid}
    assert [sentences[lang][30] for lang in ("en", "zh", "ja")] == [
        first["en"],
        first["zh"],
        first["ja"],
    ]
    only_facts = builtin_parallel_sentences(["en", "ko"])  # no Korean questions: facts only
    assert (only_facts["en"][0], only_facts["ko"][0]) == (first["en"], first["ko"])
    assert len(only_facts["en"]) == len({f.uuid for f in facts.facts})
    with pytest.raises(UserError, match="'xx'"):
        builtin_parallel_sentences(["en", "xx"])


# ---------------------------------------------------------------- logit lens


def test_prefix_token_ids_on_the_tiny_tokenizer(planted_model):
    tokenizer = planted_model.tokenizer
    assert prefix_token_ids(tokenizer, "zh12") == [_tid("zh1"), _tid("zh12")]
    assert prefix_token_ids(tokenizer, "en3") == [_tid("en3")]
    assert prefix_token_ids(tokenizer, "fr0x") == [_tid("fr0")]
    assert prefix_token_ids(tokenizer, "xyz") == []


def _words():
    """Parallel tiny words; item 2's target word shares the token en1 with its English word."""
    return {
        "fr": ["fr1", "fr2", "fr3", "fr4", "fr5", "fr6"],
        "zh": ["zh12", "zh2", "en12", "zh4", "zh5", "zh6"],
        "en": ["en10", "en2", "en1", "en4", "en5", "en6"],
    }


@pytest.mark.parametrize("name", ["planted_model", "gpt2_model"])
def test_logit_lens_equals_output_logits_and_hand_listed_ids(name, request):
    model = request.getfixturevalue(name)
    words = _words()
    result = latent_language(
        model, source="fr", target="zh", words=words, n_shots=2, seed=3, progress=False
    )
    assert result.n_dropped == 1 and result.n_items == 5
    assert [w["target"] for w in result.words] == ["zh12", "zh2", "zh4", "zh5", "zh6"]
    assert result.item_p_target.shape == (5, model.cfg.n_layers)
    # item 0: target zh12 -> tokens zh1, zh12; English en10 -> tokens en1, en10
    hand = {"target": [_tid("zh1"), _tid("zh12")], "en": [_tid("en1"), _tid("en10")]}
    import random

    shots = random.Random("3:0").sample([1, 2, 3, 4, 5], 2)
    prompt = translation_prompt(
        "fr", "zh", [(words["fr"][j], words["zh"][j]) for j in shots], "fr1"
    )
    assert prompt.endswith('Français: "fr1" - 中文: "')
    tokens = torch.tensor([[1, *model.tokenizer(prompt, add_special_tokens=False)["input_ids"]]])
    probs = model(tokens)[0, -1].float().softmax(-1)
    last = model.cfg.n_layers - 1
    torch.testing.assert_close(
        result.item_p_target[0, last], probs[hand["target"]].sum(), atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        result.item_p_english[0, last], probs[hand["en"]].sum(), atol=1e-5, rtol=1e-4
    )


def test_logit_lens_of_an_early_layer_by_hand(planted_model):
    """Layer 0 of the planted Llama: RMSNorm (weight 1) and lm_head written out by hand."""
    model = planted_model
    words = _words()
    result = latent_language(model, source="fr", target="zh", words=words, n_shots=0)
    tokens = bos_ids(model, translation_prompt("fr", "zh", [], "fr1"))
    _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    h = cache["blocks.0.hook_resid_post"][0, -1].double()
    eps = model.original_model.config.rms_norm_eps
    normed = h / torch.sqrt(h.pow(2).mean() + eps)
    probs = (model.original_model.lm_head.weight.double() @ normed).softmax(-1)
    expected = probs[[_tid("zh1"), _tid("zh12")]].sum().float()
    torch.testing.assert_close(result.item_p_target[0, 0], expected, atol=1e-5, rtol=1e-4)


def test_logit_lens_batches_equal_one_prompt_at_a_time(random_llama, tmp_path):
    words = _words()
    options = {"source": "fr", "target": "zh", "words": words, "n_shots": 3, "progress": False}
    batched = latent_language(random_llama, batch_size=4, **options)
    alone = latent_language(random_llama, batch_size=1, **options)
    torch.testing.assert_close(batched.item_p_target, alone.item_p_target, atol=1e-6, rtol=0)
    torch.testing.assert_close(batched.item_p_english, alone.item_p_english, atol=1e-6, rtol=0)
    batched.save(tmp_path)
    back = LatentLanguage.load(tmp_path)
    assert back.words == batched.words and back.n_dropped == 1 and back.n_shots == 3
    assert torch.equal(back.p_target, batched.p_target)


def test_source_words_that_share_tokens_with_english_are_dropped_as_copies(planted_model):
    words = _words()
    words["fr"] = ["fr1", "en2", "fr3", "en40", "fr5", "fr6"]  # en40: prefix token en4
    result = latent_language(planted_model, source="fr", target="zh", words=words, n_shots=1)
    assert (result.n_dropped, result.n_copies, result.n_items) == (1, 2, 3)
    assert [w["source"] for w in result.words] == ["fr1", "fr5", "fr6"]
    kept = latent_language(
        planted_model, source="fr", target="zh", words=words, n_shots=1, drop_copies=False
    )
    assert (kept.n_dropped, kept.n_copies, kept.n_items) == (1, 0, 5)


def test_crossover_layer():
    def make(target, english):
        return LatentLanguage("fr", "zh", torch.tensor([target]), torch.tensor([english]), [], 0)

    assert make([0.1, 0.5, 0.2, 0.6], [0.3, 0.1, 0.4, 0.2]).crossover_layer() == 3
    assert make([0.5, 0.6, 0.7], [0.1, 0.1, 0.1]).crossover_layer() == 0
    assert make([0.1, 0.6, 0.1], [0.3, 0.1, 0.4]).crossover_layer() is None


def test_latent_language_refuses_bad_input(planted_model):
    words = _words()
    ask = lambda **kw: latent_language(  # noqa: E731
        planted_model, **{"source": "fr", "target": "zh", "words": words, **kw}
    )
    with pytest.raises(UserError, match="unknown language 'ja'; available: en, fr, zh$"):
        ask(target="ja")
    with pytest.raises(UserError, match="unknown language 'xx'; available: ar, de, en, es, fr"):
        latent_language(planted_model, source="xx", target="zh")
    with pytest.raises(UserError, match="no English"):
        ask(words={"fr": words["fr"], "zh": words["zh"]})
    with pytest.raises(UserError, match="source and target are both 'zh'"):
        ask(source="zh")
    with pytest.raises(UserError, match="target 'en' is the latent language"):
        ask(target="en")
    with pytest.raises(UserError, match="n_shots=6 needs at least 7 words, but there are 6"):
        ask(n_shots=6)
    with pytest.raises(UserError, match="same number per language"):
        ask(words={**words, "zh": words["zh"][:3]})
    with pytest.raises(UserError, match="all 2 items were dropped"):
        ask(words={"fr": ["fr1", "fr2"], "zh": ["en1", "en2"], "en": ["en1", "en2"]}, n_shots=1)


def test_builtin_parallel_words():
    words = builtin_parallel_words(["fr", "zh", "en"], kinds=["continent"])
    assert len(words["en"]) == 6 and "Europe" in words["en"]
    k = words["en"].index("Europe")
    assert (words["fr"][k], words["zh"][k]) == ("Europe", "欧洲")
    everything = builtin_parallel_words(["fr", "zh", "en"])
    assert len(set(zip(*everything.values()))) == len(everything["en"]) > 200
    with pytest.raises(UserError, match="unknown kind of word 'city'"):
        builtin_parallel_words(["fr", "en"], kinds=["city"])


# ---------------------------------------------------------------- figures


def test_figures(random_llama):
    from mlneurons.interfaces.plots import (
        plot_latent_language,
        plot_sentence_similarity,
        plot_sentence_similarity_matrix,
    )

    ses = sentence_similarity(random_llama, _sentences(), progress=False)
    neurons = LanguageNeurons({"en": [[0, 1], [2, 3]], "fr": [[2, 5]]}, n_layers=3, d_mlp=48)
    assert len(plot_sentence_similarity(ses, neurons=neurons).axes) == 2
    assert len(plot_sentence_similarity_matrix(ses, -1).axes) == 2  # image and colour bar
    lens = latent_language(
        random_llama, source="fr", target="zh", words=_words(), n_shots=2, progress=False
    )
    assert plot_latent_language(lens).axes[0].get_xlabel() == "layer"


@pytest.mark.slow
def test_gemma_logit_lens_last_layer_is_the_output(gemma):
    words = builtin_parallel_words(["fr", "zh", "en"], kinds=["continent"])
    result = latent_language(
        gemma, source="fr", target="zh", words=words, n_shots=3, drop_copies=False
    )
    assert result.n_items + result.n_dropped == 6 and result.n_layers == 18
    assert _tid_gemma(gemma, "Asia") <= set(prefix_token_ids(gemma.tokenizer, "Asia"))
    import random

    k = 0
    shots = random.Random(f"0:{k}").sample(range(1, 6), 3)
    prompt = translation_prompt(
        "fr", "zh", [(words["fr"][j], words["zh"][j]) for j in shots], words["fr"][k]
    )
    tokens = gemma.tokenizer(prompt, return_tensors="pt")["input_ids"]
    probs = gemma(tokens)[0, -1].float().softmax(-1)
    ids = prefix_token_ids(gemma.tokenizer, result.words[0]["target"])
    assert result.words[0]["source"] == words["fr"][0]
    torch.testing.assert_close(result.item_p_target[0, -1], probs[ids].sum(), atol=1e-4, rtol=1e-3)


def _tid_gemma(model, word):
    """Ids of ``word`` and ``" " + word`` when each is one token."""
    found = set()
    for text in (word, " " + word):
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            found.add(ids[0])
    return found
