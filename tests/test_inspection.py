"""The per-token scoring primitive and the live inspection functions, against independent
computations: full forwards with logits, ``run_with_cache`` reads, ``W_out @ W_U``."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from tiny import PLANTED, language_text, make_random_llama

import mlneurons
from mlneurons.errors import UserError
from mlneurons.methods.inspection import (
    logit_effects,
    loss_change,
    neuron_activations,
    next_token_table,
    token_losses,
)
from mlneurons.methods.interventions import deactivate
from mlneurons.models.hooks import hooks_attached
from mlneurons.models.scoring import token_logprobs
from mlneurons.models.tokens import bos_count, display_tokens, encode

SCORING_ATOL = 1e-5
"""The primitive (float32, chunked unembedding, right-padded batches) against a naive
float64 log-softmax of each row's own full forward: measured max |difference| 5.7e-7 on
the planted model and 3.7e-6 on the live-attention Llama (float32 rounding)."""


@pytest.fixture(scope="module")
def live_llama(tmp_path_factory):
    """A random Llama whose attention is live, so padding and target shifts show."""
    path = make_random_llama(tmp_path_factory.mktemp("live"), n_layers=2, initializer_range=0.3)
    return mlneurons.load_model(str(path), device="cpu")


def _rows(model):
    """Rows of 1 to 10 tokens (BOS first) in three languages: batches need padding."""
    texts = [language_text("fr", 9), language_text("zh", 3, seed=1), "", language_text("en", 6)]
    return [encode(model.tokenizer, text) for text in texts]


def _naive(model, row):
    """Each position's log-probabilities of the whole vocabulary: ``model(ids)`` alone."""
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([row]))[0].double(), -1)


@pytest.mark.parametrize("which", ["planted_model", "live_llama"])
def test_token_logprobs_equal_a_naive_forward_per_row(which, request):
    model = request.getfixturevalue(which)
    rows = _rows(model)
    assert sorted(map(len, rows)) == [1, 4, 7, 10]
    scores = token_logprobs(model, rows, batch_size=3, last=True, unembed_rows=5)
    worst = 0.0
    for k, row in enumerate(rows):
        logp = _naive(model, row)
        hand = logp[torch.arange(len(row) - 1), row[1:]]
        assert scores.logprobs[k].shape == (len(row) - 1,)
        gaps = torch.cat([scores.logprobs[k].double() - hand, scores.last[k] - logp[-1]])
        worst = max(worst, float(gaps.abs().max()))
    assert worst < SCORING_ATOL


def test_token_logprobs_hooks_and_score_from(planted_model):
    model = planted_model
    rows = _rows(model)
    hooks = deactivate(PLANTED["fr"], model=model)
    scores = token_logprobs(model, rows, hooks=hooks, score_from=[5, 1, 1, 2])
    assert not hooks_attached(model)
    with model.hooks(fwd_hooks=hooks):
        hand = [_naive(model, row) for row in rows]
    for k, (row, start) in enumerate(zip(rows, [5, 1, 1, 2])):
        expected = hand[k][torch.arange(start - 1, len(row) - 1), row[start:]]
        torch.testing.assert_close(scores.logprobs[k].double(), expected, atol=SCORING_ATOL, rtol=0)
    plain = token_logprobs(model, rows[:1]).logprobs[0]
    assert (scores.logprobs[0] < plain[4:] - 0.1).all()  # fr words got harder without fr neurons
    with pytest.raises(UserError, match="cannot score from token 0"):
        token_logprobs(model, rows[:1], score_from=[0])
    with pytest.raises(UserError, match="batch_size"):
        token_logprobs(model, rows, batch_size=0)


def test_encode_and_display_tokens(planted_model):
    tokenizer = planted_model.tokenizer
    ids = encode(tokenizer, "fr1 fr2 fr3")
    assert ids[0] == tokenizer.bos_token_id and len(ids) == 4 and bos_count(tokenizer, ids) == 1
    assert encode(tokenizer, "fr1 fr2 fr3", max_tokens=2) == ids[:2]
    assert display_tokens(tokenizer, ids[1:]) == (["fr1", " fr2", " fr3"], [[0], [1], [2]])


class _Bytes:
    """A byte-level tokenizer: token i is byte i (a character may take several tokens)."""

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def test_display_tokens_merge_the_byte_pieces_of_a_character():
    ids = list("aé中b".encode())
    assert len(ids) == 7
    assert display_tokens(_Bytes(), ids) == (
        ["a", "é", "中", "b"],
        [[0], [1, 2], [3, 4, 5], [6]],
    )
    # a text cut inside a character keeps its last piece as it decodes
    assert display_tokens(_Bytes(), ids[:2]) == (["a", "\ufffd"], [[0], [1]])


class _Counting(contextlib.AbstractContextManager):
    def __init__(self):
        self.entered = 0

    def __enter__(self):
        self.entered += 1
        return self

    def __exit__(self, *exc):
        return None


def test_neuron_activations_equal_a_run_with_cache_read(planted_model):
    model = planted_model
    texts = ["fr1 fr2 fr3 fr4", "en1 en2", "zh3 fr5"]
    pairs = [(0, 10), (1, 2), (0, 3), (1, 17)]
    lock = _Counting()
    found = neuron_activations(model, texts, pairs, lock=lock)
    assert lock.entered == 1 and not hooks_attached(model)
    for text, (tokens, values) in zip(texts, found):
        ids = torch.tensor([encode(model.tokenizer, text)])
        _, cache = model.run_with_cache(ids, names_filter=lambda name: name.endswith("hook_pre"))
        expected = torch.stack(
            [F.silu(cache[f"blocks.{layer}.mlp.hook_pre"][0, 1:, n]) for layer, n in pairs], -1
        )
        assert tokens == display_tokens(model.tokenizer, ids[0, 1:].tolist())[0]
        torch.testing.assert_close(values, expected)
    fr = found[0].values
    assert (fr[:, :2] > 0.5).all() and (fr[:, 2:] == 0).all()  # the planted fr neurons fire


def test_token_losses_and_their_change_equal_the_naive_cross_entropy(planted_model):
    model = planted_model
    text = "en1 en2 en3 en4 en5"
    ids = torch.tensor([encode(model.tokenizer, text)])

    def naive(hooks=()):
        with torch.inference_mode(), model.hooks(fwd_hooks=list(hooks)):
            logits = model(ids)[0, :-1].double()
        return F.cross_entropy(logits, ids[0, 1:], reduction="none")

    tokens, losses = token_losses(model, text)
    assert tokens == ["en1", " en2", " en3", " en4", " en5"]
    torch.testing.assert_close(losses.double(), naive(), atol=SCORING_ATOL, rtol=0)
    off = PLANTED["en"]
    change = loss_change(model, text, off, lock=_Counting())
    torch.testing.assert_close(change.before, losses)
    expected = naive(deactivate(off, model=model))
    torch.testing.assert_close(change.after.double(), expected, atol=SCORING_ATOL, rtol=0)
    assert change.after.mean() > change.before.mean() + 1 and not hooks_attached(model)


def test_next_token_table_is_the_naive_softmax(live_llama):
    model = live_llama
    text = language_text("fr", 5)
    table = next_token_table(model, text, k=5)
    logits = model(torch.tensor([encode(model.tokenizer, text)]))[0, -1].double()
    top = torch.softmax(logits, -1).topk(5)
    assert [t.id for t in table] == top.indices.tolist()
    assert [t.token for t in table] == [model.tokenizer.decode([i]) for i in top.indices.tolist()]
    assert [t.probability for t in table] == pytest.approx(top.values.tolist(), abs=1e-6)


def test_logit_effects_are_w_out_times_w_u(live_llama, planted_model):
    model, layer, neuron = live_llama, 1, 7
    hf = model.original_model
    w_out = hf.model.layers[layer].mlp.down_proj.weight[:, neuron].detach().double()
    scores = hf.lm_head.weight.detach().double() @ w_out
    words = [
        i for i in range(len(scores)) if not model.tokenizer.decode([i]).startswith("<")
    ]  # the specials (<pad>, <bos>, ...) are left out
    order = sorted(words, key=lambda i: -float(scores[i]))
    promoted, suppressed = logit_effects(model, layer, neuron, k=4)
    assert [t.id for t in promoted] == order[:4]
    assert [t.id for t in suppressed] == order[::-1][:4]
    for t in promoted + suppressed:
        assert t.logit == pytest.approx(float(scores[t.id]), abs=1e-5)
        assert t.token == model.tokenizer.decode([t.id])
    # the planted fr neuron writes only into the fr output direction
    promoted, _ = logit_effects(planted_model, *PLANTED["fr"][0], k=5)
    assert all(t.token.startswith("fr") and t.logit == pytest.approx(4.0) for t in promoted)
