import json
import subprocess
import sys
import unicodedata
from importlib import resources

import pytest

from mlneurons.data import questions as builtin_questions
from mlneurons.evaluation import langid

LANGUAGES = ("en", "fr", "es", "de", "zh", "ja", "ru", "ar", "hi")

# Letters of each language's script, by the first word of their Unicode names.
SCRIPTS = {
    "en": {"LATIN"},
    "fr": {"LATIN"},
    "es": {"LATIN"},
    "de": {"LATIN"},
    "zh": {"CJK"},
    "ja": {"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"},
    "ru": {"CYRILLIC"},
    "ar": {"ARABIC"},
    "hi": {"DEVANAGARI"},
}

# Answers as a model might write them: several sentences, a list, numbers, names.
ANSWERS = {
    "en": "Sure! Here are a few tips:\n1. Go to bed at the same time every day.\n2. Avoid screens for an hour before sleeping.",
    "fr": "La capitale de l'Australie est Canberra, et non Sydney comme beaucoup le pensent. Elle a été choisie en 1908.",
    "es": "El cielo se ve azul porque las moléculas del aire dispersan mucho más la luz azul que la roja.",
    "de": "Gerne! Hier ein paar Tipps:\n1. Geh jeden Tag zur gleichen Zeit ins Bett.\n2. Vermeide Bildschirme vor dem Schlafen.",
    "zh": "澳大利亚的首都是堪培拉，而不是很多人以为的悉尼。它在1908年被选为悉尼和墨尔本之间的折中方案。",
    "ja": "空が青く見えるのは、空気中の分子が赤い光よりも青い光を強く散乱させるからです。",
    "ru": "Конечно! Вот несколько советов:\n1. Ложитесь спать в одно и то же время.\n2. Не смотрите в экран за час до сна.",
    "ar": "عاصمة أستراليا هي كانبرا وليست سيدني كما يعتقد كثير من الناس. وقد تم اختيارها عام 1908.",
    "hi": "आसमान नीला इसलिए दिखता है क्योंकि हवा के अणु नीली रोशनी को लाल रोशनी की तुलना में ज़्यादा बिखेरते हैं।",
}


def _raw_questions() -> dict[str, list[str]]:
    path = resources.files("mlneurons").joinpath("data", "questions.json")
    return json.loads(path.read_text(encoding="utf-8"))


def test_questions_file_covers_the_languages():
    data = _raw_questions()
    assert sorted(data) == sorted(LANGUAGES)
    assert builtin_questions.question_languages() == sorted(LANGUAGES)
    for lang, questions in data.items():
        assert len(questions) >= 24, lang
        assert len(set(questions)) == len(questions), f"duplicate questions in {lang}"
        assert all(isinstance(q, str) and q == q.strip() and q for q in questions)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_questions_are_short_and_in_the_right_script(lang):
    for question in builtin_questions.load_questions(lang):
        letters = [ch for ch in question if unicodedata.category(ch)[0] in "LM"]
        scripts = {unicodedata.name(ch).split()[0] for ch in letters}
        assert scripts <= SCRIPTS[lang], (question, scripts - SCRIPTS[lang])
        if lang in ("zh", "ja"):
            assert 5 <= len(letters) <= 40, question
        else:
            assert 5 <= len(question.split()) <= 20, question
        if lang == "ja":
            assert scripts & {"HIRAGANA", "KATAKANA"}, f"no kana in {question!r}"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_question_is_identified_as_its_language(lang):
    questions = builtin_questions.load_questions(lang)
    assert len(questions) >= 20
    found = langid.identify_many(questions, languages=LANGUAGES)
    wrong = [(q, got) for q, got in zip(questions, found) if got != lang]
    assert wrong == []
    assert [langid.identify(q, languages=LANGUAGES) for q in questions[:3]] == [lang] * 3


@pytest.mark.parametrize("lang", LANGUAGES)
def test_model_like_answers_are_identified(lang):
    assert langid.identify(ANSWERS[lang], languages=LANGUAGES) == lang
    assert langid.identify(ANSWERS[lang]) == lang  # among every supported language


def test_restricting_the_candidates():
    assert langid.identify("Bonjour", languages=["en", "fr"]) == "fr"
    assert langid.identify("Good morning to you all", languages=["fr", "de"]) in {"fr", "de"}
    # Codes are case-insensitive; order and repeats do not matter.
    assert langid.identify("Guten Morgen, wie geht es dir?", languages=["DE", "en", "de"]) == "de"
    # Kana decide between Chinese and Japanese in a short, kanji-heavy text.
    assert langid.identify("健康的な朝食", languages=["zh", "ja"]) == "ja"
    assert langid.identify("健康的早餐", languages=["zh", "ja"]) == "zh"


@pytest.mark.parametrize(
    "text", ["", "   \n\t", "123 456 !!", "...?", "<pad><pad><pad>", "2 + 2 = 4"]
)
def test_undecidable_text_is_unknown(text):
    assert langid.identify(text) == langid.UNKNOWN == "unknown"
    assert langid.identify(text, languages=LANGUAGES) == "unknown"


def test_mixed_text_gets_one_of_its_languages():
    mixed = "The capital of France is Paris. La capitale de la France est Paris, bien sûr."
    assert langid.identify(mixed, languages=LANGUAGES) in {"en", "fr"}
    cjk = "Hello world, 你好世界，こんにちは世界"
    assert langid.identify(cjk, languages=LANGUAGES) in {"en", "zh", "ja"}
    # Mostly one language, with a foreign name in it.
    assert langid.identify("Мой любимый фильм — Star Wars, я смотрел его много раз.") == "ru"


def test_identify_many_keeps_order_and_length():
    texts = ["", ANSWERS["de"], ANSWERS["hi"], "42", ANSWERS["zh"]]
    assert langid.identify_many(texts, languages=LANGUAGES) == [
        "unknown",
        "de",
        "hi",
        "unknown",
        "zh",
    ]
    assert langid.identify_many([], languages=LANGUAGES) == []
    assert langid.identify_many(tuple(texts[:2])) == ["unknown", "de"]


def test_supported_languages():
    supported = langid.supported_languages()
    assert set(LANGUAGES) <= set(supported)
    assert supported == sorted(supported) and all(len(code) == 2 for code in supported)


def test_unsupported_language_codes_are_named():
    with pytest.raises(ValueError, match=r"'xx'.*supported \(ISO 639-1\): .*\ben\b.*\bzh\b"):
        langid.identify("hello", languages=["en", "xx"])
    with pytest.raises(ValueError, match=r"'klingon', 'xxx'"):
        langid.identify_many(["hello"], languages=["xxx", "Klingon", "eng"])
    assert langid.identify("hello world", languages=[" EN", "fra"]) in ("en", "fr")
    with pytest.raises(ValueError, match="at least one language"):
        langid.identify("hello", languages=[])
    with pytest.raises(TypeError, match="not the string 'en'"):
        langid.identify("hello", languages="en")
    # The codes are checked even when the text is empty.
    with pytest.raises(ValueError, match="'xx'"):
        langid.identify("", languages=["xx"])


def test_load_questions():
    questions = builtin_questions.load_questions("fr")
    assert questions == _raw_questions()["fr"]
    assert builtin_questions.load_questions(" FR ") == questions
    questions.clear()  # a new list each time
    assert len(builtin_questions.load_questions("fr")) >= 24


def test_load_questions_unknown_language():
    with pytest.raises(ValueError) as info:
        builtin_questions.load_questions("tlh")
    message = str(info.value)
    assert "'tlh'" in message
    assert "ar, de, en, es, fr, hi, ja, ru, zh" in message


def test_identifier_is_imported_lazily():
    code = (
        "import sys, mlneurons, mlneurons.evaluation.langid as m\n"
        "from mlneurons.data.questions import load_questions\n"
        "assert 'py3langid' not in sys.modules\n"
        "load_questions('en')\n"
        "assert 'py3langid' not in sys.modules\n"
        "assert m.identify('Hola, ¿qué tal?') == 'es'\n"
        "assert 'py3langid' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
