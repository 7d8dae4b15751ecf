"""Tiny models made on the spot, with planted language neurons.

The planted Llama keeps the residual stream equal to the token embedding (attention
outputs and MLP writes into the read dimensions are zero), so every neuron's
pre-activation is exactly known:

* dims 0..L-1 mark a token's language (1 on its own language, 0 elsewhere);
* dims L..2L-1 are "output" dimensions no neuron reads; planted neurons of language i
  write into dim L+i, and the unembedding reads it to predict language-i tokens;
* dim 2L is 1 for every token: the up projection of planted neurons reads it;
* the other dims are Gaussian noise that the ordinary neurons read.

A planted neuron of language i reads only dim i, so it fires (gate > 0) on every
language-i token and is exactly 0 on all others; ordinary neurons fire on about half
of all tokens whatever the language.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import torch

LANGS = ("en", "fr", "zh", "ja")
WORDS_PER_LANG = 24
# (layer, neuron) planted per language
PLANTED = {
    "en": [(0, 3), (1, 17)],
    "fr": [(0, 10), (1, 2)],
    "zh": [(0, 21), (1, 5)],
    "ja": [(0, 30), (1, 20)],
}


def vocabulary(langs=LANGS) -> list[str]:
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    return specials + [f"{lang}{i}" for lang in langs for i in range(WORDS_PER_LANG)]


def make_tokenizer(directory: Path, langs=LANGS):
    """A word-level tokenizer over the tiny vocabulary, saved to ``directory``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(vocabulary(langs))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def bos_ids(model: Any, text: str) -> torch.Tensor:
    """``[[BOS, *ids of text]]`` for the tiny tokenizer (BOS id 1)."""
    return torch.tensor([[1, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]])


def language_text(lang: str, n_words: int, seed: int = 0) -> str:
    g = torch.Generator().manual_seed(zlib.crc32(lang.encode()) % 1000 + seed)
    ids = torch.randint(0, WORDS_PER_LANG, (n_words,), generator=g)
    return " ".join(f"{lang}{i}" for i in ids.tolist())


def make_planted_llama(
    directory: Path, *, d_mlp: int = 32, n_layers: int = 2, seed: int = 0
) -> Path:
    """Save a tiny Llama with the planted neurons of ``PLANTED`` to ``directory``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    n_lang = len(LANGS)
    const = 2 * n_lang
    d_model = 2 * n_lang + 18
    vocab = vocabulary()
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=12,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config).eval()
    noise = slice(const + 1, d_model)
    with torch.no_grad():
        emb = torch.zeros(len(vocab), d_model)
        emb[:, const] = 1.0
        emb[:, noise] = torch.randn(len(vocab), d_model - const - 1)
        for li, lang in enumerate(LANGS):
            for w in range(WORDS_PER_LANG):
                emb[vocab.index(f"{lang}{w}"), li] = 1.0
        model.model.embed_tokens.weight.copy_(emb)
        unembed = torch.zeros(len(vocab), d_model)
        for li, lang in enumerate(LANGS):
            for w in range(WORDS_PER_LANG):
                unembed[vocab.index(f"{lang}{w}"), n_lang + li] = 1.0
        model.lm_head.weight.copy_(unembed)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
            gate = torch.zeros(d_mlp, d_model)
            gate[:, noise] = torch.randn(d_mlp, d_model - const - 1)
            layer.mlp.gate_proj.weight.copy_(gate)
            layer.mlp.up_proj.weight.copy_(torch.randn(d_mlp, d_model).abs() + 0.5)
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        for li, lang in enumerate(LANGS):
            for layer, neuron in PLANTED[lang]:
                mlp = model.model.layers[layer].mlp
                mlp.gate_proj.weight[neuron] = 0.0
                mlp.gate_proj.weight[neuron, li] = 4.0
                mlp.up_proj.weight[neuron] = 0.0
                mlp.up_proj.weight[neuron, const] = 1.0
                mlp.down_proj.weight[n_lang + li, neuron] = 4.0
    model.save_pretrained(directory)
    make_tokenizer(directory)
    return directory


def _save_random(directory: Path, model_class: type, config: Any, seed: int) -> Path:
    """Save a randomly initialised ``model_class(config)`` with the tiny tokenizer."""
    torch.manual_seed(seed)
    config.architectures = [model_class.__name__]
    model_class(config).eval().save_pretrained(directory)
    make_tokenizer(directory)
    return directory


def make_gpt2(directory: Path, *, n_layers: int = 2, seed: int = 0) -> Path:
    """Save a tiny random GPT-2 (plain GELU MLP) with the tiny tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(vocabulary()),
        n_positions=256,
        n_embd=32,
        n_layer=n_layers,
        n_head=2,
        n_inner=48,
        bos_token_id=1,
        eos_token_id=2,
    )
    return _save_random(directory, GPT2LMHeadModel, config, seed)


def make_random_llama(
    directory: Path, *, n_layers: int = 5, seed: int = 0, initializer_range: float = 0.02
) -> Path:
    """Save a tiny random Llama (every attention and MLP weight live) with the tiny tokenizer.

    A larger ``initializer_range`` (e.g. 0.3) gives peaked next-token distributions that
    depend on the context, where the default gives nearly uniform ones.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        initializer_range=initializer_range,
    )
    return _save_random(directory, LlamaForCausalLM, config, seed)


def make_bloom(directory: Path, *, n_layers: int = 5, seed: int = 0) -> Path:
    """Save a tiny random BLOOM (ALiBi positions; its blocks return tuples)."""
    from transformers import BloomConfig, BloomForCausalLM

    config = BloomConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        n_layer=n_layers,
        n_head=4,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return _save_random(directory, BloomForCausalLM, config, seed)


def tiny_facts() -> Any:
    """The planted model continues in the language of the current token, so after a French
    subject a French object is ranked first whatever the gold is."""
    from mlneurons.data.facts import Fact, FactSet

    facts = [
        Fact("f1", "en", "P1", "fr1", "fr5"),  # gold French: correct
        Fact("f2", "en", "P1", "zh1", "ja5"),  # gold Japanese after a Chinese subject: wrong
        Fact("f3", "en", "P1", "ja2", "ja5"),  # correct
        Fact("f1", "de", "P1", "fr1 fr2", "fr5"),  # correct, two-token subject
        Fact("f2", "de", "P1", "zh2", "ja5"),  # wrong
        Fact("f4", "de", "P1", "en3", "en4 en6"),  # correct, two-token object
    ]
    candidates = {
        ("en", "P1"): ["fr5", "zh5", "ja5"],
        ("de", "P1"): ["fr5", "zh5", "ja5", "en4 en6"],
    }
    templates = {("en", "P1"): "[X] [Y]", ("de", "P1"): "[X] [Y]"}
    return FactSet(facts, templates, candidates)


# (layer, head) planted per language in make_planted_heads_llama, and the shared head
PLANTED_HEADS = {"en": (0, 1), "fr": (1, 2), "zh": (0, 3), "ja": (1, 0)}
SHARED_HEAD = (0, 0)


def make_planted_heads_llama(directory: Path, *, seed: int = 0) -> Path:
    """Save a tiny Llama (2 layers x 4 heads, no MLP writes) with planted attention heads.

    Queries and keys are 0, so every head attends uniformly to the prefix (BOS included).
    The unembedding reads dims L..2L-1 (language i's words read dim L+i), which only heads
    write, and the special tokens read dim 2L+1 (2 in every embedding): the head of
    language i in ``PLANTED_HEADS`` reads dim i (1 on language-i tokens only) and writes
    into dim L+i, so its output is exactly 0 on any other language; the ``SHARED_HEAD``
    reads the constant dim 2L (1 on every token) and cancels dim 2L+1, lowering the special
    tokens' logits for every language; the other heads write nothing.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    n_lang, head_dim, n_heads = len(LANGS), 4, 4
    const = 2 * n_lang
    d_model = const + 8
    vocab = vocabulary()
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=d_model,
        intermediate_size=8,
        num_hidden_layers=2,
        num_attention_heads=n_heads,
        num_key_value_heads=n_heads,
        head_dim=head_dim,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        emb = torch.zeros(len(vocab), d_model)
        emb[:, const] = 1.0
        emb[:, const + 1] = 2.0
        emb[:, const + 2 :] = torch.randn(len(vocab), d_model - const - 2)
        unembed = torch.zeros(len(vocab), d_model)
        unembed[:4, const + 1] = 1.0  # the special tokens
        for li, lang in enumerate(LANGS):
            for w in range(WORDS_PER_LANG):
                emb[vocab.index(f"{lang}{w}"), li] = 1.0
                unembed[vocab.index(f"{lang}{w}"), n_lang + li] = 1.0
        model.model.embed_tokens.weight.copy_(emb)
        model.lm_head.weight.copy_(unembed)
        for layer in model.model.layers:
            attn = layer.self_attn
            attn.q_proj.weight.zero_()
            attn.k_proj.weight.zero_()
            attn.v_proj.weight.copy_(torch.randn_like(attn.v_proj.weight))
            attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        planted = [(layer, head, li) for li, (layer, head) in enumerate(PLANTED_HEADS.values())]
        for layer, head, read in [*planted, (*SHARED_HEAD, const)]:
            attn = model.model.layers[layer].self_attn
            rows = slice(head * head_dim, (head + 1) * head_dim)
            attn.v_proj.weight[rows] = 0.0
            attn.v_proj.weight[head * head_dim, read] = 1.0
            if read == const:  # the shared head: lowers the special tokens
                attn.o_proj.weight[const + 1, head * head_dim] = -2.0
            else:
                attn.o_proj.weight[n_lang + read, head * head_dim] = 6.0
    model.save_pretrained(directory)
    make_tokenizer(directory)
    return directory
