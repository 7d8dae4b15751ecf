"""Build the built-in fact set of mlneurons from CLDR data and freeze it as package data.

``FactSet.builtin()`` reads ``mlneurons/data/builtin_facts/``, written by this script in
the mLAMA 1.1 layout (``{lang}/{relation}.jsonl``, ``{lang}/templates.jsonl``,
``TREx_multilingual_objects/{lang}.json``) with a ``provenance.json`` that records the
babel and CLDR versions, the generation date and this script. Loading never imports
babel, so a new CLDR release cannot change the facts under a user's feet. Run it from
the repository root with the babel version to freeze (2.18.0, CLDR 47, for the numbers
in the README)::

    python -m venv /tmp/babel && /tmp/babel/bin/pip install babel==2.18.0
    /tmp/babel/bin/python scripts/build_builtin_facts.py          # rewrite the data
    /tmp/babel/bin/python scripts/build_builtin_facts.py --check  # exit 1 if it differs

It needs only babel and the standard library: ``mlneurons/facts.py`` (standard library
only) is loaded by path, not through the ``mlneurons`` package, which imports torch.
The output is deterministic: the same babel (and Python) gives the same bytes. When only
the date would change, nothing is written.

The facts: official language (P37), currency (P38), continent (P30) and capital (P36) of
a curated list of countries, with hand-written templates in 17 languages. The capitals
are CLDR time-zone exemplar cities, used only where the zone's city is the capital.
Labels are CLDR's localised names; a fact whose label is missing in a language is left
out of that language, and a (language, relation) whose candidates would share a label
stops the build.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import platform
import re
import shutil
import sys
import tempfile
import unicodedata
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/build_builtin_facts.py"
DATA_DIR = ROOT / "mlneurons" / "data" / "builtin_facts"
PROVENANCE = "provenance.json"
DATA_NOTE = "CLDR (via babel): territory, language and currency names, time-zone cities"

QUALIFIER = re.compile(r"\s*[(（][^()（）]*[)）]\s*$")
COLUMNS = {"P30": 1, "P37": 2, "P38": 3, "P36": 4}
"""Relation -> column of :data:`COUNTRIES` holding its object."""

# Templates of the built-in set: [Y] comes last where the language allows it. Objects
# are inserted as CLDR gives them (bare, no article or case ending), so the phrasings
# avoid slots that need an inflected form (Russian/Polish "страны [X]", "kraju [X]",
# Turkish "[X] ülkesinin", Korean/Japanese genitive particles).
TEMPLATES: dict[str, dict[str, str]] = {
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
EUROPE, ASIA, AFRICA, N_AMERICA, S_AMERICA, OCEANIA = "150", "142", "002", "003", "005", "009"

# Curated countries: (ISO 3166 code, continent, official language, currency, capital
# time zone). ``None`` leaves the relation out for that country: P37 where there is no
# single official language (several de jure ones, or none), P38 where the currency is
# shared by two or changing (Bulgaria joined the euro in 2026, CLDR 47 still says BGN),
# P30 for transcontinental countries, P36 where no CLDR time zone is named after the
# capital. Capital zones are CLDR keys (CLDR keeps "Europe/Kiev", "Asia/Katmandu").
# Central America and the Caribbean count as North America (CLDR region 003).
COUNTRIES: tuple[tuple[str, str | None, str | None, str | None, str | None], ...] = (
    ("FR", EUROPE, "fr", "EUR", "Europe/Paris"),
    ("DE", EUROPE, "de", "EUR", "Europe/Berlin"),
    ("IT", EUROPE, "it", "EUR", "Europe/Rome"),
    ("ES", EUROPE, "es", "EUR", "Europe/Madrid"),
    ("PT", EUROPE, "pt", "EUR", "Europe/Lisbon"),
    ("NL", EUROPE, "nl", "EUR", "Europe/Amsterdam"),
    ("PL", EUROPE, "pl", "PLN", "Europe/Warsaw"),
    ("SE", EUROPE, "sv", "SEK", "Europe/Stockholm"),
    ("NO", EUROPE, None, "NOK", "Europe/Oslo"),
    ("DK", EUROPE, "da", "DKK", "Europe/Copenhagen"),
    ("FI", EUROPE, None, "EUR", "Europe/Helsinki"),
    ("GR", EUROPE, "el", "EUR", "Europe/Athens"),
    ("HU", EUROPE, "hu", "HUF", "Europe/Budapest"),
    ("CZ", EUROPE, "cs", "CZK", "Europe/Prague"),
    ("AT", EUROPE, "de", "EUR", "Europe/Vienna"),
    ("RU", None, "ru", "RUB", "Europe/Moscow"),
    ("UA", EUROPE, "uk", "UAH", "Europe/Kiev"),
    ("RO", EUROPE, "ro", "RON", "Europe/Bucharest"),
    ("BG", EUROPE, "bg", None, "Europe/Sofia"),
    ("IE", EUROPE, None, "EUR", "Europe/Dublin"),
    ("GB", EUROPE, "en", "GBP", "Europe/London"),
    ("IS", EUROPE, "is", "ISK", "Atlantic/Reykjavik"),
    ("HR", EUROPE, "hr", "EUR", "Europe/Zagreb"),
    ("RS", EUROPE, "sr", "RSD", "Europe/Belgrade"),
    ("SK", EUROPE, "sk", "EUR", "Europe/Bratislava"),
    ("SI", EUROPE, "sl", "EUR", "Europe/Ljubljana"),
    ("LT", EUROPE, "lt", "EUR", "Europe/Vilnius"),
    ("LV", EUROPE, "lv", "EUR", "Europe/Riga"),
    ("EE", EUROPE, "et", "EUR", "Europe/Tallinn"),
    ("BE", EUROPE, None, "EUR", "Europe/Brussels"),
    ("CH", EUROPE, None, "CHF", None),
    ("TR", None, "tr", "TRY", None),
    ("JP", ASIA, "ja", "JPY", "Asia/Tokyo"),
    ("CN", ASIA, "zh", "CNY", None),
    ("KR", ASIA, "ko", "KRW", "Asia/Seoul"),
    ("KP", ASIA, "ko", "KPW", "Asia/Pyongyang"),
    ("VN", ASIA, "vi", "VND", None),
    ("TH", ASIA, "th", "THB", "Asia/Bangkok"),
    ("ID", ASIA, "id", "IDR", "Asia/Jakarta"),
    ("MY", ASIA, "ms", "MYR", "Asia/Kuala_Lumpur"),
    ("PH", ASIA, None, "PHP", "Asia/Manila"),
    ("IN", ASIA, None, "INR", None),
    ("PK", ASIA, None, "PKR", None),
    ("BD", ASIA, "bn", "BDT", "Asia/Dhaka"),
    ("IR", ASIA, "fa", "IRR", "Asia/Tehran"),
    ("IQ", ASIA, None, "IQD", "Asia/Baghdad"),
    ("SA", ASIA, "ar", "SAR", "Asia/Riyadh"),
    ("AE", ASIA, "ar", "AED", None),
    ("IL", ASIA, "he", "ILS", None),
    ("JO", ASIA, "ar", "JOD", "Asia/Amman"),
    ("SY", ASIA, "ar", "SYP", "Asia/Damascus"),
    ("LB", ASIA, "ar", "LBP", "Asia/Beirut"),
    ("KW", ASIA, "ar", "KWD", None),
    ("QA", ASIA, "ar", "QAR", None),
    ("AF", ASIA, None, "AFN", "Asia/Kabul"),
    ("KZ", None, None, "KZT", None),
    ("UZ", ASIA, "uz", "UZS", "Asia/Tashkent"),
    ("MN", ASIA, "mn", "MNT", "Asia/Ulaanbaatar"),
    ("NP", ASIA, "ne", "NPR", "Asia/Katmandu"),
    ("KH", ASIA, "km", "KHR", "Asia/Phnom_Penh"),
    ("LA", ASIA, "lo", "LAK", "Asia/Vientiane"),
    ("GE", None, "ka", "GEL", "Asia/Tbilisi"),
    ("AM", None, "hy", "AMD", "Asia/Yerevan"),
    ("AZ", None, "az", "AZN", "Asia/Baku"),
    ("EG", AFRICA, "ar", "EGP", "Africa/Cairo"),
    ("MA", AFRICA, None, "MAD", None),
    ("DZ", AFRICA, None, "DZD", "Africa/Algiers"),
    ("TN", AFRICA, "ar", "TND", "Africa/Tunis"),
    ("LY", AFRICA, "ar", "LYD", "Africa/Tripoli"),
    ("NG", AFRICA, "en", "NGN", None),
    ("GH", AFRICA, "en", "GHS", "Africa/Accra"),
    ("KE", AFRICA, None, "KES", "Africa/Nairobi"),
    ("ET", AFRICA, "am", "ETB", "Africa/Addis_Ababa"),
    ("ZA", AFRICA, None, "ZAR", None),
    ("SN", AFRICA, "fr", None, "Africa/Dakar"),
    ("CI", AFRICA, "fr", None, None),
    ("TZ", AFRICA, None, "TZS", None),
    ("AO", AFRICA, "pt", "AOA", "Africa/Luanda"),
    ("MZ", AFRICA, "pt", "MZN", "Africa/Maputo"),
    ("ML", AFRICA, None, None, "Africa/Bamako"),
    ("US", N_AMERICA, "en", "USD", None),
    ("CA", N_AMERICA, None, "CAD", None),
    ("MX", N_AMERICA, "es", "MXN", "America/Mexico_City"),
    ("BR", S_AMERICA, "pt", "BRL", None),
    ("AR", S_AMERICA, "es", "ARS", "America/Buenos_Aires"),
    ("CL", S_AMERICA, "es", "CLP", "America/Santiago"),
    ("CO", S_AMERICA, "es", "COP", "America/Bogota"),
    ("PE", S_AMERICA, None, "PEN", "America/Lima"),
    ("VE", S_AMERICA, "es", "VES", "America/Caracas"),
    ("EC", S_AMERICA, "es", "USD", None),
    ("BO", S_AMERICA, None, "BOB", None),
    ("UY", S_AMERICA, "es", "UYU", "America/Montevideo"),
    ("PY", S_AMERICA, None, "PYG", "America/Asuncion"),
    ("CU", N_AMERICA, "es", "CUP", "America/Havana"),
    ("DO", N_AMERICA, "es", "DOP", "America/Santo_Domingo"),
    ("GT", N_AMERICA, "es", "GTQ", None),
    ("HN", N_AMERICA, "es", "HNL", "America/Tegucigalpa"),
    ("SV", N_AMERICA, "es", "USD", None),
    ("NI", N_AMERICA, "es", "NIO", "America/Managua"),
    ("CR", N_AMERICA, "es", "CRC", None),
    ("JM", N_AMERICA, "en", "JMD", None),
    ("AU", OCEANIA, "en", "AUD", None),
    ("NZ", OCEANIA, None, "NZD", None),
)

# Languages whose CLDR data may omit an exemplar city that keeps the zone id's own
# (English/Latin) spelling; CLDR's fallback (the id's last part) is right for them.
LATIN_SCRIPT = frozenset({"en", "de", "fr", "es", "pt", "it", "nl", "tr", "pl", "vi", "id"})


def clean_label(label: str | None, *, drop_qualifier: bool = False) -> str | None:
    """Normalise a CLDR label; ``None`` if it is missing or carries a qualifier."""
    if not label:
        return None
    text = unicodedata.normalize("NFC", label).replace("\u00ad", "")
    text = " ".join(text.split())
    if drop_qualifier:
        text = QUALIFIER.sub("", text)
    if not text or any(ch in text for ch in "()（）"):
        return None
    return text


def city_label(locale: Any, lang: str, zone: str) -> str | None:
    """The localised exemplar city of a CLDR time-zone key, with CLDR's fallback."""
    city = locale.time_zones.get(zone, {}).get("city")
    if not city and lang in LATIN_SCRIPT:
        city = zone.rsplit("/", 1)[-1].replace("_", " ")
    return clean_label(city, drop_qualifier=True)


def object_label(locale: Any, lang: str, relation: str, obj: str) -> str | None:
    """The localised label of a built-in object: region, city, language or currency."""
    if relation == "P30":
        return clean_label(locale.territories.get(obj))
    if relation == "P36":
        return city_label(locale, lang, obj)
    if relation == "P37":
        return clean_label(locale.languages.get(obj))
    return clean_label(locale.currencies.get(obj))


def load_facts_module() -> ModuleType:
    """Load ``mlneurons/facts.py`` by path, without the ``mlneurons`` package."""
    spec = importlib.util.spec_from_file_location(
        "_mlneurons_facts", ROOT / "mlneurons" / "facts.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def build_facts(facts_module: ModuleType) -> Any:
    """Build the fact set from the installed babel; returns a ``FactSet``.

    Raises:
        RuntimeError: two candidate objects of one (language, relation) share a label.
    """
    from babel import Locale

    fact_cls = facts_module.Fact
    facts, templates, candidates = [], {}, {}
    for lang in facts_module.BUILTIN_LANGUAGES:
        locale = Locale.parse(lang)
        for relation in facts_module.RELATIONS:
            labels: dict[str, str] = {}
            rows = []
            for row in COUNTRIES:
                code, obj = row[0], row[COLUMNS[relation]]
                if obj is None:
                    continue
                subject = clean_label(locale.territories.get(code))
                if obj not in labels:
                    label = object_label(locale, lang, relation, obj)
                    if label is not None:
                        labels[obj] = label
                if subject is not None and obj in labels:
                    rows.append(
                        fact_cls(f"{relation}-{code}", lang, relation, subject, labels[obj])
                    )
            if len(set(labels.values())) != len(labels):
                raise RuntimeError(f"two {relation} objects share a label in {lang}: {labels}")
            if rows:
                facts.extend(rows)
                templates[(lang, relation)] = TEMPLATES[lang][relation]
                candidates[(lang, relation)] = list(labels.values())
    return facts_module.FactSet(facts, templates, candidates)


def provenance(generated: str) -> dict[str, str]:
    """What the data was built from, as written to ``provenance.json``."""
    import babel
    from babel.core import get_cldr_version

    return {
        "data": DATA_NOTE,
        "babel_version": babel.__version__,
        "cldr_version": get_cldr_version(),
        "python_version": platform.python_version(),
        "generated": generated,
        "script": SCRIPT,
    }


def write(directory: Path, generated: str) -> Path:
    """Write the fact set and its provenance into an empty or new ``directory``."""
    build_facts(load_facts_module()).to_mlama(directory)
    text = json.dumps(provenance(generated), indent=1, sort_keys=True)
    (directory / PROVENANCE).write_text(text + "\n", encoding="utf-8")
    return directory


def differences(new: Path, old: Path) -> list[str]:
    """Files (relative paths) that differ between two data folders, date aside."""

    def contents(root: Path) -> dict[str, bytes]:
        found = {}
        for path in sorted(root.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                if path.name == PROVENANCE and path.parent == root:
                    record = json.loads(data)
                    record.pop("generated", None)
                    record.pop("python_version", None)
                    data = json.dumps(record, sort_keys=True).encode()
                found[path.relative_to(root).as_posix()] = data
        return found

    a, b = contents(new), contents(old) if old.is_dir() else {}
    return sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))


def main(argv: list[str] | None = None) -> int:
    """Rebuild the data (or check it with ``--check``); return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if it differs")
    parser.add_argument("--out", type=Path, default=DATA_DIR, help=f"default: {DATA_DIR}")
    args = parser.parse_args(argv)
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    with tempfile.TemporaryDirectory() as tmp:
        new = write(Path(tmp) / "facts", today)
        changed = differences(new, args.out)
        if not changed:
            print(f"{args.out}: up to date")
            return 0
        print(f"{args.out}: {len(changed)} files differ, e.g. {', '.join(changed[:5])}")
        if args.check:
            return 1
        shutil.rmtree(args.out, ignore_errors=True)
        shutil.copytree(new, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
