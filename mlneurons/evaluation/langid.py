"""Language identification of model outputs.

Used to check whether a model answers in a target language after its language
neurons are activated (Tang et al. 2024). Identification runs offline with
``py3langid``, a naive Bayes byte n-gram model shipped inside its wheel (no download),
imported on first use only. Restricting the candidates (``languages=``) to the
languages of an experiment makes short texts reliable: a question of 5 to 20 words
is enough to tell the nine default languages apart.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from mlneurons.data.builtin_text import normalize_language
from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import CONFIDENCE, Estimate, wilson

UNKNOWN = "unknown"
"""What :func:`identify` returns for empty or undecidable text."""

_NO_LANGUAGE = "zxx"  # py3langid's label for text with no linguistic content
_KANA = re.compile("[\u3041-\u309f\u30a0-\u30fa]")  # hiragana, katakana (not "・", "ー")


def identify(text: str, *, languages: Sequence[str] | None = None) -> str:
    """Identify the language of a text.

    Args:
        text: the text, of any length; a sentence or more is best.
        languages: codes of the candidate languages; ``None`` allows every
            language of :func:`supported_languages`.

    Returns:
        The ISO 639-1 code of the most likely candidate, or ``"unknown"`` when the
        text has no letters or looks like no language (numbers, markup, junk).

    Raises:
        UserError: ``languages`` is empty or holds an unsupported code.
    """
    return _identify(_identifier(_candidates(languages)), text)


def identify_many(texts: Sequence[str], *, languages: Sequence[str] | None = None) -> list[str]:
    """Identify the language of each text, as :func:`identify` does.

    Args:
        texts: the texts.
        languages: codes of the candidate languages; ``None`` for all.

    Returns:
        One ISO 639-1 code or ``"unknown"`` per text, in order.

    Raises:
        UserError: ``languages`` is empty or holds an unsupported code.
    """
    identifier = _identifier(_candidates(languages))
    return [_identify(identifier, text) for text in texts]


def shares(
    labels: Sequence[str],
    categories: Sequence[str] | None = None,
    *,
    confidence: float = CONFIDENCE,
) -> dict[str, Estimate]:
    """Each category's share of ``labels`` (identified languages of answers, e.g. the
    target-language rate of steered answers, Tang et al. 2024) with its Wilson score
    interval over the ``len(labels)`` answers.

    Args:
        labels: one label per answer (a language code, ``"unknown"``, ``"degenerate"``).
        categories: the shares to give, in order (default: the labels seen, in order of
            first appearance); a category no answer has gets 0 with its interval.

    Raises:
        ValueError: no labels (an empty share has no value).
    """
    if not labels:
        raise ValueError("shares of no answers are undefined")
    keys = list(dict.fromkeys(labels)) if categories is None else list(categories)
    return {
        key: wilson(sum(label == key for label in labels), len(labels), confidence) for key in keys
    }


def supported_languages() -> list[str]:
    """ISO 639-1 codes that :func:`identify` can return, sorted."""
    return sorted(_two_letter_labels())


def _identify(identifier: Any, text: str) -> str:
    if not any(unicodedata.category(ch).startswith("L") for ch in text):
        return UNKNOWN
    label: str = identifier.classify(text)[0]
    if label == _NO_LANGUAGE:
        return UNKNOWN
    # A Japanese sentence has kana; the n-gram model can miss them in a short
    # kanji-heavy text.
    if label == "zh" and "ja" in identifier.nb_classes and _KANA.search(text):
        return "ja"
    return label


def _candidates(languages: Sequence[str] | None) -> frozenset[str] | None:
    if languages is None:
        return None
    if isinstance(languages, str):
        raise TypeError(f"languages must be a sequence of codes, not the string {languages!r}")
    if not languages:
        raise UserError("languages must name at least one language")
    supported, codes, unknown = _two_letter_labels(), set(), set()
    for code in languages:
        try:
            codes.add(normalize_language(code, supported))
        except UserError:
            unknown.add(str(code).strip().lower())
    if unknown:
        raise UserError(
            f"unsupported language code(s) {', '.join(map(repr, sorted(unknown)))}; "
            f"supported (ISO 639-1): {', '.join(supported_languages())}"
        )
    return frozenset(codes)


@functools.cache
def _base_identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)


@functools.cache
def _two_letter_labels() -> frozenset[str]:
    return frozenset(label for label in _base_identifier().labels if len(label) == 2)


@functools.lru_cache(maxsize=32)
def _identifier(codes: frozenset[str] | None) -> Any:
    """A copy of the model restricted to ``codes`` plus "no language" (shares the weights)."""
    import copy

    identifier = copy.copy(_base_identifier())
    labels = _two_letter_labels() if codes is None else codes
    identifier.set_languages(sorted(labels | {_NO_LANGUAGE}))
    return identifier
