"""Questions with known answers, built from a fact set: the relevance check of steering.

Each built-in relation has one hand-written question per language ("What is the capital
of [X]?"); a fact's question is asked in the source language, and its answer counts as
relevant when it names the gold object in the source or the target language
(:func:`mentions`). Facts whose gold object is named by the subject itself (Singapore,
capital Singapore) are left out: echoing the question would count as knowing the answer.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mlneurons.data.builtin_text import normalize_language
from mlneurons.data.facts import RELATIONS, FactSet
from mlneurons.errors import UserError

QUESTION_TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "P30": "On which continent is [X]?",
        "P36": "What is the capital of [X]?",
        "P37": "What is the official language of [X]?",
        "P38": "What is the currency of [X]?",
    },
    "de": {
        "P30": "Auf welchem Kontinent liegt [X]?",
        "P36": "Was ist die Hauptstadt von [X]?",
        "P37": "Was ist die Amtssprache von [X]?",
        "P38": "Was ist die Währung von [X]?",
    },
    "fr": {
        "P30": "Sur quel continent se trouve [X] ?",
        "P36": "Quelle est la capitale de [X] ?",
        "P37": "Quelle est la langue officielle de [X] ?",
        "P38": "Quelle est la monnaie de [X] ?",
    },
    "es": {
        "P30": "¿En qué continente está [X]?",
        "P36": "¿Cuál es la capital de [X]?",
        "P37": "¿Cuál es el idioma oficial de [X]?",
        "P38": "¿Cuál es la moneda de [X]?",
    },
    "pt": {
        "P30": "Em que continente fica [X]?",
        "P36": "Qual é a capital de [X]?",
        "P37": "Qual é a língua oficial de [X]?",
        "P38": "Qual é a moeda de [X]?",
    },
    "it": {
        "P30": "In quale continente si trova [X]?",
        "P36": "Qual è la capitale di [X]?",
        "P37": "Qual è la lingua ufficiale di [X]?",
        "P38": "Qual è la valuta di [X]?",
    },
    "nl": {
        "P30": "Op welk continent ligt [X]?",
        "P36": "Wat is de hoofdstad van [X]?",
        "P37": "Wat is de officiële taal van [X]?",
        "P38": "Wat is de munteenheid van [X]?",
    },
    "ru": {
        "P30": "На каком континенте находится страна [X]?",
        "P36": "Какой город является столицей страны [X]?",
        "P37": "Какой язык является официальным в стране [X]?",
        "P38": "Какая валюта используется в стране [X]?",
    },
    "zh": {
        "P30": "[X]位于哪个洲？",
        "P36": "[X]的首都是哪里？",
        "P37": "[X]的官方语言是什么？",
        "P38": "[X]的货币是什么？",
    },
    "ja": {
        "P30": "[X]はどの大陸にある国ですか？",
        "P36": "[X]の首都はどこですか？",
        "P37": "[X]の公用語は何ですか？",
        "P38": "[X]の通貨は何ですか？",
    },
    "ar": {
        "P30": "في أي قارة تقع [X]؟",
        "P36": "ما هي عاصمة [X]؟",
        "P37": "ما هي اللغة الرسمية في [X]؟",
        "P38": "ما هي عملة [X]؟",
    },
    "hi": {
        "P30": "[X] किस महाद्वीप में स्थित है?",
        "P36": "[X] की राजधानी क्या है?",
        "P37": "[X] की आधिकारिक भाषा क्या है?",
        "P38": "[X] की मुद्रा क्या है?",
    },
    "ko": {
        "P30": "[X]의 소재 대륙은 어디입니까?",
        "P36": "[X]의 수도는 어디입니까?",
        "P37": "[X]의 공용어는 무엇입니까?",
        "P38": "[X]의 통화는 무엇입니까?",
    },
    "tr": {
        "P30": "[X] ülkesi hangi kıtadadır?",
        "P36": "[X] ülkesinin başkenti neresidir?",
        "P37": "[X] ülkesinin resmi dili nedir?",
        "P38": "[X] ülkesinin para birimi nedir?",
    },
    "pl": {
        "P30": "Na jakim kontynencie leży kraj [X]?",
        "P36": "Jaka jest stolica kraju [X]?",
        "P37": "Jaki jest język urzędowy kraju [X]?",
        "P38": "Jaka jest waluta kraju [X]?",
    },
    "vi": {
        "P30": "[X] là một quốc gia thuộc châu lục nào?",
        "P36": "Thủ đô của [X] là gì?",
        "P37": "Ngôn ngữ chính thức của [X] là gì?",
        "P38": "Đơn vị tiền tệ của [X] là gì?",
    },
    "id": {
        "P30": "[X] terletak di benua apa?",
        "P36": "Apa ibu kota [X]?",
        "P37": "Apa bahasa resmi [X]?",
        "P38": "Apa mata uang [X]?",
    },
}
"""Language -> relation -> question with an ``[X]`` (subject) slot, for the built-in relations
(:data:`mlneurons.data.facts.RELATIONS`), hand-written in the built-in facts' languages."""


@dataclass(frozen=True)
class FactQuestion:
    """A question with known answers.

    Attributes:
        question: the question, in the source language.
        answers: language -> the gold object's label in that language (source and target).
        uuid: the fact's uuid; relation: its relation.
    """

    question: str
    answers: dict[str, str] = field(default_factory=dict)
    uuid: str = ""
    relation: str = ""


def _fold(text: str) -> str:
    """Case and accents folded: NFKC, casefold, combining marks dropped."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def _cased(ch: str) -> bool:
    """A letter of a script with case (Latin, Cyrillic, Greek...), whose words have spaces."""
    return ch.isalpha() and ch.upper() != ch.lower()


def mentions(text: str, label: str) -> bool:
    """Whether ``text`` names ``label``, case and accents folded (``París`` matches
    ``paris``). In scripts with case a match must be a whole word (``Roma`` is not in
    ``romano``); in the others (Chinese, Japanese, Arabic, Hindi...) any substring counts.
    """
    needle, hay = _fold(label).strip(), _fold(text)
    if not needle:
        return False
    start = hay.find(needle)
    while start >= 0:
        end = start + len(needle)
        before = start > 0 and _cased(hay[start - 1]) and _cased(needle[0])
        after = end < len(hay) and _cased(hay[end]) and _cased(needle[-1])
        if not before and not after:
            return True
        start = hay.find(needle, start + 1)
    return False


def relevant(answer: str, question: FactQuestion) -> bool:
    """Whether ``answer`` names the question's gold object in any of its languages."""
    return any(mentions(answer, label) for label in question.answers.values())


def question_template_languages() -> list[str]:
    """Languages with question templates (:data:`QUESTION_TEMPLATES`), sorted."""
    return sorted(QUESTION_TEMPLATES)


def fact_questions(
    source: str,
    target: str,
    *,
    facts: FactSet | None = None,
    relations: Sequence[str] | None = None,
    templates: Mapping[str, Mapping[str, str]] | None = None,
    n: int | None = None,
) -> list[FactQuestion]:
    """Questions in ``source`` about facts known in both languages, relations interleaved.

    Args:
        source: the language of the questions; target: the other language whose gold
            label also counts as an answer.
        facts: the fact set (default: the built-in facts of both languages).
        relations: relations to ask about (default: every relation with a question).
        templates: language -> relation -> question with ``[X]`` (default:
            :data:`QUESTION_TEMPLATES`).
        n: keep the first ``n`` questions: each relation's facts in their order, the
            relations taken in turn (one of each, then the second of each, ...).

    Raises:
        UserError: no question template for ``source``, an unknown relation, or no fact
            known in both languages.
    """
    templates = QUESTION_TEMPLATES if templates is None else templates
    known = sorted(templates)
    try:
        source = normalize_language(source, known)
    except UserError:
        raise UserError(
            f"no fact questions in {source!r}; languages with questions: {', '.join(known)}"
        ) from None
    target = normalize_language(target)
    if facts is None:
        wanted = list(relations) if relations is not None else list(RELATIONS)
        unknown = [r for r in wanted if r not in RELATIONS]
        if unknown:
            raise UserError(
                f"unknown relation {unknown[0]!r}; valid relations: {', '.join(RELATIONS)}"
            )
        try:
            facts = FactSet.builtin(languages=[source, target], relations=wanted)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    asked = list(relations) if relations is not None else list(templates[source])
    missing = [r for r in asked if r not in templates[source]]
    if missing:
        raise UserError(
            f"no {source!r} question for relation {missing[0]!r}; relations with questions: "
            f"{', '.join(templates[source])}"
        )
    by_lang = {
        lang: {(f.relation, f.uuid): f for f in facts.facts if f.lang == lang}
        for lang in (source, target)
    }
    per_relation: list[list[FactQuestion]] = []
    for relation in asked:
        found = []
        for (rel, uuid), fact in by_lang[source].items():
            other = by_lang[target].get((rel, uuid))
            if rel != relation or other is None:
                continue
            answers = {source: fact.object, target: other.object}
            subjects = (fact.subject, other.subject)
            if any(mentions(s, label) for s in subjects for label in answers.values()):
                continue  # the subject names its own answer
            question = templates[source][relation].replace("[X]", fact.subject)
            found.append(FactQuestion(question, answers, uuid, relation))
        per_relation.append(found)
    ordered = [
        group[i]
        for i in range(max((len(g) for g in per_relation), default=0))
        for group in per_relation
        if i < len(group)
    ]
    if not ordered:
        raise UserError(f"no fact is known in both {source!r} and {target!r} for relations {asked}")
    if n is not None:
        if n < 1:
            raise UserError(f"n={n} is not an integer >= 1")
        if n > len(ordered):
            raise UserError(
                f"{n} questions asked, but {len(ordered)} facts are known in both {source!r} "
                f"and {target!r}; valid: 1..{len(ordered)}"
            )
        ordered = ordered[:n]
    return ordered


__all__ = [
    "QUESTION_TEMPLATES",
    "FactQuestion",
    "fact_questions",
    "mentions",
    "question_template_languages",
    "relevant",
]
