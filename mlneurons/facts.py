"""Fact sets for factual probing across languages, in the mLAMA layout.

A :class:`FactSet` holds (subject, relation, object) facts in several languages, one
template per (language, relation) with an ``[X]`` (subject) and a ``[Y]`` (object)
slot, and the typed candidate objects of each (language, relation). The same fact in
different languages shares its ``uuid``, as in mLAMA (Kassner et al., EACL 2021).

Sources:

* :meth:`FactSet.from_mlama` reads the mLAMA 1.1 layout: ``{lang}/{relation}.jsonl``
  (one ``{"sub_uri", "obj_uri", "sub_label", "obj_label", "lineid", "uuid"}`` object a
  line), ``{lang}/templates.jsonl`` (``{"relation", "template"}`` lines) and, when
  present, ``TREx_multilingual_objects/{lang}.json`` (``{relation: {"subjects": [...],
  "objects": [...]}}``) at the directory root. Without that file the candidates of a
  (language, relation) are its gold objects, as in mLAMA's typed querying (TyQ).
  :meth:`FactSet.to_mlama` writes the same layout.
* :meth:`FactSet.builtin` builds a small fact set from the CLDR data shipped by
  ``babel``: official language (P37), currency (P38), continent (P30) and capital (P36)
  of a curated list of countries, with hand-written templates in 17 languages. The
  capitals are CLDR time-zone exemplar cities, used only where the zone's city is the
  capital. Labels are CLDR's localised names; a fact whose label is missing in a
  language is left out of that language.
"""

from __future__ import annotations

import functools
import json
import random
import re
import unicodedata
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OBJECTS_DIR = "TREx_multilingual_objects"
"""Folder of the candidate-object files at the root of an mLAMA directory."""

RELATIONS: dict[str, str] = {
    "P30": "continent",
    "P36": "capital",
    "P37": "official language",
    "P38": "currency",
}
"""Relations of the built-in fact set: Wikidata id -> label."""

BUILTIN_LANGUAGES: tuple[str, ...] = (
    "en", "de", "fr", "es", "pt", "it", "nl", "ru", "zh", "ja", "ar", "hi", "ko", "tr", "pl",
    "vi", "id",
)  # fmt: skip
"""Languages of the built-in fact set (ISO 639-1), in their default order."""

_SLOT = re.compile(r"\[X\]|\[Y\]")
_PAREN = re.compile(r"\s*[(（][^()（）]*[)）]\s*$")

# Templates of the built-in set: [Y] comes last where the language allows it. Objects
# are inserted as CLDR gives them (bare, no article or case ending), so the phrasings
# avoid slots that need an inflected form (Russian/Polish "страны [X]", "kraju [X]",
# Turkish "[X] ülkesinin", Korean/Japanese genitive particles).
_TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "P30": "[X] is a country in [Y].",
        "P36": "The capital of [X] is [Y].",
        "P37": "The official language of [X] is [Y].",
        "P38": "The currency of [X] is the [Y].",
    },
    "de": {
        "P30": "[X] ist ein Land in [Y].",
        "P36": "Die Hauptstadt von [X] ist [Y].",
        "P37": "Die Amtssprache von [X] ist [Y].",
        "P38": "Die Währung von [X] ist [Y].",
    },
    "fr": {
        "P30": "[X] se trouve en [Y].",
        "P36": "La capitale de [X] est [Y].",
        "P37": "La langue officielle de [X] est [Y].",
        "P38": "La monnaie de [X] est [Y].",
    },
    "es": {
        "P30": "[X] es un país de [Y].",
        "P36": "La capital de [X] es [Y].",
        "P37": "El idioma oficial de [X] es el [Y].",
        "P38": "La moneda de [X] es [Y].",
    },
    "pt": {
        "P30": "[X] é um país da [Y].",
        "P36": "A capital de [X] é [Y].",
        "P37": "A língua oficial de [X] é o [Y].",
        "P38": "A moeda de [X] é [Y].",
    },
    "it": {
        "P30": "[X] si trova in [Y].",
        "P36": "La capitale di [X] è [Y].",
        "P37": "La lingua ufficiale di [X] è [Y].",
        "P38": "La valuta di [X] è [Y].",
    },
    "nl": {
        "P30": "[X] ligt in [Y].",
        "P36": "De hoofdstad van [X] is [Y].",
        "P37": "De officiële taal van [X] is het [Y].",
        "P38": "De munteenheid van [X] is de [Y].",
    },
    "ru": {
        "P30": "Страна [X] находится на континенте [Y].",
        "P36": "Столица страны [X] — [Y].",
        "P37": "Официальный язык страны [X] — [Y].",
        "P38": "Валюта страны [X] — [Y].",
    },
    "zh": {
        "P30": "[X]位于[Y]。",
        "P36": "[X]的首都是[Y]。",
        "P37": "[X]的官方语言是[Y]。",
        "P38": "[X]的货币是[Y]。",
    },
    "ja": {
        "P30": "[X]は[Y]にある国です。",
        "P36": "[X]の首都は[Y]です。",
        "P37": "[X]の公用語は[Y]です。",
        "P38": "[X]の通貨は[Y]です。",
    },
    "ar": {
        "P30": "تقع [X] في [Y].",
        "P36": "عاصمة [X] هي [Y].",
        "P37": "اللغة الرسمية في [X] هي [Y].",
        "P38": "عملة [X] هي [Y].",
    },
    "hi": {
        "P30": "[X] [Y] में स्थित है।",
        "P36": "[X] की राजधानी [Y] है।",
        "P37": "[X] की आधिकारिक भाषा [Y] है।",
        "P38": "[X] की मुद्रा [Y] है।",
    },
    "ko": {
        "P30": "[X]의 소재 대륙은 [Y]입니다.",
        "P36": "[X]의 수도는 [Y]입니다.",
        "P37": "[X]의 공용어는 [Y]입니다.",
        "P38": "[X]의 통화는 [Y]입니다.",
    },
    "tr": {
        "P30": "[X] ülkesinin bulunduğu kıta [Y].",
        "P36": "[X] ülkesinin başkenti [Y].",
        "P37": "[X] ülkesinin resmi dili [Y].",
        "P38": "[X] ülkesinin para birimi [Y].",
    },
    "pl": {
        "P30": "Kraj [X] leży na kontynencie [Y].",
        "P36": "Stolica kraju [X] to [Y].",
        "P37": "Język urzędowy kraju [X] to [Y].",
        "P38": "Waluta kraju [X] to [Y].",
    },
    "vi": {
        "P30": "[X] là một quốc gia thuộc [Y].",
        "P36": "Thủ đô của [X] là [Y].",
        "P37": "Ngôn ngữ chính thức của [X] là [Y].",
        "P38": "Đơn vị tiền tệ của [X] là [Y].",
    },
    "id": {
        "P30": "[X] terletak di [Y].",
        "P36": "Ibu kota [X] adalah [Y].",
        "P37": "Bahasa resmi [X] adalah bahasa [Y].",
        "P38": "Mata uang [X] adalah [Y].",
    },
}

# CLDR continent-level regions used for P30.
_EUROPE, _ASIA, _AFRICA, _N_AMERICA, _S_AMERICA, _OCEANIA = "150", "142", "002", "003", "005", "009"

# Curated countries: (ISO 3166 code, continent, official language, currency, capital
# time zone). ``None`` leaves the relation out for that country: P37 where there is no
# single official language (several de jure ones, or none), P38 where the currency is
# shared by two or changing (Bulgaria joined the euro in 2026, CLDR 47 still says BGN),
# P30 for transcontinental countries, P36 where no CLDR time zone is named after the
# capital. Capital zones are CLDR keys (CLDR keeps "Europe/Kiev", "Asia/Katmandu").
# Central America and the Caribbean count as North America (CLDR region 003).
_COUNTRIES: tuple[tuple[str, str | None, str | None, str | None, str | None], ...] = (
    ("FR", _EUROPE, "fr", "EUR", "Europe/Paris"),
    ("DE", _EUROPE, "de", "EUR", "Europe/Berlin"),
    ("IT", _EUROPE, "it", "EUR", "Europe/Rome"),
    ("ES", _EUROPE, "es", "EUR", "Europe/Madrid"),
    ("PT", _EUROPE, "pt", "EUR", "Europe/Lisbon"),
    ("NL", _EUROPE, "nl", "EUR", "Europe/Amsterdam"),
    ("PL", _EUROPE, "pl", "PLN", "Europe/Warsaw"),
    ("SE", _EUROPE, "sv", "SEK", "Europe/Stockholm"),
    ("NO", _EUROPE, None, "NOK", "Europe/Oslo"),
    ("DK", _EUROPE, "da", "DKK", "Europe/Copenhagen"),
    ("FI", _EUROPE, None, "EUR", "Europe/Helsinki"),
    ("GR", _EUROPE, "el", "EUR", "Europe/Athens"),
    ("HU", _EUROPE, "hu", "HUF", "Europe/Budapest"),
    ("CZ", _EUROPE, "cs", "CZK", "Europe/Prague"),
    ("AT", _EUROPE, "de", "EUR", "Europe/Vienna"),
    ("RU", None, "ru", "RUB", "Europe/Moscow"),
    ("UA", _EUROPE, "uk", "UAH", "Europe/Kiev"),
    ("RO", _EUROPE, "ro", "RON", "Europe/Bucharest"),
    ("BG", _EUROPE, "bg", None, "Europe/Sofia"),
    ("IE", _EUROPE, None, "EUR", "Europe/Dublin"),
    ("GB", _EUROPE, "en", "GBP", "Europe/London"),
    ("IS", _EUROPE, "is", "ISK", "Atlantic/Reykjavik"),
    ("HR", _EUROPE, "hr", "EUR", "Europe/Zagreb"),
    ("RS", _EUROPE, "sr", "RSD", "Europe/Belgrade"),
    ("SK", _EUROPE, "sk", "EUR", "Europe/Bratislava"),
    ("SI", _EUROPE, "sl", "EUR", "Europe/Ljubljana"),
    ("LT", _EUROPE, "lt", "EUR", "Europe/Vilnius"),
    ("LV", _EUROPE, "lv", "EUR", "Europe/Riga"),
    ("EE", _EUROPE, "et", "EUR", "Europe/Tallinn"),
    ("BE", _EUROPE, None, "EUR", "Europe/Brussels"),
    ("CH", _EUROPE, None, "CHF", None),
    ("TR", None, "tr", "TRY", None),
    ("JP", _ASIA, "ja", "JPY", "Asia/Tokyo"),
    ("CN", _ASIA, "zh", "CNY", None),
    ("KR", _ASIA, "ko", "KRW", "Asia/Seoul"),
    ("KP", _ASIA, "ko", "KPW", "Asia/Pyongyang"),
    ("VN", _ASIA, "vi", "VND", None),
    ("TH", _ASIA, "th", "THB", "Asia/Bangkok"),
    ("ID", _ASIA, "id", "IDR", "Asia/Jakarta"),
    ("MY", _ASIA, "ms", "MYR", "Asia/Kuala_Lumpur"),
    ("PH", _ASIA, None, "PHP", "Asia/Manila"),
    ("IN", _ASIA, None, "INR", None),
    ("PK", _ASIA, None, "PKR", None),
    ("BD", _ASIA, "bn", "BDT", "Asia/Dhaka"),
    ("IR", _ASIA, "fa", "IRR", "Asia/Tehran"),
    ("IQ", _ASIA, None, "IQD", "Asia/Baghdad"),
    ("SA", _ASIA, "ar", "SAR", "Asia/Riyadh"),
    ("AE", _ASIA, "ar", "AED", None),
    ("IL", _ASIA, "he", "ILS", None),
    ("JO", _ASIA, "ar", "JOD", "Asia/Amman"),
    ("SY", _ASIA, "ar", "SYP", "Asia/Damascus"),
    ("LB", _ASIA, "ar", "LBP", "Asia/Beirut"),
    ("KW", _ASIA, "ar", "KWD", None),
    ("QA", _ASIA, "ar", "QAR", None),
    ("AF", _ASIA, None, "AFN", "Asia/Kabul"),
    ("KZ", None, None, "KZT", None),
    ("UZ", _ASIA, "uz", "UZS", "Asia/Tashkent"),
    ("MN", _ASIA, "mn", "MNT", "Asia/Ulaanbaatar"),
    ("NP", _ASIA, "ne", "NPR", "Asia/Katmandu"),
    ("KH", _ASIA, "km", "KHR", "Asia/Phnom_Penh"),
    ("LA", _ASIA, "lo", "LAK", "Asia/Vientiane"),
    ("GE", None, "ka", "GEL", "Asia/Tbilisi"),
    ("AM", None, "hy", "AMD", "Asia/Yerevan"),
    ("AZ", None, "az", "AZN", "Asia/Baku"),
    ("EG", _AFRICA, "ar", "EGP", "Africa/Cairo"),
    ("MA", _AFRICA, None, "MAD", None),
    ("DZ", _AFRICA, None, "DZD", "Africa/Algiers"),
    ("TN", _AFRICA, "ar", "TND", "Africa/Tunis"),
    ("LY", _AFRICA, "ar", "LYD", "Africa/Tripoli"),
    ("NG", _AFRICA, "en", "NGN", None),
    ("GH", _AFRICA, "en", "GHS", "Africa/Accra"),
    ("KE", _AFRICA, None, "KES", "Africa/Nairobi"),
    ("ET", _AFRICA, "am", "ETB", "Africa/Addis_Ababa"),
    ("ZA", _AFRICA, None, "ZAR", None),
    ("SN", _AFRICA, "fr", None, "Africa/Dakar"),
    ("CI", _AFRICA, "fr", None, None),
    ("TZ", _AFRICA, None, "TZS", None),
    ("AO", _AFRICA, "pt", "AOA", "Africa/Luanda"),
    ("MZ", _AFRICA, "pt", "MZN", "Africa/Maputo"),
    ("ML", _AFRICA, None, None, "Africa/Bamako"),
    ("US", _N_AMERICA, "en", "USD", None),
    ("CA", _N_AMERICA, None, "CAD", None),
    ("MX", _N_AMERICA, "es", "MXN", "America/Mexico_City"),
    ("BR", _S_AMERICA, "pt", "BRL", None),
    ("AR", _S_AMERICA, "es", "ARS", "America/Buenos_Aires"),
    ("CL", _S_AMERICA, "es", "CLP", "America/Santiago"),
    ("CO", _S_AMERICA, "es", "COP", "America/Bogota"),
    ("PE", _S_AMERICA, None, "PEN", "America/Lima"),
    ("VE", _S_AMERICA, "es", "VES", "America/Caracas"),
    ("EC", _S_AMERICA, "es", "USD", None),
    ("BO", _S_AMERICA, None, "BOB", None),
    ("UY", _S_AMERICA, "es", "UYU", "America/Montevideo"),
    ("PY", _S_AMERICA, None, "PYG", "America/Asuncion"),
    ("CU", _N_AMERICA, "es", "CUP", "America/Havana"),
    ("DO", _N_AMERICA, "es", "DOP", "America/Santo_Domingo"),
    ("GT", _N_AMERICA, "es", "GTQ", None),
    ("HN", _N_AMERICA, "es", "HNL", "America/Tegucigalpa"),
    ("SV", _N_AMERICA, "es", "USD", None),
    ("NI", _N_AMERICA, "es", "NIO", "America/Managua"),
    ("CR", _N_AMERICA, "es", "CRC", None),
    ("JM", _N_AMERICA, "en", "JMD", None),
    ("AU", _OCEANIA, "en", "AUD", None),
    ("NZ", _OCEANIA, None, "NZD", None),
)

# Languages whose CLDR data may omit an exemplar city that keeps the zone id's own
# (English/Latin) spelling; CLDR's fallback (the id's last part) is right for them.
_LATIN_SCRIPT = frozenset({"en", "de", "fr", "es", "pt", "it", "nl", "tr", "pl", "vi", "id"})


@dataclass(frozen=True)
class Fact:
    """One fact in one language.

    Attributes:
        uuid: identifies the fact; the same fact in other languages has the same uuid.
        lang: ISO 639-1 language code.
        relation: Wikidata-style relation id, e.g. ``"P37"``.
        subject: localised subject label.
        object: localised gold object label.
    """

    uuid: str
    lang: str
    relation: str
    subject: str
    object: str


@dataclass
class FactSet:
    """Facts in several languages with their templates and candidate objects.

    Build one with :meth:`builtin` or :meth:`from_mlama`, or directly. Candidates
    missing for a (language, relation) that has facts default to its gold objects in
    order of first appearance (mLAMA's TyQ).

    Attributes:
        facts: the facts, in order.
        templates: (lang, relation) -> template with ``[X]`` (subject) and ``[Y]`` (object).
        candidates: (lang, relation) -> candidate objects, the gold objects among them.
        description: where the facts came from, recorded in saved results.

    Raises:
        ValueError: no facts, an empty label, a duplicate (uuid, lang), a fact without a
            template, a template without ``[X]`` or ``[Y]``, or a gold object that is not
            among its candidates.
    """

    facts: list[Fact]
    templates: dict[tuple[str, str], str]
    candidates: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.facts = list(self.facts)
        self.templates = dict(self.templates)
        self.candidates = {key: _unique(values) for key, values in self.candidates.items()}
        self.description = dict(self.description)
        if not self.facts:
            raise ValueError("a FactSet needs at least one fact")
        for key, template in self.templates.items():
            _check_template(template, f"template for {key}")
        for key, values in self.candidates.items():
            if any(not isinstance(v, str) or not v.strip() for v in values):
                raise ValueError(f"candidates for {key} contain an empty label")
        seen: set[tuple[str, str]] = set()
        for fact in self.facts:
            _check_fact(fact)
            key = (fact.lang, fact.relation)
            if key not in self.templates:
                raise ValueError(
                    f"no template for {key} (fact {fact.uuid!r}); templates exist for "
                    f"{sorted(self.templates)}"
                )
            if (fact.uuid, fact.lang) in seen:
                raise ValueError(f"duplicate fact uuid {fact.uuid!r} in language {fact.lang!r}")
            seen.add((fact.uuid, fact.lang))
        gold: dict[tuple[str, str], list[str]] = {}
        for fact in self.facts:
            gold.setdefault((fact.lang, fact.relation), []).append(fact.object)
        for key, objects in gold.items():
            if key not in self.candidates:
                self.candidates[key] = _unique(objects)
        allowed = {key: set(values) for key, values in self.candidates.items()}
        for fact in self.facts:
            if fact.object not in allowed[(fact.lang, fact.relation)]:
                raise ValueError(
                    f"gold object {fact.object!r} of fact {fact.uuid!r} ({fact.lang}, "
                    f"{fact.relation}, subject {fact.subject!r}) is not among its "
                    f"{len(allowed[(fact.lang, fact.relation)])} candidates"
                )

    def __len__(self) -> int:
        return len(self.facts)

    @property
    def languages(self) -> list[str]:
        """The languages, in order of first appearance in :attr:`facts`."""
        return list(dict.fromkeys(fact.lang for fact in self.facts))

    @property
    def relations(self) -> list[str]:
        """The relations, in order of first appearance in :attr:`facts`."""
        return list(dict.fromkeys(fact.relation for fact in self.facts))

    def facts_for(self, lang: str, relation: str | None = None) -> list[Fact]:
        """Return the facts of one language, optionally of one relation only.

        Raises:
            ValueError: the language or relation is not in this set.
        """
        _check_choice("language", lang, self.languages)
        if relation is not None:
            _check_choice("relation", relation, self.relations)
        return [
            fact
            for fact in self.facts
            if fact.lang == lang and (relation is None or fact.relation == relation)
        ]

    def groups(self) -> dict[tuple[str, str], list[Fact]]:
        """``(lang, relation) -> facts`` in language, then relation order; empty groups left out."""
        found: dict[tuple[str, str], list[Fact]] = {}
        for fact in self.facts:
            found.setdefault((fact.lang, fact.relation), []).append(fact)
        return {
            (lang, rel): found[(lang, rel)]
            for lang in self.languages
            for rel in self.relations
            if (lang, rel) in found
        }

    def fill(self, fact: Fact, obj: str | None = None) -> str:
        """Return the fact's template with ``[X]`` -> subject and ``[Y]`` -> ``obj``.

        Args:
            fact: the fact; its (lang, relation) picks the template.
            obj: the object to insert; the gold object when ``None``.
        """
        key = (fact.lang, fact.relation)
        if key not in self.templates:
            raise ValueError(f"no template for {key}; templates exist for {sorted(self.templates)}")
        values = {"[X]": fact.subject, "[Y]": fact.object if obj is None else obj}
        return _SLOT.sub(lambda match: values[match.group(0)], self.templates[key])

    def head(self, per_relation: int) -> FactSet:
        """The first ``per_relation`` uuids (sorted) of each relation, in every language."""
        if per_relation < 1:
            raise ValueError(f"per_relation must be at least 1, got {per_relation}")
        keep = set()
        for relation in self.relations:
            keep.update(
                sorted({f.uuid for f in self.facts if f.relation == relation})[:per_relation]
            )
        return FactSet(
            [f for f in self.facts if f.uuid in keep],
            self.templates,
            self.candidates,
            {**self.description, "facts_per_relation": per_relation},
        )

    def subset(
        self, languages: Sequence[str] | None = None, relations: Sequence[str] | None = None
    ) -> FactSet:
        """Return the facts of some languages and relations, in the order asked for.

        Raises:
            ValueError: a language or relation that is not in this set, or a language
                left without facts.
        """
        languages = _choose("language", languages, self.languages)
        relations = _choose("relation", relations, self.relations)
        wanted = set(relations)
        facts = []
        for lang in languages:
            chosen = [f for f in self.facts if f.lang == lang and f.relation in wanted]
            if not chosen:
                raise ValueError(f"language {lang!r} has no facts for relations {relations}")
            facts.extend(chosen)
        description = dict(self.description, languages=languages, relations=relations)
        return self._restricted(facts, description)

    def split(self, dev_fraction: float = 0.5, *, seed: int = 0) -> tuple[FactSet, FactSet]:
        """Split the facts by uuid into (dev, test), the same way in every language.

        Each relation's uuids are sorted, shuffled with a generator seeded by ``seed``
        and the relation, and their first ``round(dev_fraction * n)`` go to dev. So the
        split of a fact depends only on its uuid, relation and ``seed``: a subset splits
        the same way as the whole set. Candidates stay whole in both parts.

        Raises:
            ValueError: ``dev_fraction`` not strictly between 0 and 1, or a part left empty.
        """
        if not 0 < dev_fraction < 1:
            raise ValueError(f"dev_fraction must be strictly between 0 and 1, got {dev_fraction}")
        by_relation: dict[str, set[str]] = {}
        relation_of: dict[str, str] = {}
        for fact in self.facts:
            relation = relation_of.setdefault(fact.uuid, fact.relation)
            by_relation.setdefault(relation, set()).add(fact.uuid)
        dev_uuids: set[str] = set()
        for relation in sorted(by_relation):
            uuids = sorted(by_relation[relation])
            random.Random(f"{seed}:{relation}").shuffle(uuids)
            dev_uuids.update(uuids[: int(len(uuids) * dev_fraction + 0.5)])
        dev = [f for f in self.facts if f.uuid in dev_uuids]
        test = [f for f in self.facts if f.uuid not in dev_uuids]
        if not dev or not test:
            raise ValueError(
                f"dev_fraction={dev_fraction} leaves the {'dev' if not dev else 'test'} part "
                f"empty ({len(relation_of)} uuids)"
            )
        split = {"dev_fraction": dev_fraction, "seed": seed}
        return (
            self._restricted(dev, dict(self.description, split=dict(split, part="dev"))),
            self._restricted(test, dict(self.description, split=dict(split, part="test"))),
        )

    @classmethod
    def builtin(
        cls, languages: Sequence[str] | None = None, relations: Sequence[str] | None = None
    ) -> FactSet:
        """Return the built-in fact set from CLDR (via ``babel``).

        Args:
            languages: ISO 639-1 codes among :data:`BUILTIN_LANGUAGES`; all when ``None``.
            relations: relation ids among :data:`RELATIONS`; all when ``None``.

        Raises:
            ValueError: an unknown language or relation.
            ImportError: ``babel`` is not installed.
        """
        languages = _choose("language", languages, list(BUILTIN_LANGUAGES))
        relations = _choose("relation", relations, list(RELATIONS))
        facts, templates, candidates, description = _builtin_data()
        full = cls(list(facts), dict(templates), dict(candidates), dict(description))
        return full.subset(languages, relations)

    @classmethod
    def from_mlama(
        cls,
        directory: str | Path,
        languages: Sequence[str] | None = None,
        relations: Sequence[str] | None = None,
    ) -> FactSet:
        """Read facts in the mLAMA 1.1 layout.

        Args:
            directory: the folder holding ``{lang}/`` folders (e.g. ``mlama1.1``) and,
                optionally, ``TREx_multilingual_objects/``.
            languages: language folders to read; all (sorted) when ``None``.
            relations: relations to read; all that have a template when ``None``.

        Raises:
            FileNotFoundError: a missing directory or ``templates.jsonl``.
            ValueError: a malformed file or line (named with its line number), a template
                without ``[X]``/``[Y]``, an unknown language or relation, a language
                without facts, or a gold object missing from the candidate file.
        """
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"mLAMA directory not found: {root}")
        available = sorted(
            p.name
            for p in root.iterdir()
            if p.is_dir() and p.name != OBJECTS_DIR and any(p.glob("*.jsonl"))
        )
        if not available:
            raise ValueError(f"no mLAMA language folders ({{lang}}/*.jsonl) in {root}")
        languages = _choose("language", languages, available)
        per_language = {lang: _read_language(root / lang) for lang in languages}
        present = list(dict.fromkeys(r for rels in per_language.values() for r in rels))
        if relations is not None:
            _choose("relation", relations, present)
        facts: list[Fact] = []
        templates: dict[tuple[str, str], str] = {}
        candidates: dict[tuple[str, str], list[str]] = {}
        for lang, rels in per_language.items():
            chosen = {r: v for r, v in rels.items() if relations is None or r in relations}
            if not any(lang_facts for _, lang_facts in chosen.values()):
                raise ValueError(
                    f"language {lang!r} has no facts in {root / lang}"
                    + (f" for relations {list(relations)}" if relations is not None else "")
                )
            objects_path = root / OBJECTS_DIR / f"{lang}.json"
            objects = _read_objects(objects_path) if objects_path.is_file() else {}
            for relation, (template, lang_facts) in chosen.items():
                if not lang_facts:
                    continue
                templates[(lang, relation)] = template
                facts.extend(lang_facts)
                if relation in objects:
                    candidates[(lang, relation)] = objects[relation]
                    allowed = set(objects[relation])
                    for fact in lang_facts:
                        if fact.object not in allowed:
                            raise ValueError(
                                f"{objects_path}: gold object {fact.object!r} of fact "
                                f"{fact.uuid!r} ({lang}, {relation}) is not among the "
                                f"{len(allowed)} candidate objects of {relation}"
                            )
        description = {
            "source": "mlama",
            "directory": str(root),
            "languages": list(languages),
            "relations": list(dict.fromkeys(f.relation for f in facts)),
            "candidates": f"{OBJECTS_DIR}/{{lang}}.json where present, else gold objects",
        }
        return cls(facts, templates, candidates, description)

    def to_mlama(self, directory: str | Path) -> Path:
        """Write the set in the mLAMA 1.1 layout and return the directory.

        Writes ``{lang}/templates.jsonl``, ``{lang}/{relation}.jsonl`` and
        ``TREx_multilingual_objects/{lang}.json``; ``sub_uri`` and ``obj_uri`` are
        empty, as a :class:`Fact` keeps no URIs. Existing files of those names are
        replaced.
        """
        root = Path(directory)
        (root / OBJECTS_DIR).mkdir(parents=True, exist_ok=True)
        groups = self.groups()
        for lang in self.languages:
            (root / lang).mkdir(exist_ok=True)
            objects: dict[str, dict[str, list[str]]] = {}
            template_lines = []
            for relation in self.relations:
                if (lang, relation) not in self.templates:
                    continue
                facts = groups.get((lang, relation), [])
                if not facts:
                    continue
                template = self.templates[(lang, relation)]
                template_lines.append({"relation": relation, "template": template})
                rows = [
                    {
                        "sub_uri": "",
                        "obj_uri": "",
                        "sub_label": f.subject,
                        "obj_label": f.object,
                        "lineid": i,
                        "uuid": f.uuid,
                    }
                    for i, f in enumerate(facts)
                ]
                _write_jsonl(root / lang / f"{relation}.jsonl", rows)
                objects[relation] = {
                    "subjects": _unique(f.subject for f in facts),
                    "objects": self.candidates[(lang, relation)],
                }
            _write_jsonl(root / lang / "templates.jsonl", template_lines)
            text = json.dumps(objects, ensure_ascii=False, indent=1)
            (root / OBJECTS_DIR / f"{lang}.json").write_text(text + "\n", encoding="utf-8")
        return root

    def _restricted(self, facts: list[Fact], description: dict[str, Any]) -> FactSet:
        keys = {(f.lang, f.relation) for f in facts}
        return FactSet(
            facts,
            {k: v for k, v in self.templates.items() if k in keys},
            {k: v for k, v in self.candidates.items() if k in keys},
            description,
        )


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _check_template(template: Any, where: str) -> None:
    if not isinstance(template, str):
        raise ValueError(f"{where}: the template must be a string, got {template!r}")
    missing = [slot for slot in ("[X]", "[Y]") if slot not in template]
    if missing:
        raise ValueError(f"{where}: template {template!r} lacks {' and '.join(missing)}")


def _check_fact(fact: Fact) -> None:
    for name in ("uuid", "lang", "relation", "subject", "object"):
        value = getattr(fact, name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"fact {fact!r}: {name} must be a non-empty string")


def _check_choice(kind: str, value: str, available: Sequence[str]) -> None:
    if value not in available:
        raise ValueError(f"unknown {kind} {value!r}; available: {', '.join(available)}")


def _choose(kind: str, asked: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    if asked is None:
        return list(available)
    if isinstance(asked, str):
        asked = [asked]
    chosen = _unique(asked)
    if not chosen:
        raise ValueError(f"no {kind}s given; available: {', '.join(available)}")
    for value in chosen:
        _check_choice(kind, value, available)
    return chosen


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for the non-blank lines of a JSON-lines file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: invalid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {line.strip()[:80]}")
        yield number, value


def _field(value: dict[str, Any], key: str, path: Path, number: int) -> str:
    text = value.get(key)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{path}:{number}: {key!r} must be a non-empty string, got {text!r}")
    return text


def _read_language(folder: Path) -> dict[str, tuple[str, list[Fact]]]:
    """Read one mLAMA language folder: relation -> (template, facts), in template order."""
    lang = folder.name
    templates_path = folder / "templates.jsonl"
    if not templates_path.is_file():
        raise FileNotFoundError(f"missing mLAMA templates file: {templates_path}")
    templates: dict[str, str] = {}
    for number, value in _read_jsonl(templates_path):
        relation = _field(value, "relation", templates_path, number)
        template = _field(value, "template", templates_path, number)
        _check_template(template, f"{templates_path}:{number} (relation {relation})")
        if relation in templates:
            raise ValueError(f"{templates_path}:{number}: second template for {relation}")
        templates[relation] = template
    files = {p.stem: p for p in folder.glob("*.jsonl") if p.name != "templates.jsonl"}
    for relation in sorted(set(files) - set(templates)):
        warnings.warn(
            f"{files[relation]}: no template for {relation} in {templates_path}; skipped",
            stacklevel=3,
        )
    result: dict[str, tuple[str, list[Fact]]] = {}
    for relation, template in templates.items():
        if relation not in files:
            continue
        path = files[relation]
        facts: list[Fact] = []
        seen: dict[str, int] = {}
        for number, value in _read_jsonl(path):
            uuid = _field(value, "uuid", path, number)
            if uuid in seen:
                raise ValueError(f"{path}:{number}: uuid {uuid!r} already on line {seen[uuid]}")
            seen[uuid] = number
            facts.append(
                Fact(
                    uuid=uuid,
                    lang=lang,
                    relation=relation,
                    subject=_field(value, "sub_label", path, number),
                    object=_field(value, "obj_label", path, number),
                )
            )
        result[relation] = (template, facts)
    return result


def _read_objects(path: Path) -> dict[str, list[str]]:
    """Read ``TREx_multilingual_objects/{lang}.json``: relation -> candidate objects."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object {{relation: {{'objects': [...]}}}}")
    result = {}
    for relation, entry in data.items():
        objects = entry.get("objects") if isinstance(entry, dict) else None
        if not isinstance(objects, list) or not all(
            isinstance(o, str) and o.strip() for o in objects
        ):
            raise ValueError(f"{path}: relation {relation!r} needs an 'objects' list of labels")
        result[relation] = _unique(objects)
    return result


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _clean(label: str | None, *, drop_qualifier: bool = False) -> str | None:
    """Normalise a CLDR label; ``None`` if it is missing or carries a qualifier."""
    if not label:
        return None
    text = unicodedata.normalize("NFC", label).replace("\u00ad", "")
    text = " ".join(text.split())
    if drop_qualifier:
        text = _PAREN.sub("", text)
    if not text or any(ch in text for ch in "()（）"):
        return None
    return text


def _city(locale: Any, lang: str, zone: str) -> str | None:
    """The localised exemplar city of a CLDR time-zone key, with CLDR's fallback."""
    city = locale.time_zones.get(zone, {}).get("city")
    if not city and lang in _LATIN_SCRIPT:
        city = zone.rsplit("/", 1)[-1].replace("_", " ")
    return _clean(city, drop_qualifier=True)


def _object_label(locale: Any, lang: str, relation: str, obj: str) -> str | None:
    """The localised label of a built-in object: region, city, language or currency."""
    if relation == "P30":
        return _clean(locale.territories.get(obj))
    if relation == "P36":
        return _city(locale, lang, obj)
    if relation == "P37":
        return _clean(locale.languages.get(obj))
    return _clean(locale.currencies.get(obj))


@functools.cache
def _builtin_data() -> tuple[
    tuple[Fact, ...],
    dict[tuple[str, str], str],
    dict[tuple[str, str], list[str]],
    dict[str, Any],
]:
    try:
        import babel
        from babel import Locale
        from babel.core import get_cldr_version
    except ImportError as exc:  # pragma: no cover - babel is installed with the package
        raise ImportError("the built-in fact set needs babel: pip install babel") from exc

    facts: list[Fact] = []
    templates: dict[tuple[str, str], str] = {}
    candidates: dict[tuple[str, str], list[str]] = {}
    for lang in BUILTIN_LANGUAGES:
        locale = Locale.parse(lang)
        for relation in RELATIONS:
            column = {"P30": 1, "P37": 2, "P38": 3, "P36": 4}[relation]
            labels: dict[str, str] = {}
            rows = []
            for row in _COUNTRIES:
                code, obj = row[0], row[column]
                if obj is None:
                    continue
                subject = _clean(locale.territories.get(code))
                if obj not in labels:
                    label = _object_label(locale, lang, relation, obj)
                    if label is not None:
                        labels[obj] = label
                if subject is not None and obj in labels:
                    rows.append(Fact(f"{relation}-{code}", lang, relation, subject, labels[obj]))
            if len(set(labels.values())) != len(labels):
                raise RuntimeError(f"two {relation} objects share a label in {lang}: {labels}")
            if rows:
                facts.extend(rows)
                templates[(lang, relation)] = _TEMPLATES[lang][relation]
                candidates[(lang, relation)] = list(labels.values())
    description = {
        "source": "builtin",
        "data": "CLDR (via babel): territory, language and currency names, time-zone cities",
        "babel_version": babel.__version__,
        "cldr_version": get_cldr_version(),
        "relation_labels": dict(RELATIONS),
    }
    return tuple(facts), templates, candidates, description
