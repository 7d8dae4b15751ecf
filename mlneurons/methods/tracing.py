"""Knowledge tracing: was a fact in a language's text, and does the model know it?

After Zhao, Yoshinaga & Oba (EACL 2024, ``xzhao-tkl/fact-cl``, ``wikidata/``): a
language's text is tokenized and cut into chunks of at most ``chunk_tokens`` tokens
(512 in the paper, on the Oct/Nov 2018 Wikipedia dump tokenized with mBERT); a fact is
*present* in a language when one chunk holds both its subject and its object. Each
(fact, language) then gets a code:

====  ==================
 -1   not in data (the corpus lacks the language, or its text is empty)
  0   absent, wrong
  1   present, wrong
  2   absent, correct
  3   present, correct
====  ==================

Absent but correctly predicted facts (code 2) are explained by Zhao's rules, in order:
"shared entity tokens" (the object is a case-insensitive substring of the subject, or
their token sets intersect), "naming cues" (the relation is one whose object is cued
by the subject's name, e.g. country of citizenship) and "others", the candidates for
cross-lingual transfer.

Chunks are cut in tokens, but matching is on text: each chunk is decoded
(``tokenizer.decode(ids, skip_special_tokens=True)``) and an entity is in the chunk
when its label, casefolded with runs of whitespace collapsed to one space, occurs in
the chunk's text normalised the same way. Zhao greps mBERT token strings,
and mBERT splits Chinese and Japanese into single characters, so an entity's tokens
occur in the text whatever its neighbours. A BPE or SentencePiece tokenizer (Gemma's)
merges characters across an entity's edges in scripts written without spaces (zh, ja,
th): in "是東京。" the pieces may be "是東" + "京。", so the ids of "東京" alone never
occur, and matching on ids would mark such facts absent, inflating code 2 (absent,
correct), the cross-lingual-transfer signal. Decoded text has no such dependence on
segmentation. Like Zhao's grep, a match may overlap another (the object "Chad" is
found inside the subject "Republic of Chad"). In languages written with spaces a match
must be a whole word ("Iran" is not found in "Tirana"); in those written without (zh, ja,
th...) it is a plain substring, as there are no word edges to respect. The decoding must
give back the text (true of byte-level BPE and SentencePiece; a WordPiece decoder that
puts spaces between CJK characters would hide multi-character CJK entities). Text lost
to unknown tokens cannot match. A chunk boundary can split an entity, which is then
found in neither chunk (as in Zhao's token chunks).

At corpus scale the text is streamed (a document at a time, bounded memory) and each
chunk is searched for all of a language's subjects and objects in one pass of an
Aho-Corasick automaton, with results identical to one search per entity. Optionally
(``match="stem"``) words match by their Snowball stem, so that inflected forms count
(German "Frankreichs" for "Frankreich"), in the languages of :data:`STEMMERS`.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from tqdm.auto import tqdm

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.data.facts import Fact, FactSet
from mlneurons.evaluation.uncertainty import Estimate, Uncertainty, wilson
from mlneurons.results import Result

CODES: dict[int, str] = {
    -1: "not in data",
    0: "absent, wrong",
    1: "present, wrong",
    2: "absent, correct",
    3: "present, correct",
}
"""Zhao et al.'s tracing codes: -1 without text, else 2 * correct + present."""

NAMING_RELATIONS = frozenset({"P17", "P27", "P1412", "P140", "P103"})
"""Zhao's naming-cue relations: country, citizenship, languages spoken, religion,
native language."""

SHARED = "shared entity tokens"
NAMING = "naming cues"
OTHERS = "others"
CATEGORIES: tuple[str, ...] = (SHARED, NAMING, OTHERS)
"""Zhao's rule categories of absent-but-correct (code 2) facts, in the order applied."""

TRACE_FILE = "trace.json"
"""File name written by :meth:`TracingResult.save`."""

CATEGORY_PREFIX = "absent-correct: "


# ---- presence --------------------------------------------------------------------

Search = Literal["aho-corasick", "scan"]
"""How a chunk's text is searched: all entities at once with an Aho-Corasick automaton
(``pyahocorasick``), or one substring search per entity (the reference). Same results."""
SEARCHES: tuple[Search, ...] = get_args(Search)

Matching = Literal["exact", "stem"]
"""How an entity label matches text: ``exact`` (casefolded, whitespace-normalised, whole
words where words are spaced; Zhao's grep) or ``stem`` (word by word, by Snowball stem,
where :data:`STEMMERS` has the language; exact elsewhere)."""
MATCHINGS: tuple[Matching, ...] = get_args(Matching)

STEMMERS: dict[str, str] = {
    "ar": "arabic", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german",
    "el": "greek", "en": "english", "eo": "esperanto", "es": "spanish", "et": "estonian",
    "eu": "basque", "fa": "persian", "fi": "finnish", "fr": "french", "ga": "irish",
    "hi": "hindi", "hu": "hungarian", "hy": "armenian", "id": "indonesian", "it": "italian",
    "lt": "lithuanian", "nb": "norwegian", "ne": "nepali", "nl": "dutch", "no": "norwegian",
    "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sr": "serbian",
    "st": "sesotho", "sv": "swedish", "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}  # fmt: skip
"""ISO 639-1 code -> the ``snowballstemmer`` algorithm of ``match="stem"``. Other
languages (zh, ja, ko, th, vi, uk, bg, he, ...) have no Snowball stemmer and are matched
exactly."""


def fact_presence(
    facts: FactSet,
    corpus: MultilingualCorpus,
    tokenizer: Any,
    *,
    chunk_tokens: int = 512,
    match: Matching = "exact",
    search: Search = "aho-corasick",
    progress: bool = True,
) -> dict[tuple[str, str], bool]:
    """Zhao's presence: do a fact's subject and object co-occur in one chunk?

    Each document of a language's token stream (a text line or paragraph, or the
    whole tensor of :meth:`MultilingualCorpus.from_token_ids`) is cut into consecutive
    chunks of at most ``chunk_tokens`` tokens, up to the corpus's
    ``tokens_per_language`` budget. Each chunk is decoded to text, and an entity is in
    it when its casefolded, whitespace-normalised label occurs in the chunk's
    casefolded, whitespace-normalised text, as whole words except in languages written
    without spaces (see the module docstring: token-id
    matching misses entities whose characters a BPE or SentencePiece tokenizer merges
    with their neighbours in scripts without spaces). An entity cut by a chunk
    boundary is in neither chunk.

    With ``match="stem"`` (inflection-aware matching, for languages of
    :data:`STEMMERS`) the chunk's text and each label are split into words (runs of
    word characters; every other non-space character is a word of its own), each word
    replaced by its Snowball stem, and a label matches a run of whole words of the
    chunk: German "Frankreichs" matches "Frankreich". Every exact match is also a
    stemmed match. Languages without a stemmer are matched exactly.

    The corpus is streamed: each language's text is read once, a document at a time,
    and memory holds one document's tokens, one chunk's text and the entities. Each
    chunk is searched for all of the language's entities in one pass of an
    Aho-Corasick automaton (``search="aho-corasick"``), or with one substring search
    per entity still needed (``search="scan"``, the reference; facts found present
    drop out). Both give identical results. The pass stops when every fact is present.

    Args:
        facts: the facts to look for.
        corpus: the text; its languages without facts are ignored.
        tokenizer: a Hugging Face tokenizer, the one that tokenizes the corpus; it
            also decodes the chunks to text.
        chunk_tokens: the chunk size in tokens (Zhao: 512 mBERT tokens).
        match: ``"exact"`` (Zhao) or ``"stem"``.
        search: ``"aho-corasick"`` or ``"scan"``.
        progress: show a tqdm progress bar per language.

    Returns:
        (uuid, lang) -> present, for every fact whose language has text in the corpus;
        facts of other languages, or of a language whose text is empty, get no entry
        (code -1 in :func:`trace`).

    Raises:
        ValueError: ``chunk_tokens`` below 1, an unknown ``match`` or ``search``.
    """
    _check_chunk_tokens(chunk_tokens)
    _check_choice("match", match, MATCHINGS)
    _check_choice("search", search, SEARCHES)
    return _presence(facts.facts, corpus, tokenizer, chunk_tokens, match, search, progress)


def stemmed_languages(languages: Iterable[str], match: Matching) -> list[str]:
    """The ``languages`` matched by stem under ``match`` (those of :data:`STEMMERS`)."""
    return [lang for lang in languages if match == "stem" and lang in STEMMERS]


def _presence(
    facts: list[Fact],
    corpus: MultilingualCorpus,
    tokenizer: Any,
    chunk_tokens: int,
    match: Matching,
    search: Search,
    progress: bool,
) -> dict[tuple[str, str], bool]:
    by_language: dict[str, list[Fact]] = {}
    for fact in facts:
        if fact.lang in corpus.sources:
            by_language.setdefault(fact.lang, []).append(fact)
    result: dict[tuple[str, str], bool] = {}
    for lang, lang_facts in by_language.items():
        rules = _Rules.of(lang, match)
        pairs = [(rules.prepare(f.subject), rules.prepare(f.object)) for f in lang_facts]
        chunks = _chunks(lang, corpus, tokenizer, chunk_tokens, rules.prepare, progress)
        try:
            present = _chunk_presence(chunks, pairs, rules.boundary, search)
        finally:
            chunks.close()  # stopped early: close the files and the progress bar now
        if present is not None:  # None: the language has no text
            result.update({(fact.uuid, lang): hit for fact, hit in zip(lang_facts, present)})
    return result


@dataclass(frozen=True)
class _Rules:
    """How one language's text and labels are matched.

    Attributes:
        prepare: text or label -> the string searched (normalised; stemmed words).
        boundary: a character class that must not touch a match on either side
            (``\\w``: whole words; ``\\S``: whole stemmed words); None: plain substrings.
    """

    prepare: Callable[[str], str]
    boundary: re.Pattern[str] | None

    @staticmethod
    def of(lang: str, match: Matching) -> _Rules:
        if lang in stemmed_languages([lang], match):
            return _Rules(_stemmed_text(STEMMERS[lang]), _SPACE_BOUNDARY)
        if lang in UNSPACED_LANGUAGES:  # no word boundaries to respect: plain substrings
            return _Rules(_normalize, None)
        return _Rules(_normalize, _WORD_BOUNDARY)  # whole words only: "Iran" is not in "Tirana"


_WORD_BOUNDARY = re.compile(r"\w")
_SPACE_BOUNDARY = re.compile(r"\S")
_WORDS = re.compile(r"(\w+)|[^\w\s]")
STEM_CACHE = 1 << 17
"""Distinct words whose stems are kept per language (a bounded cache)."""


def _stemmed_text(algorithm: str) -> Callable[[str], str]:
    """text -> its casefolded words, each word-character run replaced by its stem, joined
    by single spaces ("Frankreichs." -> "frankreich .")."""
    import snowballstemmer

    stem = functools.lru_cache(maxsize=STEM_CACHE)(snowballstemmer.stemmer(algorithm).stemWord)

    def prepare(text: str) -> str:
        return " ".join(stem(m[0]) if m[1] else m[0] for m in _WORDS.finditer(text.casefold()))

    return prepare


def _chunks(
    lang: str,
    corpus: MultilingualCorpus,
    tokenizer: Any,
    chunk_tokens: int,
    prepare: Callable[[str], str],
    progress: bool,
) -> Generator[str, None, None]:
    """The prepared text of each chunk of ``lang``'s token stream, in order, up to the
    corpus's token budget (a document at a time: bounded memory)."""
    budget = corpus.tokens_per_language
    bar = tqdm(desc=f"trace: {lang}", unit="tok", unit_scale=True, total=budget,
               disable=not progress)  # fmt: skip
    try:
        for piece in corpus.token_stream(lang, tokenizer):
            if budget is not None:
                piece, budget = piece[:budget], budget - min(budget, piece.numel())
            bar.update(piece.numel())
            for start in range(0, piece.numel(), chunk_tokens):
                ids = piece[start : start + chunk_tokens]  # a tensor: decode lists it at once
                yield prepare(tokenizer.decode(ids, skip_special_tokens=True))
            if budget == 0:
                break
    finally:
        bar.close()


def _chunk_presence(
    chunks: Iterable[str],
    pairs: list[tuple[str, str]],
    boundary: re.Pattern[str] | None,
    search: Search,
) -> list[bool] | None:
    """present[i]: pairs[i]'s two (prepared) entities occur in one chunk; None without
    chunks. An empty entity never matches."""
    # entity -> [(fact position, the other entity)]
    by_entity: dict[str, list[tuple[int, str]]] = {}
    # entity -> how many facts not yet present need it
    needed: dict[str, int] = {}
    for k, (subject, obj) in enumerate(pairs):
        if not subject or not obj:
            continue
        for entity, other in ((subject, obj), (obj, subject)):
            by_entity.setdefault(entity, []).append((k, other))
        for entity in {subject, obj}:
            needed[entity] = needed.get(entity, 0) + 1
    present = [False] * len(pairs)
    pending = set(needed)  # the entities still worth searching for
    find = _automaton(pending, boundary) if search == "aho-corasick" else _scan(pending, boundary)
    seen = False
    for text in chunks:
        seen = True
        found = find(text)
        for entity in found:
            for k, other in by_entity[entity]:
                if not present[k] and other in found:
                    present[k] = True
                    for done in set(pairs[k]):
                        needed[done] -= 1
                        if needed[done] == 0:
                            pending.discard(done)
        if not pending:  # every fact is present (or none can be)
            break
    return present if seen else None


def _scan(pending: set[str], boundary: re.Pattern[str] | None) -> Callable[[str], set[str]]:
    """One substring search per entity still in ``pending`` (a live view)."""
    patterns: dict[str, re.Pattern[str]] = {}
    if boundary is not None:
        edge = boundary.pattern
        patterns = {e: re.compile(rf"(?<!{edge}){re.escape(e)}(?!{edge})") for e in pending}

    def find(text: str) -> set[str]:
        return {
            entity
            for entity in pending
            if entity in text and (boundary is None or patterns[entity].search(text))
        }

    return find


def _automaton(entities: set[str], boundary: re.Pattern[str] | None) -> Callable[[str], set[str]]:
    """All of ``entities`` in one pass of an Aho-Corasick automaton; every occurrence is
    reported (overlapping ones too), then checked against ``boundary``."""
    import ahocorasick

    if not entities:
        return lambda text: set()
    automaton = ahocorasick.Automaton()
    for entity in entities:
        automaton.add_word(entity, entity)
    automaton.make_automaton()

    def find(text: str) -> set[str]:
        found: set[str] = set()
        for end, entity in automaton.iter(text):
            if entity in found:
                continue
            if boundary is not None:
                start = end - len(entity) + 1
                if (start and boundary.match(text, start - 1)) or boundary.match(text, end + 1):
                    continue
            found.add(entity)
        return found

    return find


UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo"})
"""Languages written without spaces between words: entities match as plain substrings there;
elsewhere they must be whole words."""


def _normalize(text: str) -> str:
    """Casefolded, with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(text.casefold().split())


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", None) or ())
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None:
        ids.add(unk)
    return ids


# ---- rules for absent-but-correct facts -------------------------------------------


def classify_absent_correct(
    fact: Fact, tokenizer: Any, *, naming_relations: Iterable[str] = NAMING_RELATIONS
) -> str:
    """Zhao's rule category of an absent but correctly predicted fact (code 2).

    Rules, in order:

    1. ``"shared entity tokens"``: the object is a case-insensitive substring of the
       subject, or the subject's and object's token sets intersect. The token sets are
       those of the entities tokenized as in running text (after a space), compared as
       decoded text without surrounding whitespace; tokens that are pure whitespace or
       punctuation, and unknown or special tokens, are ignored. (Zhao also converts
       Chinese to Simplified script first; this does not.)
    2. ``"naming cues"``: the relation is in ``naming_relations``.
    3. ``"others"``: a candidate for cross-lingual transfer.
    """
    relations = _check_relations(naming_relations)
    if fact.object.casefold() in fact.subject.casefold():
        return SHARED
    if _token_set(fact.subject, tokenizer) & _token_set(fact.object, tokenizer):
        return SHARED
    if fact.relation in relations:
        return NAMING
    return OTHERS


def _token_set(text: str, tokenizer: Any) -> set[str]:
    """Decoded tokens of ``text`` as it is tokenized mid-sentence (after a space).

    Surrounding whitespace is stripped, so ``"▁Chad"`` and ``"Chad"`` compare equal;
    pure whitespace or punctuation, partial characters, unknown and special tokens are
    left out.
    """
    skip = _special_ids(tokenizer)
    tokens: set[str] = set()
    for token_id in tokenizer(" " + text, add_special_tokens=False)["input_ids"]:
        if token_id in skip:
            continue
        token = tokenizer.decode([token_id]).strip()
        if token and "\ufffd" not in token and not _is_punctuation(token):
            tokens.add(token)
    return tokens


def _is_punctuation(token: str) -> bool:
    return all(ch.isspace() or unicodedata.category(ch).startswith("P") for ch in token)


# ---- results -----------------------------------------------------------------------


@dataclass
class TracingResult(Result):
    """Zhao et al.'s tracing codes per language and fact.

    Attributes:
        languages: the traced languages, in the fact set's order.
        codes: lang -> uuid -> code (see :data:`CODES`).
        categories: lang -> uuid -> rule category (see :data:`CATEGORIES`), for the
            facts of code 2 only.
        settings: ``chunk_tokens``, ``naming_relations``, the corpus, tokenizer and fact
            set descriptions.
        model: a description of the model whose predictions were traced (free form).
    """

    FILE: ClassVar[str] = TRACE_FILE

    languages: list[str]
    codes: dict[str, dict[str, int]]
    categories: dict[str, dict[str, str]]
    settings: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)

    def breakdown(self) -> dict[str, dict[str, int]]:
        """Counts per language: each code's label, then the code-2 facts by category.

        Keys are the labels of :data:`CODES` and ``"absent-correct: <category>"`` for
        each of :data:`CATEGORIES`; every key is present, zeros included.
        """
        out: dict[str, dict[str, int]] = {}
        for lang in self.languages:
            counts = dict.fromkeys(CODES.values(), 0)
            for code in self.codes.get(lang, {}).values():
                counts[CODES[code]] += 1
            for category in CATEGORIES:
                counts[CATEGORY_PREFIX + category] = 0
            for category in self.categories.get(lang, {}).values():
                counts[CATEGORY_PREFIX + category] += 1
            out[lang] = counts
        return out

    def shares(self) -> dict[str, dict[str, Estimate]]:
        """Per language, the share of its traced facts under each code's label and of the
        facts *present* in its text (codes 1 and 3), with Wilson intervals at the recorded
        confidence; languages without text (code -1 only) are left out."""
        confidence = Uncertainty.of(self.settings).confidence
        out: dict[str, dict[str, Estimate]] = {}
        for lang in self.languages:
            codes = [c for c in self.codes.get(lang, {}).values() if c >= 0]
            if not codes:
                continue
            row = {
                CODES[c]: wilson(codes.count(c), len(codes), confidence) for c in CODES if c >= 0
            }
            row["present"] = wilson(sum(c in (1, 3) for c in codes), len(codes), confidence)
            out[lang] = row
        return out

    def to_json(self) -> dict[str, Any]:
        """The fields, with the shares and their intervals for readers of the file."""
        shares = {
            lang: {k: e.to_json() for k, e in row.items()} for lang, row in self.shares().items()
        }
        return {**super().to_json(), "shares": shares}


def trace(
    facts: FactSet,
    corpus: MultilingualCorpus,
    tokenizer: Any,
    correct: Mapping[tuple[str, str], bool],
    *,
    chunk_tokens: int = 512,
    match: Matching = "exact",
    search: Search = "aho-corasick",
    naming_relations: Iterable[str] = NAMING_RELATIONS,
    model: dict[str, Any] | None = None,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> TracingResult:
    """Zhao et al.'s knowledge tracing: presence in the text crossed with correctness.

    Args:
        facts: the probed facts.
        corpus: the text per language (Zhao: Wikipedia).
        tokenizer: the tokenizer of the corpus and the model.
        correct: (uuid, lang) -> whether the model predicted the fact correctly; facts
            without an entry are skipped.
        chunk_tokens: the chunk size of :func:`fact_presence`.
        match: ``"exact"`` (Zhao) or ``"stem"`` (inflection-aware, where a Snowball
            stemmer exists; recorded in the settings with the languages it covered).
        search: ``"aho-corasick"`` or ``"scan"`` (the reference); identical codes.
        naming_relations: the relations of the "naming cues" rule.
        model: the fingerprint of the model whose predictions were traced.
        progress: show tqdm progress bars.
        uncertainty: the level of the shares' Wilson intervals (recorded).

    Returns:
        The codes of the languages that have entries in ``correct``: -1 where the corpus
        lacks the language, else ``2 * correct + present``.

    Raises:
        ValueError: ``chunk_tokens`` below 1, an unknown ``match`` or ``search``,
            ``naming_relations`` given as one string,
            an empty ``correct``, a key whose language or fact is not in ``facts``, or
            a value that is not a boolean.
    """
    _check_chunk_tokens(chunk_tokens)
    _check_choice("match", match, MATCHINGS)
    _check_choice("search", search, SEARCHES)
    relations = _check_relations(naming_relations)
    if not correct:
        raise ValueError("correct is empty: no (uuid, lang) -> bool entries to trace")
    known = {(f.uuid, f.lang): f for f in facts.facts}
    languages = facts.languages
    for key, value in correct.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"keys of correct must be (uuid, lang) pairs, got {key!r}")
        if key[1] not in languages:
            raise ValueError(
                f"language {key[1]!r} of correct key {key!r} is not in the facts "
                f"(languages: {', '.join(languages)})"
            )
        if key not in known:
            raise ValueError(f"no fact {key[0]!r} in language {key[1]!r} (correct key {key!r})")
        if value not in (True, False):
            raise ValueError(f"correct[{key!r}] must be a boolean, got {value!r}")
    scored = [f for f in facts.facts if (f.uuid, f.lang) in correct]
    present = _presence(scored, corpus, tokenizer, chunk_tokens, match, search, progress)
    traced = [lang for lang in languages if any(f.lang == lang for f in scored)]
    codes: dict[str, dict[str, int]] = {lang: {} for lang in traced}
    categories: dict[str, dict[str, str]] = {lang: {} for lang in traced}
    for fact in scored:
        key = (fact.uuid, fact.lang)
        if key not in present:
            code = -1
        else:
            code = 2 * bool(correct[key]) + present[key]
        codes[fact.lang][fact.uuid] = code
        if code == 2:
            categories[fact.lang][fact.uuid] = classify_absent_correct(
                fact, tokenizer, naming_relations=relations
            )
    settings = {
        "method": "Zhao, Yoshinaga & Oba (EACL 2024) knowledge tracing",
        "chunk_tokens": chunk_tokens,
        "match": match,
        # inflection-aware matching: the languages stemmed; the others matched exactly
        "stemmed": stemmed_languages(traced, match),
        "naming_relations": sorted(relations),
        "uncertainty": uncertainty.to_json(),
        "corpus": corpus.to_dict(),
        "tokenizer": str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__),
        "facts": facts.description,
    }
    # through JSON once, so that a saved and reloaded result compares equal
    settings = json.loads(json.dumps(settings, default=str))
    return TracingResult(traced, codes, categories, settings, dict(model or {}))


# ---- checks ------------------------------------------------------------------------


def _check_chunk_tokens(chunk_tokens: int) -> None:
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be a positive integer, got {chunk_tokens!r}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose from {', '.join(choices)}")


def _check_relations(naming_relations: Iterable[str]) -> frozenset[str]:
    if isinstance(naming_relations, str):
        raise ValueError(
            f"naming_relations must be a collection of relation ids, not the string "
            f"{naming_relations!r}"
        )
    relations = frozenset(naming_relations)
    bad = [r for r in relations if not isinstance(r, str)]
    if bad:
        raise ValueError(f"naming_relations must hold relation-id strings, got {bad!r}")
    return relations


__all__ = [
    "CATEGORIES",
    "CODES",
    "MATCHINGS",
    "NAMING_RELATIONS",
    "SEARCHES",
    "STEMMERS",
    "Matching",
    "Search",
    "stemmed_languages",
    "TracingResult",
    "classify_absent_correct",
    "fact_presence",
    "CATEGORY_PREFIX",
    "trace",
]
