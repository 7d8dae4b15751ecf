import pytest
import torch
from tiny import LANGS, language_text
from typecheck import REFUSED

import mlneurons
from mlneurons import ActivationStats, MultilingualCorpus
from mlneurons.models.hooks import mlp_neuron_hook


def _token_corpus(model, n_words=700, **options):
    tok = model.tokenizer
    ids = {
        lang: torch.tensor(tok(language_text(lang, n_words), add_special_tokens=False)["input_ids"])
        for lang in LANGS
    }
    return MultilingualCorpus.from_token_ids(ids, **options), ids


def _independent_stats(model, corpus):
    """Counts and sums from run_with_cache over the same rows (full forward, logits and all)."""
    n_layers = model.cfg.n_layers
    fires = torch.zeros(len(corpus.languages), n_layers, model.cfg.d_mlp, dtype=torch.int64)
    sums = torch.zeros(fires.shape, dtype=torch.float64)
    tokens = torch.zeros(len(corpus.languages), dtype=torch.int64)
    start = 1 if corpus.bos_id(model.tokenizer) is not None else 0
    for li, lang in enumerate(corpus.languages):
        for row in corpus.rows(lang, model.tokenizer, batch_size=1):
            _, cache = model.run_with_cache(row, names_filter=lambda n: "mlp" in n)
            tokens[li] += row[:, start:].numel()
            for layer in range(n_layers):
                pre = cache[f"blocks.{layer}.mlp.hook_pre"][0, start:]
                fires[li, layer] += (pre > 0).sum(0)
                if model.cfg.gated_mlp:  # hook_post = act_fn(gate) * up
                    act = (
                        cache[f"blocks.{layer}.mlp.hook_post"][0, start:]
                        / cache[f"blocks.{layer}.mlp.in.hook_out"][0, start:]
                    )
                else:  # GPT-2: act_fn(hook_pre), computed here from the pre-activation
                    from transformers.activations import ACT2FN

                    act = ACT2FN["gelu_new"](pre)
                sums[li, layer] += act.double().sum(0)
    return fires, sums, tokens


@pytest.mark.parametrize("model_fixture", ["planted_model", "gpt2_model"])
def test_stats_equal_run_with_cache(model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    corpus, _ = _token_corpus(model, seq_len=32)
    stats = mlneurons.collect_activation_stats(model, corpus, batch_size=3, progress=False)
    fires, sums, tokens = _independent_stats(model, corpus)
    assert torch.equal(stats.token_counts, tokens)
    assert torch.equal(stats.fire_counts, fires)
    torch.testing.assert_close(stats.activation_sums, sums, rtol=1e-4, atol=1e-3)
    assert stats.activation_probs.shape == (len(LANGS), model.cfg.n_layers, model.cfg.d_mlp)
    torch.testing.assert_close(stats.activation_probs, (fires / tokens[:, None, None]).float())


def test_packing_counts_exactly_the_tokens_fed(planted_model):
    corpus, ids = _token_corpus(planted_model, seq_len=33)  # 32 language tokens + BOS per row
    stats = mlneurons.collect_activation_stats(planted_model, corpus, batch_size=5, progress=False)
    expected = [len(ids[lang]) // 32 * 32 for lang in LANGS]  # the last partial row is dropped
    assert stats.token_counts.tolist() == expected
    rows = torch.cat(list(corpus.rows("fr", planted_model.tokenizer, batch_size=4)))
    assert (rows[:, 0] == planted_model.tokenizer.bos_token_id).all()
    assert torch.equal(rows[:, 1:].flatten(), ids["fr"][: rows.shape[0] * 32])

    budget = MultilingualCorpus.from_token_ids(ids, seq_len=33, tokens_per_language=100)
    stats = mlneurons.collect_activation_stats(planted_model, budget, progress=False)
    assert stats.token_counts.tolist() == [96] * len(LANGS)  # 3 whole rows of 32


def test_text_corpus_without_bos(planted_model, tmp_path):
    for lang in LANGS:
        (tmp_path / f"{lang}.txt").write_text(language_text(lang, 200) + "\n")
    corpus = MultilingualCorpus.from_files(tmp_path, seq_len=50, add_bos=False)
    assert corpus.languages == sorted(LANGS)
    stats = mlneurons.collect_activation_stats(planted_model, corpus, progress=False)
    assert stats.token_counts.tolist() == [200] * len(LANGS)  # 4 rows of 50, one word per token


def test_interrupted_run_resumes_to_identical_totals(planted_model, tmp_path):
    corpus, _ = _token_corpus(planted_model, seq_len=16)
    options = dict(batch_size=2, checkpoint_every=3, progress=False)
    full = mlneurons.collect_activation_stats(
        planted_model, corpus, checkpoint=tmp_path / "a.safetensors", **options
    )

    calls = {"n": 0}

    def crash_after_some_batches(act, *, hook):
        calls["n"] += 1
        if calls["n"] == 23:
            raise KeyboardInterrupt

    ckpt = tmp_path / "b.safetensors"
    with pytest.raises(KeyboardInterrupt):
        with planted_model.hooks(fwd_hooks=[("blocks.0.mlp.hook_pre", crash_after_some_batches)]):
            mlneurons.collect_activation_stats(planted_model, corpus, checkpoint=ckpt, **options)
    assert ckpt.exists()
    partial = ActivationStats.load(ckpt)
    assert 0 < partial.token_counts.sum() < full.token_counts.sum()
    assert not any(hp.fwd_hooks for hp in planted_model.hook_dict.values())  # nothing leaked

    resumed = mlneurons.collect_activation_stats(planted_model, corpus, checkpoint=ckpt, **options)
    assert torch.equal(resumed.token_counts, full.token_counts)
    assert torch.equal(resumed.fire_counts, full.fire_counts)
    assert torch.equal(resumed.activation_sums, full.activation_sums)


def test_merge_save_load(planted_model, tmp_path):
    corpus, ids = _token_corpus(planted_model, seq_len=32)
    whole = mlneurons.collect_activation_stats(planted_model, corpus, progress=False)
    a = mlneurons.collect_activation_stats(
        planted_model, corpus.subset(["en", "fr"]), progress=False
    )
    b = mlneurons.collect_activation_stats(
        planted_model, corpus.subset(["zh", "ja"]), progress=False
    )
    merged = a + b
    assert merged.languages == list(LANGS)
    assert torch.equal(merged.fire_counts, whole.fire_counts)
    doubled = whole + whole
    assert torch.equal(doubled.token_counts, 2 * whole.token_counts)
    torch.testing.assert_close(doubled.activation_probs, whole.activation_probs)

    path = whole.save(tmp_path / "out")
    assert path.name == "stats.safetensors"
    back = ActivationStats.load(tmp_path / "out")
    assert back.languages == whole.languages and back.model == whole.model
    assert torch.equal(back.fire_counts, whole.fire_counts)
    assert torch.equal(back.activation_sums, whole.activation_sums)
    assert back.select(["ja", "en"]).languages == ["ja", "en"]

    other = ActivationStats.empty(["en"], 2, 32, model={"name": "x", "hash": "different"})
    with pytest.raises(ValueError, match="different models"):
        whole + other


def test_bad_corpus_input(planted_model):
    corpus, ids = _token_corpus(planted_model, seq_len=32)
    with pytest.raises(ValueError, match="unknown languages \\['xx'\\]"):
        corpus.subset(["en", "xx"])
    short = MultilingualCorpus.from_token_ids({"en": ids["en"], "fr": ids["fr"][:10]}, seq_len=32)
    with pytest.raises(ValueError, match="'fr' has fewer than one row"):
        mlneurons.collect_activation_stats(planted_model, short, progress=False)
    with pytest.raises(ValueError, match="less than one row"):
        list(
            MultilingualCorpus.from_token_ids(ids, seq_len=32, tokens_per_language=8).rows(
                "en", planted_model.tokenizer
            )
        )
    with pytest.raises(REFUSED, match="1-D integer|f32\\[5\\]"):
        MultilingualCorpus.from_token_ids({"en": torch.rand(5)})
    with pytest.raises(ValueError, match="Unknown|unknown"):
        MultilingualCorpus.builtin(["en", "xx"])


def test_model_without_mlp_hooks_is_rejected(planted_model):
    class NoMlp:
        cfg = planted_model.cfg
        blocks = [object(), object()]
        hook_dict: dict = {}

    with pytest.raises(ValueError, match="no MLP hook points"):
        mlp_neuron_hook(NoMlp(), 0)


def test_datasets_source(planted_model):
    from datasets import Dataset

    rows = [
        {"text": language_text(lang, 100, seed=i), "lang": lang} for lang in LANGS for i in range(3)
    ]
    corpus = MultilingualCorpus.from_dataset(
        Dataset.from_list(rows), language_column="lang", languages=["fr", "en"], seq_len=51
    )
    stats = mlneurons.collect_activation_stats(planted_model, corpus, progress=False)
    assert stats.languages == ["fr", "en"]
    assert stats.token_counts.tolist() == [300, 300]  # 6 rows of 50 words each
    with pytest.raises(ValueError, match="not in the dataset"):
        MultilingualCorpus.from_dataset(
            Dataset.from_list(rows), language_column="lang", languages=["de"]
        )


def test_unwrapped_fast_path_equals_hooked_bridge_path(planted_model):
    """Without TransformerLens hooks the collector runs the plain HF modules; with any hook
    attached it runs through the bridge. Both give identical statistics."""
    from mlneurons.models.hooks import hooks_attached

    corpus, _ = _token_corpus(planted_model, seq_len=32)
    fast = mlneurons.collect_activation_stats(planted_model, corpus, batch_size=3, progress=False)
    calls = []
    with planted_model.hooks(
        fwd_hooks=[("blocks.1.hook_resid_post", lambda a, *, hook: calls.append(1))]
    ):
        assert hooks_attached(planted_model)
        bridged = mlneurons.collect_activation_stats(
            planted_model, corpus, batch_size=3, progress=False
        )
    assert calls  # the bridge path ran the user's hook
    assert torch.equal(fast.fire_counts, bridged.fire_counts)
    torch.testing.assert_close(fast.activation_sums, bridged.activation_sums, rtol=1e-6, atol=1e-6)
    assert not hooks_attached(planted_model)
    assert (
        type(planted_model.original_model.model.layers[0]).__name__ == "BlockBridge"
    )  # swapped back


def test_checkpoint_does_not_resume_on_edited_files(planted_model, tmp_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for lang in ("en", "fr"):
        (folder / f"{lang}.txt").write_text(language_text(lang, 200) + "\n")
    corpus = MultilingualCorpus.from_files(folder, seq_len=50)
    ckpt = tmp_path / "ck.safetensors"
    mlneurons.collect_activation_stats(planted_model, corpus, checkpoint=ckpt, progress=False)
    (folder / "fr.txt").write_text(language_text("fr", 300) + "\n")
    with pytest.raises(ValueError, match="another model or corpus"):
        mlneurons.collect_activation_stats(
            planted_model,
            MultilingualCorpus.from_files(folder, seq_len=50),
            checkpoint=ckpt,
            progress=False,
        )
