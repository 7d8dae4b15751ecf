"""Knowledge tracing (Zhao et al., EACL 2024) on a hand-made corpus and word tokenizer."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from typecheck import REFUSED

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.data.facts import Fact, FactSet
from mlneurons.interfaces.plots import plot_tracing
from mlneurons.methods.tracing import (
    CATEGORIES,
    CODES,
    NAMING_RELATIONS,
    TracingResult,
    classify_absent_correct,
    fact_presence,
    trace,
)

WORDS = (
    "the capital of is in and . , Japan Tokyo Nigeria Abuja France Paris Germany Berlin "
    "Mitte New Zealand Wellington Republic Chad"
).split() + [f"x{i}" for i in range(12)]


def word_tokenizer(*, metaspace: bool = False):
    """A word-level tokenizer; with ``metaspace``, a word after a space is "▁word"
    (as in Gemma's SentencePiece), so an entity's ids depend on what precedes it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    words = WORDS + ["▁" + w for w in WORDS] if metaspace else WORDS
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(specials + words)}, "<unk>"))
    if metaspace:
        core.pre_tokenizer = pre_tokenizers.Metaspace("▁", prepend_scheme="never")
        core.decoder = decoders.Metaspace("▁", prepend_scheme="never")
    else:
        core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


@pytest.fixture(scope="module")
def tokenizer():
    return word_tokenizer()


EN_FACTS = [
    # uuid, relation, subject, object
    ("japan-capital", "P36", "Japan", "Tokyo"),  # together in one document: present
    ("nigeria-capital", "P36", "Nigeria", "Abuja"),  # 8 tokens apart: split at chunk 8
    ("france-capital", "P36", "France", "Paris"),  # subject only: absent
    ("nz-capital", "P36", "New Zealand", "Wellington"),  # multi-token subject: present
    ("chad-country", "P17", "Republic of Chad", "Chad"),  # object inside subject: present
    ("germany-capital", "P36", "Germany", "Berlin Mitte"),  # object tokens not adjacent
    ("paris-country", "P17", "Paris", "France"),  # never together: absent
    ("nz-other", "P36", "New Zealand", "New Berlin"),  # object never in text: absent
    ("japan-unscored", "P36", "Japan", "Paris"),  # no entry in `correct`
]

EN_TEXT = [
    "the capital of Japan is Tokyo .",
    "Nigeria x0 x1 x2 x3 x4 x5 x6 Abuja",
    "France x0 x1 .",
    "New Zealand , x0 Wellington . New x1 Zealand",
    "Republic of Chad .",
    "Germany x0 Berlin x1 Mitte .",
]


def fact_set() -> FactSet:
    facts = [Fact(u, "en", r, s, o) for u, r, s, o in EN_FACTS]
    facts += [
        Fact("japan-capital", "fr", "P36", "Japon", "Tokyo"),
        Fact("france-capital", "fr", "P36", "France", "Paris"),
        Fact("japan-capital", "de", "P36", "Japan", "Tokyo"),
    ]
    templates = {
        ("en", "P36"): "The capital of [X] is [Y].",
        ("en", "P17"): "[X] is located in [Y].",
        ("fr", "P36"): "La capitale de [X] est [Y].",
        ("de", "P36"): "Die Hauptstadt von [X] ist [Y].",
    }
    return FactSet(facts=facts, templates=templates)


def corpus(**options) -> MultilingualCorpus:
    return MultilingualCorpus({"en": lambda: list(EN_TEXT)}, **options)


CORRECT = {
    ("japan-capital", "en"): True,  # present -> 3
    ("nigeria-capital", "en"): False,  # absent at chunk 8 -> 0
    ("france-capital", "en"): True,  # absent -> 2, others
    ("nz-capital", "en"): False,  # present -> 1
    ("chad-country", "en"): True,  # present -> 3
    ("germany-capital", "en"): False,  # absent -> 0
    ("paris-country", "en"): True,  # absent -> 2, naming cues (P17)
    ("nz-other", "en"): True,  # absent -> 2, shared entity tokens ("New")
    ("japan-capital", "fr"): True,  # no French text -> -1
    ("france-capital", "fr"): False,  # no French text -> -1
}


def test_presence_within_and_across_chunks(tokenizer):
    present = fact_presence(fact_set(), corpus(), tokenizer, chunk_tokens=8, progress=False)
    assert present == {
        ("japan-capital", "en"): True,
        ("nigeria-capital", "en"): False,
        ("france-capital", "en"): False,
        ("nz-capital", "en"): True,
        ("chad-country", "en"): True,
        ("germany-capital", "en"): False,
        ("paris-country", "en"): False,
        ("nz-other", "en"): False,
        ("japan-unscored", "en"): False,
    }  # fr and de have no text: no entries
    wide = fact_presence(fact_set(), corpus(), tokenizer, chunk_tokens=16, progress=False)
    assert wide[("nigeria-capital", "en")] is True
    # with 4-token chunks "New Zealand" (tokens 0-1) and "Wellington" (token 4) are
    # apart, and the later "New x1 Zealand" is no match
    narrow = fact_presence(fact_set(), corpus(), tokenizer, chunk_tokens=4, progress=False)
    assert narrow[("nz-capital", "en")] is False
    assert narrow[("chad-country", "en")] is True  # "Republic of Chad" fits in 4 tokens


def test_presence_reads_each_language_once(tokenizer):
    reads = []

    def text():
        reads.append(1)
        return list(EN_TEXT)

    facts = fact_set()
    fact_presence(facts, MultilingualCorpus({"en": text}), tokenizer, progress=False)
    assert len(reads) == 1


def test_presence_on_token_ids_and_budget(tokenizer):
    ids = tokenizer(" ".join(EN_TEXT), add_special_tokens=False)["input_ids"]
    stream = MultilingualCorpus.from_token_ids({"en": torch.tensor(ids)})
    present = fact_presence(fact_set(), stream, tokenizer, chunk_tokens=512, progress=False)
    # one long document: everything within 512 tokens co-occurs
    assert present[("nigeria-capital", "en")] and present[("nz-capital", "en")]
    assert not present[("paris-country", "en")]  # "Paris" is nowhere
    # a budget of 7 tokens keeps only the first sentence
    short = fact_presence(
        fact_set(), corpus(tokens_per_language=7), tokenizer, chunk_tokens=512, progress=False
    )
    assert [k for k, v in short.items() if v] == [("japan-capital", "en")]


def test_presence_matches_with_and_without_leading_space():
    tok = word_tokenizer(metaspace=True)
    # "Tokyo" opens the document (no "▁"), "▁Japan" follows a space
    assert tok("Tokyo")["input_ids"] != tok(" Tokyo")["input_ids"]
    facts = FactSet(
        [
            Fact("a", "en", "P36", "Japan", "Tokyo"),
            Fact("b", "en", "P36", "New Zealand", "Wellington"),
            Fact("c", "en", "P36", "France", "Paris"),
        ],
        {("en", "P36"): "[X] [Y]"},
    )
    text = MultilingualCorpus(
        # (the corpus adds "\n\n" to each document: unknown here, so end on " .")
        {"en": lambda: ["Tokyo is in Japan .", "New Zealand x0 Wellington .", "France x0 ."]}
    )
    present = fact_presence(facts, text, tok, progress=False)
    assert present == {("a", "en"): True, ("b", "en"): True, ("c", "en"): False}


def test_unknown_words_never_match(tokenizer):
    # "Kyoto" and "Osaka" are unknown words -> <unk>, skipped when chunks are decoded:
    # text lost to unknown tokens is not there to match, and <unk> matches nothing
    facts = FactSet([Fact("u", "en", "P36", "Japan", "Kyoto")], {("en", "P36"): "[X] [Y]"})
    for line in ("Japan Osaka", "Japan Kyoto"):
        text = MultilingualCorpus({"en": lambda line=line: [line]})
        assert fact_presence(facts, text, tokenizer, progress=False) == {("u", "en"): False}


def merging_tokenizer():
    """A Unigram tokenizer, as SentencePiece, whose pieces cross entity boundaries in
    text without spaces: "是東京。" is "是東" + "京。", while "東京" alone is "東" + "京"."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    merged = ["日本", "的首", "是東", "京。", "大阪"]
    single = ["東", "京", "日", "本", "的", "首", "都", "是", "。", "大", "阪", "\n"]
    vocab = [("<unk>", 0.0)] + [(p, -1.0) for p in merged] + [(p, -10.0) for p in single]
    core = Tokenizer(models.Unigram(vocab, unk_id=0, byte_fallback=False))
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>")


def test_presence_matches_text_across_merged_tokens():
    tok = merging_tokenizer()
    text = ["日本的首都是東京。"]
    ids = tok(text[0] + "\n\n", add_special_tokens=False)["input_ids"]
    entity = tok("東京", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[:5] == ["日本", "的首", "都", "是東", "京。"]
    assert tok.convert_ids_to_tokens(entity) == ["東", "京"]
    # the entity's ids occur nowhere in the chunk's ids ...
    assert not any(ids[i : i + len(entity)] == entity for i in range(len(ids)))
    facts = FactSet(
        [
            Fact("a", "zh", "P36", "日本", "東京"),
            Fact("b", "zh", "P36", "日本", "大阪"),  # "大阪" is not in the text
        ],
        {("zh", "P36"): "[X]的首都是[Y]。"},
    )
    # ... but its text does: found present
    present = fact_presence(facts, MultilingualCorpus({"zh": lambda: text}), tok, progress=False)
    assert present == {("a", "zh"): True, ("b", "zh"): False}


def test_presence_is_case_and_whitespace_insensitive(tokenizer):
    facts = FactSet(
        [
            Fact("a", "en", "P36", "new \t ZEALAND", "wellington"),
            Fact("b", "en", "P36", "JAPAN", " tokyo "),
        ],
        {("en", "P36"): "[X] [Y]"},
    )
    present = fact_presence(facts, corpus(), tokenizer, progress=False)
    assert present == {("a", "en"): True, ("b", "en"): True}


def test_chunk_boundary_splits_an_entity(tokenizer):
    # 2-token chunks of "Republic of Chad .": "Republic of" | "Chad ."
    facts = FactSet(
        [Fact("c", "en", "P17", "Republic of Chad", "Chad")], {("en", "P17"): "[X] [Y]"}
    )
    text = MultilingualCorpus({"en": lambda: ["Republic of Chad ."]})
    split = fact_presence(facts, text, tokenizer, chunk_tokens=2, progress=False)
    assert split == {("c", "en"): False}
    whole = fact_presence(facts, text, tokenizer, chunk_tokens=3, progress=False)
    assert whole == {("c", "en"): True}


def test_presence_stops_when_all_facts_are_present(tokenizer):
    def text():
        yield "the capital of Japan is Tokyo ."
        raise AssertionError("read past the point where every fact was present")

    facts = FactSet(
        [Fact("a", "en", "P36", "Japan", "Tokyo"), Fact("b", "en", "P36", "tokyo", "JAPAN")],
        {("en", "P36"): "[X] [Y]"},
    )
    present = fact_presence(facts, MultilingualCorpus({"en": text}), tokenizer, progress=False)
    assert present == {("a", "en"): True, ("b", "en"): True}


def test_trace_codes_and_categories(tokenizer):
    result = trace(fact_set(), corpus(), tokenizer, CORRECT, chunk_tokens=8, progress=False)
    assert result.languages == ["en", "fr"]  # de has no entry in `correct`
    assert result.codes["en"] == {
        "japan-capital": 3,
        "nigeria-capital": 0,
        "france-capital": 2,
        "nz-capital": 1,
        "chad-country": 3,
        "germany-capital": 0,
        "paris-country": 2,
        "nz-other": 2,
    }
    assert result.codes["fr"] == {"japan-capital": -1, "france-capital": -1}
    assert result.categories == {
        "en": {
            "france-capital": "others",
            "paris-country": "naming cues",
            "nz-other": "shared entity tokens",
        },
        "fr": {},
    }
    assert result.settings["chunk_tokens"] == 8
    assert result.settings["naming_relations"] == sorted(NAMING_RELATIONS)
    assert result.settings["corpus"]["languages"] == ["en"]
    # without naming cues, the P17 fact falls to "others"
    plain = trace(
        fact_set(),
        corpus(),
        tokenizer,
        CORRECT,
        chunk_tokens=8,
        naming_relations=(),
        progress=False,
    )
    assert plain.categories["en"]["paris-country"] == "others"


def test_breakdown(tokenizer):
    result = trace(fact_set(), corpus(), tokenizer, CORRECT, chunk_tokens=8, progress=False)
    counts = result.breakdown()
    assert counts["en"] == {
        "not in data": 0,
        "absent, wrong": 2,
        "present, wrong": 1,
        "absent, correct": 3,
        "present, correct": 2,
        "absent-correct: shared entity tokens": 1,
        "absent-correct: naming cues": 1,
        "absent-correct: others": 1,
    }
    assert counts["fr"]["not in data"] == 2
    assert sum(counts["fr"][label] for label in CODES.values()) == 2
    assert all(counts["fr"]["absent-correct: " + c] == 0 for c in CATEGORIES)


@pytest.mark.parametrize(
    ("relation", "subject", "obj", "expected"),
    [
        ("P36", "Republic of Chad", "chad", "shared entity tokens"),  # case-insensitive substring
        ("P17", "Republic of Chad", "Chad", "shared entity tokens"),  # before naming cues
        ("P36", "New Zealand", "New Berlin", "shared entity tokens"),  # token overlap
        ("P17", "Paris", "France", "naming cues"),
        ("P27", "Tokyo", "Japan", "naming cues"),
        ("P36", "Japan", "Tokyo", "others"),
        ("P36", "Berlin, Germany", "Tokyo, Japan", "others"),  # only "," shared
        ("P36", "Japan Foo", "Bar", "others"),  # only <unk> shared
    ],
)
def test_classify_absent_correct(tokenizer, relation, subject, obj, expected):
    fact = Fact("f", "en", relation, subject, obj)
    assert classify_absent_correct(fact, tokenizer) == expected


def test_classify_token_overlap_in_running_text():
    tok = word_tokenizer(metaspace=True)
    # tokens as in running text: "▁Zealand" in both (at the start of a string the
    # object alone would be "Zealand")
    fact = Fact("f", "en", "P36", "New Zealand", "Zealand x0")
    assert classify_absent_correct(fact, tok) == "shared entity tokens"
    fact = Fact("f", "en", "P36", "Zealand New", "New x0")
    assert classify_absent_correct(fact, tok) == "shared entity tokens"
    fact = Fact("f", "en", "P17", "Tokyo", "Japan")
    assert classify_absent_correct(fact, tok, naming_relations={"P31"}) == "others"


def test_save_load_round_trip(tokenizer, tmp_path):
    result = trace(fact_set(), corpus(), tokenizer, CORRECT, chunk_tokens=8, progress=False)
    result.model = {"name": "tiny"}
    path = result.save(tmp_path / "run")
    assert path.name == "trace.json"
    loaded = TracingResult.load(tmp_path / "run")
    assert loaded == result
    assert TracingResult.load(path).breakdown() == result.breakdown()


def test_plot_tracing_returns_figure(tokenizer, tmp_path):
    result = trace(fact_set(), corpus(), tokenizer, CORRECT, chunk_tokens=8, progress=False)
    fig = plot_tracing(result)
    assert isinstance(fig, Figure)
    fig.savefig(tmp_path / "trace.png")
    assert (tmp_path / "trace.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("correct", "options", "message"),
    [
        (CORRECT, {"chunk_tokens": 0}, "chunk_tokens"),
        (CORRECT, {"chunk_tokens": 2.5}, "chunk_tokens"),
        (CORRECT, {"naming_relations": "P17"}, "'P17'"),
        ({}, {}, "empty"),
        ({("japan-capital", "ko"): True}, {}, "'ko'"),
        ({("atlantis-capital", "en"): True}, {}, "'atlantis-capital'"),
        ({"japan-capital": True}, {}, "'japan-capital'"),
        ({("japan-capital", "en"): "yes"}, {}, "'yes'"),
    ],
)
def test_trace_errors(tokenizer, correct, options, message):
    with pytest.raises(REFUSED, match=message):
        trace(fact_set(), corpus(), tokenizer, correct, progress=False, **options)


def test_fact_presence_rejects_bad_chunk_size(tokenizer):
    with pytest.raises(ValueError, match="-3"):
        fact_presence(fact_set(), corpus(), tokenizer, chunk_tokens=-3)


def test_byte_level_bpe_tokenizer():
    """A GPT-2 style tokenizer: a word after a space is "Ġword", at the start "word"."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = ["The capital of Japan is Tokyo.", "Tokyo lies in Japan.", "Abuja is in Nigeria."]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet, show_progress=False)
    core.train_from_iterator(text * 10, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    facts = FactSet(
        [
            Fact("a", "en", "P36", "Japan", "Tokyo"),
            Fact("b", "en", "P36", "Nigeria", "Abuja"),
            Fact("c", "en", "P36", "Japan", "Abuja"),
        ],
        {("en", "P36"): "[X] [Y]"},
    )
    present = fact_presence(facts, MultilingualCorpus({"en": lambda: text}), tok, progress=False)
    assert present == {("a", "en"): True, ("b", "en"): True, ("c", "en"): False}
    fact = Fact("x", "en", "P36", "Tokyo Bay", "Tokyo tower")
    assert classify_absent_correct(fact, tok) == "shared entity tokens"


def test_whole_words_in_spaced_languages_substrings_in_unspaced(tmp_path):
    from tiny import make_tokenizer

    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.data.facts import Fact, FactSet
    from mlneurons.methods.tracing import fact_presence

    tokenizer = make_tokenizer(tmp_path)
    facts = FactSet(
        [Fact("a", "en", "P1", "en1", "en2"), Fact("a", "zh", "P1", "zh1", "zh2")],
        {("en", "P1"): "[X] [Y]", ("zh", "P1"): "[X] [Y]"},
    )
    corpus = MultilingualCorpus({"en": lambda: ["en10 en2"], "zh": lambda: ["zh10 zh2"]})
    present = fact_presence(facts, corpus, tokenizer, progress=False)
    assert present[("a", "en")] is False  # "en1" only inside the word "en10"
    assert present[("a", "zh")] is True  # no word boundaries in zh: a substring counts
