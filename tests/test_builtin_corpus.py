"""Tests of the built-in corpus read from the ``dataset_build`` registry package."""

from __future__ import annotations

import re
import sys

import pytest

from mlneurons.data import builtin_text as bc
from mlneurons.data.corpus import MultilingualCorpus

TESTED = ["en", "fr", "es", "de", "zh", "ja", "ru", "ar", "hi"]

PREAMBLES = {
    "en": "Of course. Here is",
    "fr": "Absolument. Voici",
    "es": "Claro, aquí tienes",
    "de": "Absolut. Hier sind",
    "zh": "好的，我将为您生成",
    "ja": "はい、承知いたしました",
    "ru": "Конечно, вот 30 000 слов",
    "ar": "بالتأكيد. سأقوم بإنشاء",
    "hi": "नमस्ते। आपके अनुरोध के अनुसार",
}

# Second preamble lines ("Here is the text:") that some files add before the first heading.
SECOND_PREAMBLES = {
    "he": "להלן הטקסט המבוקש",
    "sw": "Hapa kuna maandishi yenyewe",
    "uk": "Ось текст, розділений",
}

PAREN = re.compile(r"[(（]([^()（）]*)[)）]")


def raw_text(language: str) -> str:
    iso3 = bc.LANGUAGES[language]
    return (bc.data_dir() / iso3 / f"{iso3}.txt").read_text(encoding="utf-8")


def test_languages_cover_the_shipped_files() -> None:
    folders = [p for p in bc.data_dir().iterdir() if (p / f"{p.name}.txt").is_file()]
    shipped = {p.name for p in folders} - {"test", "coding"}
    assert set(bc.LANGUAGES.values()) == shipped
    assert set(bc.SCRIPTS) == set(bc.LANGUAGES)
    assert "dataset_build" not in sys.modules  # located, never imported


def test_mapping_examples() -> None:
    assert bc.LANGUAGES["fr"] == "fra"
    assert bc.LANGUAGES["zh"] == "zho"
    assert bc.LANGUAGES["no"] == "nor"
    assert bc.SCRIPTS["ja"] == {"Han", "Hiragana", "Katakana"}
    assert bc.SCRIPTS["sr"] == {"Latin"}
    assert bc.SCRIPTS["hi"] == {"Devanagari"}


@pytest.mark.parametrize(
    ("code", "expected"),
    [("fr", "fr"), ("FRA", "fr"), ("fra", "fr"), ("Zh", "zh"), ("zho", "zh"), ("nor", "no")],
)
def test_normalize_language(code: str, expected: str) -> None:
    assert bc.normalize_language(code) == expected


def test_normalize_language_round_trip() -> None:
    for short, long in bc.LANGUAGES.items():
        assert bc.normalize_language(long) == short
        assert bc.normalize_language(short.upper()) == short


def test_unknown_language_message() -> None:
    with pytest.raises(ValueError, match="unknown language 'xx'") as info:
        bc.normalize_language("xx")
    assert "fr (fra)" in str(info.value)
    assert "zh (zho)" in str(info.value)


def test_available_languages() -> None:
    codes = bc.available_languages()
    assert codes == sorted(bc.LANGUAGES)
    assert set(TESTED) <= set(codes)


def test_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bc.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="dataset_build"):
        bc.data_dir()


def test_char_script() -> None:
    assert bc.char_script("a") == "Latin"
    assert bc.char_script("Ｂ") == "Latin"
    assert bc.char_script("ж") == "Cyrillic"
    assert bc.char_script("字") == "Han"
    assert bc.char_script("ー") == "Katakana"
    assert bc.char_script("ಹ") == "Kannada"
    for char in "1,.ℝℵⁿ ":
        assert bc.char_script(char) is None


@pytest.mark.parametrize("language", TESTED)
def test_preamble_removed(language: str) -> None:
    phrase = PREAMBLES[language]
    assert raw_text(language).startswith(phrase)
    text = "\n".join(bc.builtin_paragraphs(language))
    assert phrase not in text
    assert not re.search(r"30[ ,.]?000", text)


@pytest.mark.parametrize("language", sorted(SECOND_PREAMBLES))
def test_second_preamble_line_removed(language: str) -> None:
    phrase = SECOND_PREAMBLES[language]
    assert phrase in raw_text(language)
    assert not any(phrase in p for p in bc.builtin_paragraphs(language))


@pytest.mark.parametrize("language", TESTED)
def test_no_markdown(language: str) -> None:
    for paragraph in bc.builtin_paragraphs(language):
        assert paragraph and paragraph == paragraph.strip()
        for marker in ("#", "**", "---", "`", "<br>"):
            assert marker not in paragraph, (marker, paragraph[:80])
        assert not re.match(r"[*\-+>] ", paragraph), paragraph[:80]


@pytest.mark.parametrize("language", bc.available_languages())
def test_no_markdown_any_language(language: str) -> None:
    for paragraph in bc.builtin_paragraphs(language):
        assert not paragraph.startswith(("#", "*", "- ", "> ")), paragraph[:80]
        assert "**" not in paragraph and "---" not in paragraph, paragraph[:80]


@pytest.mark.parametrize("language", bc.available_languages())
def test_script_fraction(language: str) -> None:
    text = "\n".join(bc.builtin_paragraphs(language))
    fraction, letters = bc.script_fraction(text, bc.SCRIPTS[language])
    assert letters > 10_000
    assert fraction >= 0.9, fraction


@pytest.mark.parametrize("language", ["zh", "ja", "ru", "ar", "hi"])
def test_no_latin_glosses(language: str) -> None:
    text = "\n".join(bc.builtin_paragraphs(language))
    assert "Scientific and Technical Disciplines" not in text
    for inner in PAREN.findall(text):
        if re.search(r"[A-Za-z]{2,}", inner):
            fraction, _ = bc.script_fraction(inner, bc.SCRIPTS[language])
            assert fraction >= 0.5, inner


def test_chinese_gloss_removed() -> None:
    assert "(Scientific and Technical Disciplines)" in raw_text("zh")
    paragraphs = bc.builtin_paragraphs("zh")
    assert paragraphs[0] == "第一部分：科学与技术学科"
    assert "... the text continues ..." not in "\n".join(paragraphs)


def test_latin_heading_glosses_removed() -> None:
    for language in ["hu", "lv", "sr", "sw", "vi"]:
        assert "(Scientific and Technical Disciplines)" in raw_text(language)
        assert "Disciplines" not in bc.builtin_paragraphs(language)[0]


def test_word_count_notes_removed() -> None:
    assert "(Environ 3000 mots)" in raw_text("fr")
    text = "\n".join(bc.builtin_paragraphs("fr"))
    assert "3000 mots" not in text
    assert "Section 1 : Disciplines Scientifiques et Techniques" in text
    assert "(ca 3000 f.Kr. – 500 e.Kr.)" in "\n".join(bc.builtin_paragraphs("sv"))


def test_clean_text_exact_cyrillic() -> None:
    raw = (
        "Конечно, вот 30 000 слов текста.\r\n"
        "Вот текст:\r\n"
        "\r\n"
        "---\r\n"
        "\r\n"
        "### **1. Наука (Scientific and Technical Disciplines)**\r\n"
        "*   **Физика:** изучает *материю* (matter) и энергию (Ψ).\r\n"
        "Формула (a * b) верна. This sentence is English. Конец абзаца.\r\n"
        "***\r\n"
        "<br>\r\n"
        "> Раздел <strong>два</strong> (около 3000 слов)\r\n"
        "1.  **Термин** (*Term*): пример `кода`.\r\n"
    )
    assert bc.clean_text(raw, "ru") == [
        "1. Наука",
        "Физика: изучает материю и энергию (Ψ).",
        "Формула (a * b) верна. Конец абзаца.",
        "Раздел два",
        "1. Термин: пример кода.",
    ]


def test_clean_text_exact_han_and_latin() -> None:
    raw = (
        "好的，这是文本。\n\n"
        "第一部分：物理 (Physics)\n\n"
        "物理学（Physics）是基础。POST /api/v1/login: 登录。它研究DNA和能量。\n"
        "... the text continues ...\n"
    )
    assert bc.clean_text(raw, "zho") == [
        "第一部分：物理",
        "物理学是基础。它研究DNA和能量。",
    ]
    raw = (
        "Rendben, itt van 30 000 szó.\n\n"
        "1. Művészetek (Arts and Humanities) (kb. 3000 szó)\n\n"
        "Einstein (1905) és a ΛCDM modell (Lambda-CDM) fontos. Ez (物理) és (физика) nem.\n"
    )
    assert bc.clean_text(raw, "hu") == [
        "1. Művészetek",
        "Einstein (1905) és a ΛCDM modell (Lambda-CDM) fontos. Ez és nem.",
    ]


def test_builtin_paragraphs_cached_copy() -> None:
    first = bc.builtin_paragraphs("fr")
    first.clear()
    again = bc.builtin_paragraphs("FRA")
    assert again and again == bc.builtin_paragraphs("fr")
    assert bc._cached_paragraphs.cache_info().hits >= 2


def test_builtin_text_matches_its_frozen_hash_and_is_recorded():
    import json

    from mlneurons.data import builtin_text as builtin_corpus

    corpus = MultilingualCorpus.builtin(["en", "ja"])
    recorded = corpus.to_dict()
    frozen = json.loads(builtin_corpus.FROZEN_HASHES.read_text())
    assert recorded["dataset_build"] == builtin_corpus.dataset_build_version()
    assert recorded["text_sha256"] == {lang: frozen["sha256"][lang] for lang in ("en", "ja")}


def test_changed_builtin_text_warns_and_changes_the_corpus_key(tmp_path, monkeypatch):
    import json

    from mlneurons.data import builtin_text as builtin_corpus

    before = MultilingualCorpus.builtin(["de"]).key()
    frozen = json.loads(builtin_corpus.FROZEN_HASHES.read_text())
    frozen["sha256"]["de"] = "0" * 16
    path = tmp_path / "hashes.json"
    path.write_text(json.dumps(frozen))
    monkeypatch.setattr(builtin_corpus, "FROZEN_HASHES", path)
    builtin_corpus.checked_text_sha256.cache_clear()
    with pytest.warns(
        UserWarning, match=r"built-in 'de' text .* differs .* sha256 0000000000000000"
    ):
        MultilingualCorpus.builtin(["de"])
    builtin_corpus.checked_text_sha256.cache_clear()
    original = builtin_corpus.clean_text
    monkeypatch.setattr(builtin_corpus, "clean_text", lambda text, lang: original(text, lang)[1:])
    builtin_corpus._cached_paragraphs.cache_clear()
    with pytest.warns(UserWarning):
        assert MultilingualCorpus.builtin(["de"]).key() != before
    builtin_corpus._cached_paragraphs.cache_clear()
    builtin_corpus.checked_text_sha256.cache_clear()
