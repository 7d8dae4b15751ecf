"""Tests of the fact-set data layer: mLAMA reading and writing, the built-in CLDR set."""

from __future__ import annotations

import datetime
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from mlneurons.data import facts as facts_module
from mlneurons.data.facts import (
    BUILTIN_DIR,
    BUILTIN_LANGUAGES,
    OBJECTS_DIR,
    RELATIONS,
    Fact,
    FactSet,
)

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = {
    "en": {
        "templates": [("P37", "The official language of [X] is [Y] ."), ("P36", "The capital of [X] is [Y] .")],
        "P37": [("Q142", "France", "Q150", "French", "fr-37"), ("Q155", "Brazil", "Q5146", "Portuguese", "br-37")],
        "P36": [("Q142", "France", "Q90", "Paris", "fr-36"), ("Q17", "Japan", "Q1490", "Tokyo", "jp-36")],
    },
    "de": {
        "templates": [("P37", "Die Amtssprache von [X] ist [Y] ."), ("P36", "Die Hauptstadt von [X] ist [Y] .")],
        "P37": [("Q142", "Frankreich", "Q150", "Französisch", "fr-37")],
        "P36": [("Q142", "Frankreich", "Q90", "Paris", "fr-36"), ("Q17", "Japan", "Q1490", "Tokio", "jp-36")],
    },
}  # fmt: skip


def write_lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )


def write_sample(root, objects=True):
    for lang, spec in SAMPLE.items():
        templates = [{"relation": r, "template": t} for r, t in spec["templates"]]
        write_lines(root / lang / "templates.jsonl", templates)
        for relation, _ in spec["templates"]:
            rows = [
                {
                    "sub_uri": s,
                    "obj_uri": o,
                    "sub_label": sl,
                    "obj_label": ol,
                    "lineid": i,
                    "uuid": u,
                }
                for i, (s, sl, o, ol, u) in enumerate(spec[relation])
            ]
            write_lines(root / lang / f"{relation}.jsonl", rows)
    if objects:
        (root / OBJECTS_DIR).mkdir()
        en = {"P37": {"subjects": [], "objects": ["French", "Portuguese", "Japanese"]}}
        (root / OBJECTS_DIR / "en.json").write_text(json.dumps(en), encoding="utf-8")
    return root


def same(a: FactSet, b: FactSet) -> bool:
    return (a.facts, a.templates, a.candidates) == (b.facts, b.templates, b.candidates)


# --- mLAMA -------------------------------------------------------------------------


def test_mlama_read(tmp_path):
    facts = FactSet.from_mlama(write_sample(tmp_path))
    assert facts.languages == ["de", "en"]
    assert facts.relations == ["P37", "P36"]
    assert len(facts) == 7
    assert facts.facts_for("en", "P37") == [
        Fact("fr-37", "en", "P37", "France", "French"),
        Fact("br-37", "en", "P37", "Brazil", "Portuguese"),
    ]
    assert facts.templates[("de", "P36")] == "Die Hauptstadt von [X] ist [Y] ."
    # From TREx_multilingual_objects/en.json, else the gold objects (TyQ).
    assert facts.candidates[("en", "P37")] == ["French", "Portuguese", "Japanese"]
    assert facts.candidates[("en", "P36")] == ["Paris", "Tokyo"]
    assert facts.candidates[("de", "P37")] == ["Französisch"]
    assert facts.fill(facts.facts_for("de", "P36")[1]) == "Die Hauptstadt von Japan ist Tokio ."
    assert facts.fill(facts.facts_for("en", "P37")[0], "Japanese").endswith("is Japanese .")
    assert facts.description["source"] == "mlama"


def test_mlama_round_trip(tmp_path):
    first = FactSet.from_mlama(write_sample(tmp_path / "a"))
    out = first.to_mlama(tmp_path / "b")
    assert out == tmp_path / "b"
    assert (out / "en" / "P37.jsonl").is_file() and (out / OBJECTS_DIR / "de.json").is_file()
    row = json.loads((out / "de" / "P37.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(row) == {"sub_uri", "obj_uri", "sub_label", "obj_label", "lineid", "uuid"}
    second = FactSet.from_mlama(out)
    assert same(first, second)


def test_mlama_select_languages_and_relations(tmp_path):
    facts = FactSet.from_mlama(write_sample(tmp_path), languages=["en"], relations=["P36"])
    assert facts.languages == ["en"] and facts.relations == ["P36"]
    assert [f.uuid for f in facts.facts] == ["fr-36", "jp-36"]


def test_mlama_relation_without_template_is_skipped(tmp_path):
    root = write_sample(tmp_path)
    write_lines(root / "en" / "P19.jsonl", [{"sub_label": "A", "obj_label": "B", "uuid": "u"}])
    with pytest.warns(UserWarning, match="P19"):
        facts = FactSet.from_mlama(root, languages=["en"])
    assert "P19" not in facts.relations


def test_mlama_template_without_y(tmp_path):
    root = write_sample(tmp_path)
    write_lines(
        root / "en" / "templates.jsonl",
        [{"relation": "P37", "template": "[X] is [Y]."}, {"relation": "P36", "template": "[X]."}],
    )
    with pytest.raises(ValueError, match=r"templates\.jsonl:2.*lacks \[Y\]"):
        FactSet.from_mlama(root)


def test_mlama_malformed_line(tmp_path):
    root = write_sample(tmp_path)
    path = root / "de" / "P36.jsonl"
    path.write_text(path.read_text(encoding="utf-8") + "{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"P36\.jsonl:3: invalid JSON"):
        FactSet.from_mlama(root)


def test_mlama_missing_field(tmp_path):
    root = write_sample(tmp_path)
    write_lines(root / "de" / "P37.jsonl", [{"sub_label": "Japan", "uuid": "x"}])
    with pytest.raises(ValueError, match=r"P37\.jsonl:1: 'obj_label'"):
        FactSet.from_mlama(root)


def test_mlama_object_not_among_candidates(tmp_path):
    root = write_sample(tmp_path)
    en = {"P37": {"subjects": [], "objects": ["French"]}}
    (root / OBJECTS_DIR / "en.json").write_text(json.dumps(en), encoding="utf-8")
    with pytest.raises(ValueError, match=r"en\.json.*'Portuguese'.*'br-37'"):
        FactSet.from_mlama(root)


def test_mlama_unknown_language_and_relation(tmp_path):
    root = write_sample(tmp_path)
    with pytest.raises(ValueError, match=r"unknown language 'xx'; available: de, en"):
        FactSet.from_mlama(root, languages=["xx"])
    with pytest.raises(ValueError, match=r"unknown relation 'P1'; available: P37, P36"):
        FactSet.from_mlama(root, relations=["P1"])


def test_mlama_language_without_facts(tmp_path):
    root = write_sample(tmp_path)
    (root / "de" / "P37.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"language 'de' has no facts.*\['P37'\]"):
        FactSet.from_mlama(root, relations=["P37"])


def test_mlama_missing_directory_and_templates(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FactSet.from_mlama(tmp_path / "nowhere")
    root = write_sample(tmp_path / "data")
    (root / "de" / "templates.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"de.templates\.jsonl"):
        FactSet.from_mlama(root)


# --- construction ------------------------------------------------------------------


def small() -> FactSet:
    facts = [
        Fact("a", "en", "P36", "France", "Paris"),
        Fact("b", "en", "P36", "Japan", "Tokyo"),
        Fact("a", "fr", "P36", "France", "Paris"),
    ]
    templates = {
        ("en", "P36"): "The capital of [X] is [Y].",
        ("fr", "P36"): "La capitale de [X] est [Y].",
    }
    return FactSet(facts, templates)


def test_construction_checks():
    facts = small()
    assert facts.candidates == {("en", "P36"): ["Paris", "Tokyo"], ("fr", "P36"): ["Paris"]}
    with pytest.raises(ValueError, match=r"\('en', 'P36'\).*lacks \[X\]"):
        FactSet(facts.facts, facts.templates | {("en", "P36"): "capital: [Y]"})
    with pytest.raises(ValueError, match=r"'Tokyo' of fact 'b'"):
        FactSet(facts.facts, facts.templates, {("en", "P36"): ["Paris", "Berlin"]})
    with pytest.raises(ValueError, match=r"no template for \('fr', 'P36'\)"):
        FactSet(facts.facts, {("en", "P36"): "[X] [Y]"})
    with pytest.raises(ValueError, match="duplicate fact uuid 'a'"):
        FactSet([*facts.facts, facts.facts[0]], facts.templates)
    with pytest.raises(ValueError, match="at least one fact"):
        FactSet([], facts.templates)


def test_lookup_errors():
    facts = small()
    with pytest.raises(ValueError, match=r"unknown language 'de'; available: en, fr"):
        facts.facts_for("de")
    with pytest.raises(ValueError, match=r"unknown relation 'P37'; available: P36"):
        facts.subset(relations=["P37"])
    assert facts.subset(languages=["fr", "en"]).languages == ["fr", "en"]


# --- split -------------------------------------------------------------------------


def test_split_by_uuid():
    facts = FactSet.builtin(languages=["en", "ja", "ar"])
    dev, test = facts.split(0.3, seed=1)
    dev_ids, test_ids = {f.uuid for f in dev.facts}, {f.uuid for f in test.facts}
    assert not dev_ids & test_ids
    assert dev_ids | test_ids == {f.uuid for f in facts.facts}
    assert len(dev) + len(test) == len(facts)
    assert 0.25 < len(dev_ids) / len(dev_ids | test_ids) < 0.35
    for part in (dev, test):  # the same uuids in every language, every relation in both
        by_lang = {lang: {f.uuid for f in part.facts_for(lang)} for lang in part.languages}
        assert by_lang["en"] == by_lang["ja"] == by_lang["ar"]
        assert part.relations == facts.relations
        assert part.candidates == {k: facts.candidates[k] for k in part.candidates}
    again, _ = facts.split(0.3, seed=1)
    assert same(dev, again)
    other, _ = facts.split(0.3, seed=2)
    assert {f.uuid for f in other.facts} != dev_ids
    # A subset splits the same way as the whole set.
    sub_dev, _ = facts.subset(languages=["ja"], relations=["P36"]).split(0.3, seed=1)
    assert {f.uuid for f in sub_dev.facts} == {f.uuid for f in dev.facts_for("ja", "P36")}
    with pytest.raises(ValueError, match="dev_fraction"):
        facts.split(1.0)


# --- built-in ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def builtin() -> FactSet:
    return FactSet.builtin()


def lookup(facts: FactSet, lang: str, relation: str, country: str) -> str:
    (fact,) = [f for f in facts.facts_for(lang, relation) if f.uuid == f"{relation}-{country}"]
    return fact.object


def test_builtin_shape(builtin):
    assert builtin.languages == list(BUILTIN_LANGUAGES)
    assert len(builtin.languages) >= 12
    assert sorted(builtin.relations) == sorted(RELATIONS) and len(RELATIONS) >= 4
    assert builtin.description["source"] == "builtin"
    counts = Counter((f.lang, f.relation) for f in builtin.facts)
    for relation in builtin.relations:
        assert all(counts[(lang, relation)] >= 40 for lang in builtin.languages)


def test_builtin_uuids_aligned(builtin):
    uuids = {lang: {f.uuid for f in builtin.facts_for(lang)} for lang in builtin.languages}
    assert all(ids == uuids["en"] for ids in uuids.values())
    for fact in builtin.facts:
        assert fact.uuid.startswith(fact.relation + "-")


def test_builtin_known_facts(builtin):
    assert lookup(builtin, "en", "P37", "BR") == "Portuguese"
    assert lookup(builtin, "en", "P36", "FR") == "Paris"
    assert lookup(builtin, "en", "P30", "JP") == "Asia"
    assert lookup(builtin, "en", "P38", "JP") == "Japanese Yen"
    assert lookup(builtin, "de", "P38", "JP") == "Japanischer Yen"
    assert lookup(builtin, "de", "P36", "AT") == "Wien"
    assert lookup(builtin, "fr", "P36", "EG") == "Le Caire"
    assert lookup(builtin, "zh", "P37", "BR") == "葡萄牙语"
    assert lookup(builtin, "ja", "P38", "FR") == "ユーロ"
    assert lookup(builtin, "ar", "P37", "PT") == "البرتغالية"
    assert lookup(builtin, "ru", "P30", "AR") == "Южная Америка"
    fact = builtin.facts_for("en", "P37")[0]
    assert builtin.fill(fact) == "The official language of France is French."
    assert builtin.fill(builtin.facts_for("zh", "P36")[0]) == "法国的首都是巴黎。"


def test_builtin_labels_and_templates(builtin):
    for (lang, relation), template in builtin.templates.items():
        assert template.count("[X]") == 1 and template.count("[Y]") == 1, (lang, relation)
        if lang in ("zh", "ja"):
            assert " " not in template
    for fact in builtin.facts:
        for label in (fact.subject, fact.object):
            assert label == label.strip() and label and "\u00ad" not in label
            assert "(" not in label
    for key, values in builtin.candidates.items():
        assert len(values) == len(set(values)), key
        assert len(values) >= 6, key


def test_builtin_subset_and_errors(builtin):
    facts = FactSet.builtin(["ja", "en"], ["P36"])
    assert facts.languages == ["ja", "en"] and facts.relations == ["P36"]
    assert facts.facts_for("en") == builtin.facts_for("en", "P36")
    with pytest.raises(ValueError, match=r"unknown language 'xx'; available: en, de"):
        FactSet.builtin(["xx"])
    with pytest.raises(ValueError, match=r"unknown relation 'P17'; available: P30"):
        FactSet.builtin(relations=["P17"])


def test_builtin_round_trip(builtin, tmp_path):
    facts = FactSet.builtin(["en", "zh", "ar"])
    back = FactSet.from_mlama(facts.to_mlama(tmp_path / "mlama"), languages=facts.languages)
    assert same(facts, back)


def test_builtin_counts(builtin):
    counts = Counter((f.lang, f.relation) for f in builtin.facts)
    expected = {"P30": 97, "P36": 76, "P37": 81, "P38": 99}
    assert counts == {(lang, r): n for lang in BUILTIN_LANGUAGES for r, n in expected.items()}


def test_builtin_loads_without_babel(monkeypatch):
    monkeypatch.setitem(sys.modules, "babel", None)  # import babel now raises ImportError
    facts_module._builtin_data.cache_clear()
    facts = FactSet.builtin(["en", "zh"], ["P37"])
    assert lookup(facts, "zh", "P37", "BR") == "葡萄牙语"
    assert len(facts.facts_for("en")) == len(facts.facts_for("zh")) == 81


def recorded_provenance() -> dict[str, str]:
    return json.loads((BUILTIN_DIR / "provenance.json").read_text(encoding="utf-8"))


def test_builtin_provenance(builtin):
    recorded = recorded_provenance()
    # The README's numbers were measured on the data of babel 2.18.0 (CLDR 47).
    assert (recorded["babel_version"], recorded["cldr_version"]) == ("2.18.0", "47")
    datetime.date.fromisoformat(recorded["generated"])
    assert (ROOT / recorded["script"]).is_file()
    for key, value in recorded.items():
        assert builtin.description[key] == value
    assert builtin.head(2).description["babel_version"] == "2.18.0"


def test_builtin_data_is_what_the_script_builds(tmp_path):
    babel = pytest.importorskip("babel")
    recorded = recorded_provenance()["babel_version"]
    if babel.__version__ != recorded:
        pytest.skip(f"babel {babel.__version__} is installed; the data was built with {recorded}")
    spec = importlib.util.spec_from_file_location(
        "build_builtin_facts", ROOT / recorded_provenance()["script"]
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    new = script.write(tmp_path / "facts", "2000-01-01")
    assert script.differences(new, BUILTIN_DIR) == []
