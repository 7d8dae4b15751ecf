"""Script and word-order controls of a corpus (after Verma et al., ACL 2026).

Language-specific units may follow the writing system rather than the language: on
romanised text they change almost entirely, while shuffling the words of each sentence
barely moves them. Two controls test that on any text corpus:

* ``romanised``: text in a non-Latin script is transliterated to ASCII with ``anyascii``
  (a language-independent table: Chinese and Japanese become pinyin/romaji-like syllables
  without tones, Cyrillic, Arabic and Devanagari their usual Latin letters). Languages
  already written in Latin script are left as they are (romanising them would only strip
  diacritics), and the result names which languages changed.
* ``shuffled``: the words of each sentence are put in a random order (a seeded draw per
  sentence); in languages written without spaces (zh, ja, th...) the characters are
  shuffled instead, as there are no word boundaries to keep. Sentences end at ``.!?`` and
  their full-width forms.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Literal, get_args

from mlneurons.data.builtin_text import SCRIPTS
from mlneurons.data.corpus import MultilingualCorpus, Source, TextSource
from mlneurons.errors import UserError

Control = Literal["original", "romanised", "shuffled"]
"""The text of a corpus as it is, transliterated to Latin script, or word-shuffled."""
CONTROLS: tuple[str, ...] = get_args(Control)

UNSPACED = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo"})
"""Languages written without spaces between words: shuffled by character."""

_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


def is_romanised(language: str) -> bool:
    """Whether :func:`romanise` changes this language's text (its script is not Latin)."""
    return SCRIPTS.get(language, frozenset({"Latin"})) != frozenset({"Latin"})


def romanise(text: str, language: str) -> str:
    """``text`` in Latin letters (``anyascii``) when ``language`` has a non-Latin script."""
    from anyascii import anyascii

    return str(anyascii(text)) if is_romanised(language) else text


def shuffle_words(text: str, language: str, rng: random.Random) -> str:
    """Each sentence of ``text`` with its words (characters in unspaced languages) in a
    random order drawn from ``rng``."""
    sentences = [s for s in _SENTENCE_END.split(text) if s.strip()]
    shuffled = []
    for sentence in sentences:
        units = list(sentence.replace(" ", "")) if language in UNSPACED else sentence.split()
        rng.shuffle(units)
        shuffled.append(("" if language in UNSPACED else " ").join(units))
    return ("" if language in UNSPACED else " ").join(shuffled)


def controlled(corpus: MultilingualCorpus, control: str, *, seed: int = 0) -> MultilingualCorpus:
    """``corpus`` with every document passed through ``control``; the same seed gives the
    same shuffles. Only text sources can be controlled (not token-id tensors)."""
    if control not in CONTROLS:
        raise UserError(f"control={control!r} is not valid; choose from {', '.join(CONTROLS)}")
    if control == "original":
        return corpus
    sources: dict[str, Source] = {}
    for language, source in corpus.sources.items():
        if not callable(source):
            raise UserError(f"the {language!r} text is token ids: only text can be {control}")
        sources[language] = _mapped(source, language, control, seed)
    description = {**corpus.description, "control": control, "control_seed": seed}
    if control == "romanised":
        description["romanised"] = [lang for lang in corpus.languages if is_romanised(lang)]
    return replace(corpus, sources=sources, description=description)


def _mapped(source: TextSource, language: str, control: str, seed: int) -> TextSource:
    def read() -> Iterable[str]:
        rng = random.Random(f"{seed}:{language}")
        for document in source():
            if control == "romanised":
                yield romanise(document, language)
            else:
                yield shuffle_words(document, language, rng)

    return read


__all__ = ["CONTROLS", "Control", "controlled", "is_romanised", "romanise", "shuffle_words"]
