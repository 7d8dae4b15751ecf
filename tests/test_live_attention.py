"""Perplexity and generation on a tiny random Llama whose attention is live.

The planted model predicts the same distribution at every position of a one-language
text and zeroes its attention output, so it can see neither an off-by-one target shift
nor a padding bug; this random model can.
"""

import math

import pytest
import torch
from tiny import language_text, make_random_llama

import mlneurons
from mlneurons import MultilingualCorpus
from mlneurons.evaluation.perplexity import perplexity, sequence_nll
from mlneurons.models.generation import REPETITION_PENALTY, generate_answers


@pytest.fixture(scope="module")
def live_llama(tmp_path_factory):
    directory = make_random_llama(
        tmp_path_factory.mktemp("live_llama"), n_layers=2, seed=3, initializer_range=0.3
    )
    return mlneurons.load_model(str(directory), device="cpu")


def test_perplexity_scores_each_position_against_the_next_token(live_llama):
    model = live_llama
    corpus = MultilingualCorpus({"fr": lambda: [language_text("fr", 200)]}, seq_len=33)
    rows = torch.cat(list(corpus.rows("fr", model.tokenizer)))
    with torch.no_grad():  # plain Hugging Face forward, shift done by hand
        logp = model.original_model(input_ids=rows).logits.double().log_softmax(-1)[:, :-1]
    next_nll = -logp.gather(-1, rows[:, 1:, None]).squeeze(-1).sum(1)
    same_nll = -logp.gather(-1, rows[:, :-1, None]).squeeze(-1).sum(1)
    assert (next_nll - same_nll).abs().min() > 1.0  # the shift matters on this model
    got = sequence_nll(model, rows, chunk_tokens=7).double()
    torch.testing.assert_close(got, next_nll, rtol=1e-5, atol=1e-4)
    ppl = perplexity(model, corpus, batch_size=2, progress=False)["fr"]
    assert ppl == pytest.approx(math.exp(next_nll.sum().item() / rows[:, 1:].numel()), rel=1e-5)


def _greedy_by_hand(hf, ids, max_new_tokens, penalty):
    """Greedy decoding with Hugging Face's repetition penalty, one full forward per token."""
    ids = list(ids)
    new = []
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = hf(input_ids=torch.tensor([ids])).logits[0, -1]
        seen = torch.tensor(sorted(set(ids)))
        logits[seen] = torch.where(logits[seen] < 0, logits[seen] * penalty, logits[seen] / penalty)
        token = int(logits.argmax())
        if token == 2:  # eos
            break
        ids.append(token)
        new.append(token)
    return new


PROMPTS = [language_text(lang, n, seed=n) for lang, n in [("en", 1), ("fr", 7), ("zh", 3)]]
PROMPTS += [language_text("ja", 5), language_text("en", 2, seed=4)]


def test_batched_generation_equals_one_prompt_at_a_time(live_llama):
    model = live_llama
    one = generate_answers(model, PROMPTS, max_new_tokens=6, batch_size=1, progress=False)
    batched = generate_answers(model, PROMPTS, max_new_tokens=6, batch_size=4, progress=False)
    assert batched == one
    assert len(set(one)) == len(one) and all(one)  # distinct, non-empty answers


def test_generation_equals_greedy_decoding_by_full_forwards(live_llama):
    """The key/value cache of generation must give what full forwards give."""
    model = live_llama
    got = generate_answers(model, PROMPTS, max_new_tokens=6, batch_size=4, progress=False)
    expected = []
    for prompt in PROMPTS:
        ids = model.tokenizer(prompt)["input_ids"]
        new = _greedy_by_hand(model.original_model, ids, 6, REPETITION_PENALTY)
        expected.append(model.tokenizer.decode(new, skip_special_tokens=True).strip())
    assert got == expected
