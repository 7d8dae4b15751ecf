"""Built-in parallel words and sentences, item i the same in every language.

Words come from the built-in facts (country names, capitals, languages, continents,
currencies: the answers of Wendler et al.'s translation prompts); sentences are the
built-in questions, then fact sentences (Tang et al.'s parallel sentences for SES).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlneurons.data.builtin_text import normalize_language
from mlneurons.data.facts import BUILTIN_LANGUAGES, FactSet
from mlneurons.data.questions import load_questions, question_languages
from mlneurons.errors import UserError

ENGLISH = "en"
"""The language the parallel words are compared with in the logit lens (Wendler et al.)."""

WORD_KINDS: dict[str, tuple[str, str]] = {
    "country": ("P30", "subject"),
    "capital": ("P36", "object"),
    "language": ("P37", "object"),
    "continent": ("P30", "object"),
    "currency": ("P38", "object"),
}
"""Kinds of built-in parallel words: (relation of the built-in facts, slot)."""


def _languages(asked: Sequence[str], what: str) -> list[str]:
    available = list(BUILTIN_LANGUAGES)
    if isinstance(asked, str):
        asked = [asked]
    if not asked:
        raise UserError(f"no languages given for {what}; available: {', '.join(available)}")
    return list(dict.fromkeys(normalize_language(lang, available) for lang in asked))


def builtin_parallel_sentences(
    languages: Sequence[str], *, n: int | None = None
) -> dict[str, list[str]]:
    """Built-in parallel sentences: the questions of :func:`load_questions` (when every
    language has them), then fact sentences (built-in facts of one uuid filled into each
    language's template), taking the relations in turn. Item i is parallel across languages.

    Args:
        languages: ISO 639-1 codes of the built-in fact set (at least one).
        n: items to keep (the first ``n``); all when None.

    Raises:
        UserError: an unknown language, no languages, or ``n`` below 1.
    """
    languages = _languages(languages, "built-in parallel sentences")
    if n is not None and n < 1:
        raise UserError(f"n must be at least 1, got {n}")
    out: dict[str, list[str]] = {lang: [] for lang in languages}
    if all(lang in question_languages() for lang in languages):
        for lang in languages:
            out[lang].extend(load_questions(lang))
    facts = FactSet.builtin(languages=languages)
    by_uuid: dict[str, dict[str, str]] = {}
    relation_of: dict[str, str] = {}
    for fact in facts.facts:
        by_uuid.setdefault(fact.uuid, {})[fact.lang] = facts.fill(fact)
        relation_of[fact.uuid] = fact.relation
    per_relation = {
        rel: sorted(
            u for u in by_uuid if relation_of[u] == rel and len(by_uuid[u]) == len(languages)
        )
        for rel in facts.relations
    }
    longest = max((len(u) for u in per_relation.values()), default=0)
    for k in range(longest):  # round robin over relations
        for uuids in per_relation.values():
            if k < len(uuids):
                for lang in languages:
                    out[lang].append(by_uuid[uuids[k]][lang])
    return {lang: items[:n] for lang, items in out.items()}


def builtin_parallel_words(
    languages: Sequence[str], *, kinds: Sequence[str] = tuple(WORD_KINDS)
) -> dict[str, list[str]]:
    """Parallel words from the built-in facts: country names (subjects), capitals, official
    languages, continents and currencies (objects), one item per distinct tuple of words
    across ``languages``; item i of every language is the same word.

    Raises:
        UserError: an unknown language or kind.
    """
    languages = _languages(languages, "built-in parallel words")
    for kind in kinds:
        if kind not in WORD_KINDS:
            raise UserError(f"unknown kind of word {kind!r}; valid: {', '.join(WORD_KINDS)}")
    relations = list(dict.fromkeys(WORD_KINDS[kind][0] for kind in kinds))
    facts = FactSet.builtin(languages=languages, relations=relations)
    by_uuid: dict[str, dict[str, Any]] = {}
    for fact in facts.facts:
        by_uuid.setdefault(fact.uuid, {})[fact.lang] = fact
    items: dict[tuple[str, ...], None] = {}
    for kind in kinds:
        relation, slot = WORD_KINDS[kind]
        for uuid in sorted(by_uuid):
            found = by_uuid[uuid]
            if len(found) == len(languages) and found[languages[0]].relation == relation:
                items[tuple(getattr(found[lang], slot) for lang in languages)] = None
    return {lang: [item[k] for item in items] for k, lang in enumerate(languages)}


__all__ = ["ENGLISH", "WORD_KINDS", "builtin_parallel_sentences", "builtin_parallel_words"]
