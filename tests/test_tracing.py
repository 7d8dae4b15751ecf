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


# ---- corpus scale: one Aho-Corasick pass, stems, streamed corpora ----------------


def byte_tokenizer():
    """One token per UTF-8 byte (byte-level BPE without merges): a chunk of n tokens is n
    bytes of the document, so chunk boundaries fall exactly where a test puts them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core)


@pytest.fixture(scope="module")
def bytes_tok():
    return byte_tokenizer()


TRICKY = {
    "en": [
        "Tirana is the capital of Albania.",
        "Tirana, not Iran: Tehran.",
        "The Republic of Chad lies in Africa.",
        "The U.S. capital is Washington; the USA is big.",
        "STRASSE in Vienna",
    ],
    "de": ["Die Hauptstadt Frankreichs ist Paris.", "Berlin ist die Hauptstadt Deutschlands."],
    "zh": ["日本的首都是東京。", "大阪不是首都"],
}
TRICKY_FACTS = [
    # uuid, lang, subject, object, present (exact), present (stem)
    ("iran-albania", "en", "Iran", "Albania", False, False),  # "Iran" only inside "Tirana"
    ("iran-tehran", "en", "Iran", "Tehran", True, True),  # its second occurrence is whole
    ("tirana-albania", "en", "Tirana", "Albania", True, True),
    ("chad", "en", "Republic of Chad", "Chad", True, True),  # overlapping matches
    ("chad-africa", "en", "chad", "AFRICA", True, True),
    ("us", "en", "U.S.", "Washington", True, True),  # entity edged by punctuation
    ("us-short", "en", "U.S", "Washington", True, True),  # "." after it is no word character
    ("usa", "en", "USA", "Washington", True, True),
    ("strasse", "en", "Straße", "Vienna", True, True),  # casefold: ß -> ss
    ("frank", "de", "Frankreich", "Paris", False, True),  # inflected: "Frankreichs"
    ("frank-part", "de", "Frank", "Paris", False, False),  # a part of a word, not a word
    ("berlin", "de", "Deutschland", "Berlin", False, True),
    ("tokyo", "zh", "日本", "東京", True, True),  # no spaces in zh: substrings
    ("across", "zh", "本的", "東京", True, True),  # a substring across two words counts
    ("osaka", "zh", "日本", "大阪", False, False),  # in different documents
]


def tricky_facts() -> FactSet:
    facts = [Fact(u, lang, "P1", s, o) for u, lang, s, o, _, _ in TRICKY_FACTS]
    return FactSet(facts, {(lang, "P1"): "[X] [Y]" for lang in TRICKY})


@pytest.mark.parametrize("match", ["exact", "stem"])
@pytest.mark.parametrize("search", ["aho-corasick", "scan"])
def test_presence_on_tricky_text(bytes_tok, match, search):
    text = MultilingualCorpus({lang: lambda docs=docs: docs for lang, docs in TRICKY.items()})
    present = fact_presence(
        tricky_facts(), text, bytes_tok, match=match, search=search, progress=False
    )
    column = 4 if match == "exact" else 5
    assert present == {(f[0], f[1]): f[column] for f in TRICKY_FACTS}


@pytest.mark.parametrize("search", ["aho-corasick", "scan"])
def test_an_entity_cut_by_a_chunk_boundary_is_in_neither_chunk(bytes_tok, search):
    facts = FactSet([Fact("n", "en", "P1", "Nigeria", "Abuja")], {("en", "P1"): "[X] [Y]"})
    text = MultilingualCorpus({"en": lambda: ["Nigeria and Abuja"]})  # 17 bytes + "\n\n"
    cut = fact_presence(facts, text, bytes_tok, chunk_tokens=16, search=search, progress=False)
    whole = fact_presence(facts, text, bytes_tok, chunk_tokens=17, search=search, progress=False)
    assert cut == {("n", "en"): False} and whole == {("n", "en"): True}


def random_span_facts(lang: str, text: str, n: int, seed: int) -> list[Fact]:
    """Facts whose subject and object are random spans of ``text``: runs of one to three
    words (with their punctuation; one in four cut inside a word), or of characters in zh
    and ja; half of the pairs near each other, half far apart."""
    g = torch.Generator().manual_seed(seed)
    units = list(text) if lang in ("zh", "ja") else text.split()
    joiner = "" if lang in ("zh", "ja") else " "

    def randint(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=g))

    def span(i: int) -> str:
        i = max(0, min(i, len(units) - 6))
        label = joiner.join(units[i : i + (randint(2, 6) if not joiner else randint(1, 4))])
        return label[: -randint(1, 3)] if randint(0, 4) == 0 and len(label) > 3 else label

    facts = []
    for k in range(n):
        a = randint(0, len(units))
        b = a + randint(-25, 25) if k % 2 else len(units) - a
        facts.append(Fact(f"span{k}", lang, "P1", span(a), span(b)))
    return facts


def test_aho_corasick_equals_scan_on_the_builtin_corpus(bytes_tok):
    """Identical presence maps from the automaton and the per-entity scan: the built-in
    facts and random spans of the built-in text (cut words, punctuation, CJK), 512-byte
    chunks of the built-in prose of eight languages."""
    languages = ["en", "de", "fr", "ru", "ar", "hi", "zh", "ja"]
    builtin = FactSet.builtin(languages=languages)
    text = MultilingualCorpus.builtin(languages, split="all", tokens_per_language=30_000)
    facts = list(builtin.facts)
    for k, lang in enumerate(languages):
        facts += random_span_facts(lang, " ".join(text.sources[lang]()[:40]), 150, seed=k)
    facts = FactSet(facts, {**builtin.templates, **{(lg, "P1"): "[X] [Y]" for lg in languages}})
    fast = fact_presence(facts, text, bytes_tok, search="aho-corasick", progress=False)
    slow = fact_presence(facts, text, bytes_tok, search="scan", progress=False)
    assert fast == slow
    assert len(fast) == len(facts.facts)
    hits = sum(fast.values())
    spans = len(fast) - len(builtin.facts)
    assert 0.2 * spans < hits < 0.8 * spans  # plenty of both
    # stems: the same identity, and every exact match is a stemmed match
    stem_langs = ["de", "ru"]
    sub = facts.subset(languages=stem_langs)
    text = MultilingualCorpus.builtin(stem_langs, split="all", tokens_per_language=8_000)
    fast = fact_presence(sub, text, bytes_tok, match="stem", progress=False)
    slow = fact_presence(sub, text, bytes_tok, match="stem", search="scan", progress=False)
    assert fast == slow
    exact = fact_presence(sub, text, bytes_tok, progress=False)
    assert all(fast[k] for k, v in exact.items() if v)


@pytest.mark.slow
def test_aho_corasick_equals_scan_with_gemma_tokenizer(gemma):
    languages = ["en", "de", "zh", "ja"]
    facts = FactSet.builtin(languages=languages)
    text = MultilingualCorpus.builtin(languages, split="all")
    fast = fact_presence(facts, text, gemma.tokenizer, chunk_tokens=64, progress=False)
    slow = fact_presence(
        facts, text, gemma.tokenizer, chunk_tokens=64, search="scan", progress=False
    )
    assert fast == slow and any(fast.values())


def test_stemmers_are_snowball_algorithms():
    import snowballstemmer

    from mlneurons.methods.tracing import STEMMERS, stemmed_languages

    assert set(STEMMERS.values()) <= set(snowballstemmer.algorithms())
    assert stemmed_languages(["de", "zh", "ru", "ja"], "stem") == ["de", "ru"]
    assert stemmed_languages(["de", "zh"], "exact") == []


def test_trace_records_the_matching_and_empty_languages(bytes_tok):
    text = MultilingualCorpus({**{k: lambda v=v: v for k, v in TRICKY.items()}, "de": list})
    correct = {(f[0], f[1]): True for f in TRICKY_FACTS}
    result = trace(tricky_facts(), text, bytes_tok, correct, match="stem", progress=False)
    assert result.settings["match"] == "stem" and result.settings["stemmed"] == ["en", "de"]
    assert set(result.codes["de"].values()) == {-1}  # no German text: not in data
    assert result.codes["en"]["iran-tehran"] == 3 and result.codes["en"]["iran-albania"] == 2
    from mlneurons.interfaces.commands.trace import describe

    assert "by word stem (Snowball) in en, de; exactly in zh (no stemmer)" in describe(result)[1]
    with pytest.raises(REFUSED, match="match"):
        trace(tricky_facts(), text, bytes_tok, correct, match="lemma", progress=False)


def test_long_lines_are_read_in_pieces():
    import io

    from mlneurons.data.corpus import _lines

    text = "aaa bbb ccc ddd\nshort\n\n" + "x" * 25
    pieces = list(_lines(io.StringIO(text), 10))
    assert pieces == ["aaa bbb ", "ccc ddd\n", "short\n", "x" * 10, "x" * 10, "x" * 5]
    assert "".join(pieces) == text.replace("\n\n", "\n")
    assert list(_lines(io.StringIO("a\n\nb"), 10)) == ["a\n", "b"]


def test_a_huge_line_never_held_whole(tmp_path, monkeypatch, bytes_tok):
    import mlneurons.data.corpus as corpus_module

    monkeypatch.setattr(corpus_module, "LINE_LIMIT", 100)
    line = "Nigeria Abuja " + "x " * 1500 + "Lagos"  # one 3,019-character line
    (tmp_path / "en.txt").write_text(line)
    files = MultilingualCorpus.from_files(tmp_path)
    pieces = list(files.sources["en"]())
    assert max(map(len, pieces)) <= 100 and "".join(pieces) == line
    facts = FactSet(
        [Fact("a", "en", "P1", "Nigeria", "Abuja"), Fact("b", "en", "P1", "Abuja", "Lagos")],
        {("en", "P1"): "[X] [Y]"},
    )
    present = fact_presence(facts, files, bytes_tok, progress=False)
    assert present == {("a", "en"): True, ("b", "en"): False}  # in different pieces


def _layouts(tmp_path):
    """The same English and German text as a save_to_disk DatasetDict, a save_to_disk
    Dataset with a language column, and folders of jsonl and parquet files."""
    from datasets import Dataset, DatasetDict

    texts = {"en": list(EN_TEXT), "de": ["the capital of Japan is Tokyo ."]}
    by_split = DatasetDict({k: Dataset.from_dict({"body": v}) for k, v in texts.items()})
    by_split.save_to_disk(tmp_path / "splits")
    rows = [{"body": t, "lang": k, "n": i} for k, v in texts.items() for i, t in enumerate(v)]
    Dataset.from_list(rows).save_to_disk(tmp_path / "column")
    for kind in ("json", "parquet"):
        (tmp_path / kind).mkdir()
        for k, v in texts.items():
            part = Dataset.from_dict({"body": v, "id": list(range(len(v)))})
            if kind == "json":
                part.to_json(tmp_path / kind / f"{k}.jsonl")
            else:
                part.to_parquet(tmp_path / kind / f"{k}.parquet")
    return {
        "splits": {},
        "column": {"language_column": "lang"},
        "json": {},
        "parquet": {},
    }


def test_datasets_corpora_give_the_presence_of_the_same_text(tokenizer, tmp_path, monkeypatch):
    import datasets

    calls = []
    load = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(k) or load(*a, **k))
    expected = fact_presence(fact_set(), corpus(), tokenizer, chunk_tokens=8, progress=False)
    expected[("japan-capital", "de")] = True
    for name, options in _layouts(tmp_path).items():
        text = MultilingualCorpus.from_hf(
            tmp_path / name, text_column="body", languages=["en", "de", "fr"], **options
        )
        assert text.languages == ["en", "de"], name  # fr: not in the data, left out
        got = fact_presence(fact_set(), text, tokenizer, chunk_tokens=8, progress=False)
        assert got == expected, name
    assert [k["streaming"] for k in calls] == [True, True]  # data files: streamed


def test_a_streamed_dataset_is_read_lazily(tokenizer):
    from datasets import IterableDataset

    def rows():
        yield {"text": "the capital of Japan is Tokyo .", "lang": "en"}
        raise AssertionError("read past the point where every fact was present")

    stream = IterableDataset.from_generator(rows)
    text = MultilingualCorpus.from_dataset(stream, language_column="lang", languages=["en"])
    facts = FactSet([Fact("a", "en", "P36", "Japan", "Tokyo")], {("en", "P36"): "[X] [Y]"})
    assert fact_presence(facts, text, tokenizer, progress=False) == {("a", "en"): True}


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("splits", {"text_column": "text"}, "text_column 'text' is not a column of language"),
        ("column", {"text_column": "body", "language_column": "lng"}, "'lng' is not a column"),
        ("none", {}, "does not exist"),
        ("empty", {}, "needs {lang}.jsonl"),
    ],
)
def test_datasets_corpus_errors(tmp_path, name, options, message):
    from mlneurons.errors import UserError

    _layouts(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=message.replace("{", r"\{")):
        MultilingualCorpus.from_hf(tmp_path / name, **options)


def test_trace_cli_on_a_datasets_corpus(planted_dir, tmp_path):
    """``--corpus hf:DIR --text-column --language-column``: the codes of the same text as a
    folder of {lang}.txt (test_probing)."""
    import json

    from datasets import Dataset
    from tiny import tiny_facts

    from mlneurons.interfaces.cli import main

    tiny_facts().to_mlama(tmp_path / "mlama")
    rows = [("fr1 en2 fr5 en3", "en"), ("zh1 en2 en3", "en"), ("en3 en4 en6", "de")]
    Dataset.from_dict({"t": [r[0] for r in rows], "l": [r[1] for r in rows]}).to_json(
        tmp_path / "hf" / "all.jsonl"
    )  # one file: a single split, the rows carry their language
    common = ["--model", str(planted_dir), "--facts", f"mlama:{tmp_path / 'mlama'}"]
    hf = ["--corpus", f"hf:{tmp_path / 'hf'}", "--text-column", "t", "--language-column", "l"]
    assert main(["trace", *common, *hf, "--match", "stem", "--out", str(tmp_path / "t")]) == 0
    result = json.loads((tmp_path / "t" / "trace.json").read_text())
    assert result["codes"]["en"] == {"f1": 3, "f2": 0, "f3": 2}
    assert result["codes"]["de"]["f4"] == 3
    assert sorted(result["settings"]["stemmed"]) == ["de", "en"]
    assert result["settings"]["corpus"]["language_column"] == "l"


def test_hf_corpus_names(tmp_path):
    from mlneurons.interfaces.commands.trace import hf_source

    assert hf_source("wikimedia/wikipedia:20231101.fr") == ("wikimedia/wikipedia", "20231101.fr")
    assert hf_source("org/name") == ("org/name", None)
    (tmp_path / "a:b").mkdir()
    assert hf_source(str(tmp_path / "a:b")) == (str(tmp_path / "a:b"), None)  # a folder: whole


def test_shares_carry_wilson_intervals() -> None:
    from mlneurons.evaluation.uncertainty import wilson
    from mlneurons.methods.tracing import TracingResult

    codes = {"en": {"a": 3, "b": 1, "c": 0, "d": 2}, "sw": {"a": -1}}
    result = TracingResult(["en", "sw"], codes, {"en": {"d": "others"}}, {})
    shares = result.shares()
    assert shares["en"]["present"] == wilson(2, 4)  # codes 1 and 3 are present
    assert shares["en"]["absent, correct"] == wilson(1, 4) and "sw" not in shares
    saved = result.to_json()["shares"]["en"]["present"]
    assert (saved["value"], saved["n"], saved["method"]) == (0.5, 4, "Wilson score")
