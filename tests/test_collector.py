"""The one statistics collector: any hook point, weights, merge, checkpoint and resume,
early stop, and the views built on it, against independent run_with_cache computations."""

import pytest
import torch
from test_stats import _token_corpus
from tiny import LANGS

from mlneurons import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.methods.lrp2 import language_vectors
from mlneurons.stats.activation import corpus_batches
from mlneurons.stats.collector import HookStats, Labelled, collect, hook_points

RESID = "blocks.1.hook_resid_post"


def _independent(model, corpus, name):
    """Per language: sum, sum of squares, positive count and tokens at ``name`` (BOS excluded)."""
    out = []
    start = 1 if corpus.bos_id(model.tokenizer) is not None else 0
    for lang in corpus.languages:
        acts = []
        for row in corpus.rows(lang, model.tokenizer, batch_size=1):
            _, cache = model.run_with_cache(row, names_filter=name)
            acts.append(cache[name][0, start:].double())
        acts = torch.cat(acts)
        out.append((acts.sum(0), acts.square().sum(0), (acts > 0).sum(0), len(acts)))
    return out


@pytest.mark.parametrize("model_fixture", ["planted_model", "gpt2_model"])
def test_any_hook_point_equals_run_with_cache(model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    corpus, _ = _token_corpus(model, n_words=200, seq_len=24)
    stats = collect(
        model,
        corpus_batches(corpus, model.tokenizer, 3),
        labels=corpus.languages,
        names_filter=lambda name: name.endswith("hook_resid_post"),
        fires=True,
        squares=True,
        progress=False,
    )
    assert stats.points == [f"blocks.{i}.hook_resid_post" for i in range(model.cfg.n_layers)]
    for li, (sums, squares, fires, tokens) in enumerate(_independent(model, corpus, RESID)):
        assert stats.tokens[li] == tokens and stats.weights[li] == tokens
        assert torch.equal(stats.fires[RESID][li], fires)
        torch.testing.assert_close(stats.sums[RESID][li], sums, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(stats.mean(RESID)[li], sums / tokens, rtol=1e-5, atol=1e-5)
        variance = squares / tokens - (sums / tokens).square()
        torch.testing.assert_close(stats.variance(RESID)[li], variance, rtol=1e-4, atol=1e-4)


def test_attention_hook_keeps_its_shape(planted_model):
    corpus, _ = _token_corpus(planted_model, n_words=100, seq_len=16)
    name = "blocks.0.attn.hook_z"
    stats = collect(
        planted_model,
        corpus_batches(corpus, planted_model.tokenizer, 4),
        labels=corpus.languages,
        names_filter=name,
        progress=False,
    )
    cfg = planted_model.cfg
    assert stats.sums[name].shape == (len(LANGS), cfg.n_heads, cfg.d_head)
    expected = _independent(planted_model, corpus, name)
    for li, (sums, *_rest) in enumerate(expected):
        torch.testing.assert_close(stats.sums[name][li], sums, rtol=1e-5, atol=1e-4)


def test_weights_pool_each_row_and_labels_per_row(planted_model):
    """Two rows, each its own label, weighted 1/len over different spans: the mean of each
    label is the mean of its row's span, computed by hand."""
    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]])
    weights = torch.tensor([[0, 0.5, 0.5, 0, 0], [0, 0, 0, 0, 1.0]])
    stats = collect(
        planted_model,
        [Labelled(tokens, torch.tensor([1, 0]), weights=weights)],
        labels=["b", "a"],
        names_filter=RESID,
        progress=False,
    )
    _, cache = planted_model.run_with_cache(tokens, names_filter=RESID)
    act = cache[RESID].double()
    torch.testing.assert_close(stats.mean(RESID)[1], act[0, 1:3].mean(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats.mean(RESID)[0], act[1, 4], rtol=1e-6, atol=1e-6)
    assert stats.tokens.tolist() == [1, 2] and stats.rows.tolist() == [1, 1]


def test_merge_of_shards_equals_the_whole_and_survives_save(planted_model, tmp_path):
    corpus, _ = _token_corpus(planted_model, n_words=300, seq_len=16)
    batches = list(corpus_batches(corpus, planted_model.tokenizer, 2))
    options = dict(labels=corpus.languages, fires=True, squares=True, progress=False)
    whole = collect(planted_model, batches, **options)
    even = collect(planted_model, batches[0::2], **options)
    odd = collect(planted_model, batches[1::2], **options)
    merged = HookStats.load((even + odd).save(tmp_path / "m.safetensors"))
    assert torch.equal(merged.tokens, whole.tokens) and torch.equal(merged.rows, whole.rows)
    for point in whole.points:
        assert torch.equal(merged.fires[point], whole.fires[point])
        torch.testing.assert_close(merged.sums[point], whole.sums[point], rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(
            merged.squares[point], whole.squares[point], rtol=1e-12, atol=1e-9
        )
    assert merged.model == whole.model and merged.labels == whole.labels
    other = HookStats.empty(["en"], {p: (32,) for p in whole.points}, meta={"model": {"hash": "x"}})
    with pytest.raises(ValueError, match="different models"):
        whole + other


def test_language_vectors_resume_to_identical_totals(planted_model, tmp_path):
    corpus, _ = _token_corpus(planted_model, n_words=300, seq_len=16)
    corpus = MultilingualCorpus.from_token_ids(
        {lang: corpus.sources[lang] for lang in corpus.languages}, seq_len=16
    )
    options = dict(max_sentences=40, max_tokens=8, batch_size=4, progress=False)
    full = language_vectors(planted_model, corpus, **options)
    calls = {"n": 0}

    def crash(act, *, hook):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt

    ckpt = tmp_path / "v.safetensors"
    with pytest.raises(KeyboardInterrupt):
        with planted_model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", crash)]):
            language_vectors(planted_model, corpus, checkpoint=ckpt, checkpoint_every=2, **options)
    partial = HookStats.load(ckpt)
    assert 0 < partial.rows.sum() < sum(full.sentences)
    resumed = language_vectors(planted_model, corpus, checkpoint=ckpt, **options)
    assert torch.equal(resumed.vectors, full.vectors) and resumed.sentences == full.sentences


def test_checkpoint_is_refused_for_other_settings(planted_model, tmp_path):
    corpus, _ = _token_corpus(planted_model, n_words=100, seq_len=16)
    ckpt = tmp_path / "c.safetensors"
    batches = list(corpus_batches(corpus, planted_model.tokenizer, 2))
    options = dict(labels=corpus.languages, progress=False, checkpoint=ckpt)
    collect(planted_model, batches, resume_key={"batch_size": 2}, **options)
    with pytest.raises(UserError, match="batch_size=2; resume with that batch size, not 3"):
        collect(planted_model, batches, resume_key={"batch_size": 3}, **options)
    with pytest.raises(UserError, match="another model or corpus"):
        collect(planted_model, batches, names_filter=RESID, resume_key={"batch_size": 2}, **options)


def test_the_pass_stops_after_the_last_point(planted_model):
    """Collecting at layer 0 only never runs layer 1 (a plain PyTorch hook, not a
    TransformerLens one, so the collector still stops early)."""
    ran = []
    last_block = planted_model.original_model.model.layers[1]
    handle = last_block.register_forward_pre_hook(lambda *args: ran.append(1))
    try:
        tokens = torch.tensor([[1, 5, 6, 7]])
        collect(
            planted_model,
            [Labelled(tokens, 0)],
            labels=["en"],
            names_filter="blocks.0.hook_resid_post",
            progress=False,
        )
        assert ran == []
        collect(
            planted_model, [Labelled(tokens, 0)], labels=["en"], names_filter=RESID, progress=False
        )
        assert ran == [1]
    finally:
        handle.remove()


def test_bad_hook_names_are_one_line_errors(planted_model):
    with pytest.raises(
        UserError,
        match=r"unknown hook point 'blocks.0.hook_resid_pots'; did you mean 'blocks.0.hook_resid_post'",
    ):
        hook_points(planted_model, "blocks.0.hook_resid_pots")
    with pytest.raises(UserError, match="selects none"):
        hook_points(planted_model, lambda name: False)
    assert len(hook_points(planted_model)) == planted_model.cfg.n_layers  # MLP neurons
