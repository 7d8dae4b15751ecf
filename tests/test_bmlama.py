"""The BMLAMA loader (``FactSet.from_bmlama``, ``--facts bmlama:DIR``) on small files in its
layout, written here (issue #20, item 3)."""

from __future__ import annotations

import json

import pytest

from mlneurons.data.facts import FactSet

HEADER = "Prompt\tAns\tCandidate Ans\tSubject"

EN = [
    "Ada Lovelace was born in <mask>.\tLondon\tParis, Rome, London\tAda Lovelace",
    "Carl Orff was born in <mask>.\tMunich\tVienna, Munich\tCarl Orff",
    "Ada Lovelace died in <mask>.\tLondon\tRome, London\tAda Lovelace",
    "Carl Orff died in <mask>.\tMunich\tParis, Munich\tCarl Orff",
    "Max Ernst died in <mask>.\tParis\tRome, Paris\tMax Ernst",
    # CSV quoting as in BMLAMA's Hebrew files: quotes doubled inside a quoted field
    '"Bob ""the Bear"" died in <mask>."\tRome\t"Paris, ""Rome"" Hall, Rome"\t"Bob ""the Bear"""',
]
DE = [
    "Ada Lovelace wurde in <mask> geboren.\tLondon\tParis, Rom, London\tAda Lovelace",
    "Carl Orff wurde in <mask> geboren.\tMünchen\tWien, München\tCarl Orff",
    "Ada Lovelace starb in <mask>.\tLondon\tRom, London\tAda Lovelace",
    "Carl Orff starb in <mask>.\tMünchen\tParis, München\tCarl Orff",
    "Max Ernst ist in <mask> gestorben.\tParis\tRom, Paris\tMax Ernst",  # worded apart
    '"Bob ""der Bär"" starb in <mask>."\tRom\tParis, Rom\t"Bob ""der Bär"""',
]
ZH = [
    "阿达出生于<mask>。\t伦敦\t巴黎, 罗马, 伦敦\t阿达",
    "奥尔夫出生于<mask>。\t慕尼黑\t维也纳, 慕尼黑\t奥尔夫",
    "阿达逝世于<mask>。\t伦敦\t罗马, 伦敦\t阿达",
    "卡尔·奥尔夫逝世于<mask>。\t慕尼黑\t巴黎, 慕尼黑\t奥尔夫先生",  # subject not in the prompt
    "恩斯特逝世于<mask>。\t巴黎\t罗马, 巴黎\t恩斯特",
    "熊鲍勃逝世于<mask>。\t罗马\t巴黎, 罗马\t熊鲍勃",
]


def write(folder, rows_by_lang, header=HEADER):
    folder.mkdir(parents=True, exist_ok=True)
    for lang, rows in rows_by_lang.items():
        head = "Prompt\tAns\tCandidate\tAns\tSubject" if lang == "zh" else header  # as BMLAMA-17
        text = "\n".join([head, *rows]) + "\n\n"  # a blank line at the end is skipped
        (folder / f"{lang}.tsv").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture()
def bmlama(tmp_path):
    return write(tmp_path / "BMLAMA17", {"en": EN, "de": DE, "zh": ZH})


def test_bmlama_facts_templates_and_relations(bmlama):
    with pytest.warns(UserWarning, match=r"1 rows whose subject .* left out: zh:4"):
        facts = FactSet.from_bmlama(bmlama)
    assert facts.languages == ["de", "en", "zh"]
    # born (rows 1-2); died (3, 4, 6); row 5 is worded apart in German: a relation of its own
    assert facts.relations == ["R1", "R2", "R3"]
    assert {(f.uuid, f.relation) for f in facts.facts if f.lang == "en"} == {
        ("1", "R1"), ("2", "R1"), ("3", "R2"), ("4", "R2"), ("5", "R3"), ("6", "R2"),
    }  # fmt: skip
    assert facts.description["relation_labels"] == {
        "R1": "[X] was born in [Y].",
        "R2": "[X] died in [Y].",
        "R3": "[X] died in [Y].",
    }
    assert facts.templates[("de", "R2")] == "[X] starb in [Y]."
    assert facts.templates[("de", "R3")] == "[X] ist in [Y] gestorben."
    assert facts.templates[("zh", "R2")] == "[X]逝世于[Y]。"
    # zh row 4 has no template; it joins nothing in zh, and the other languages keep it
    assert facts.description["skipped"] == ["zh:4"]
    assert [f.uuid for f in facts.facts_for("zh")] == ["1", "2", "3", "5", "6"]
    # every prompt comes back from its template, the CSV-quoted ones included
    bob = next(f for f in facts.facts if f.lang == "en" and f.uuid == "6")
    assert (bob.subject, bob.object) == ('Bob "the Bear"', "Rome")
    assert facts.fill(bob, "<mask>") == 'Bob "the Bear" died in <mask>.'
    for lang, rows in (("en", EN), ("de", DE)):
        for fact in facts.facts_for(lang):
            prompt = rows[int(fact.uuid) - 1].split("\t")[0].strip('"').replace('""', '"')
            assert facts.fill(fact, "<mask>") == prompt
    # candidates per fact, in the file's order (the gold last), split on ", "
    assert facts.candidates_for(bob) == ["Paris", '"Rome" Hall', "Rome"]
    ada = facts.facts_for("en", "R1")[0]
    assert facts.candidates_for(ada) == ["Paris", "Rome", "London"]
    assert facts.candidates[("en", "R1")] == ["Paris", "Rome", "London", "Vienna", "Munich"]
    assert facts.description["source"] == "bmlama"


def test_bmlama_subsets_keep_the_relations(bmlama):
    with pytest.warns(UserWarning):
        whole = FactSet.from_bmlama(bmlama)
    en = FactSet.from_bmlama(bmlama, languages=["EN"])  # relations from every file
    assert [(f.uuid, f.relation) for f in en.facts] == [
        (f.uuid, f.relation) for f in whole.facts_for("en")
    ]
    died = FactSet.from_bmlama(bmlama, languages=["en", "de"], relations=["R2"])
    assert {f.uuid for f in died.facts} == {"3", "4", "6"}
    first = died.head(1)
    assert [(f.lang, f.uuid) for f in first.facts] == [("en", "3"), ("de", "3")]
    assert first.candidates_for(first.facts[0]) == ["Rome", "London"]
    with pytest.raises(ValueError, match="unknown relation 'P36'; available: R1, R2, R3"):
        FactSet.from_bmlama(bmlama, languages=["en"], relations=["P36"])
    with pytest.raises(ValueError, match="cannot hold"):
        en.to_mlama(bmlama / "mlama")


@pytest.mark.parametrize(
    "row, message",
    [
        ("Tom was born in <mask>.\tParis\tRome, Paris", r"en.tsv:3: expected 4 tab-separated"),
        ("Tom was born in Paris.\tParis\tRome, Paris\tTom", r"en.tsv:3: .* one <mask>, has 0"),
        ("Tom <mask> born in <mask>.\tParis\tRome, Paris\tTom", r"en.tsv:3: .* one <mask>, has 2"),
        ("Tom was born in <mask>.\tParis\tRome, Oslo\tTom", r"en.tsv:3: the gold answer 'Paris' "),
        ("Tom was born in <mask>.\tOslo, Paris\tRome, Paris\tTom", r"en.tsv:3: 2 gold answers"),
        ("Tom was born in <mask>.\tParis\tRome, Paris\t ", r"en.tsv:3: the Subject field is empty"),
    ],
)
def test_bmlama_malformed_rows(tmp_path, row, message):
    folder = write(tmp_path / "b", {"en": [EN[0], row]})
    with pytest.raises(ValueError, match=message) as error:
        FactSet.from_bmlama(folder)
    assert "\n" not in str(error.value)


def test_bmlama_malformed_layouts(tmp_path, bmlama):
    write(tmp_path / "rows", {"en": EN, "de": DE[:5]})
    with pytest.raises(ValueError, match=r"de.tsv has 5 rows, .*en.tsv 6: BMLAMA aligns"):
        FactSet.from_bmlama(tmp_path / "rows")
    write(tmp_path / "head", {"en": EN}, header="Prompt\tAnswer\tCandidates\tSubject")
    with pytest.raises(ValueError, match=r"en.tsv:1: expected the header 'Prompt Ans Candidate"):
        FactSet.from_bmlama(tmp_path / "head")
    with pytest.raises(
        ValueError, match=r"no BMLAMA files .*\(it holds BMLAMA17, head, rows: give one"
    ):
        FactSet.from_bmlama(bmlama.parent)
    with pytest.raises(FileNotFoundError, match="BMLAMA directory not found"):
        FactSet.from_bmlama(tmp_path / "missing")


PLANTED_EN = [  # the planted model continues in the language of the last token
    "fr1 <mask>\tfr5\tzh5, fr5\tfr1",  # right
    "zh1 <mask>\tja5\tzh5, ja5\tzh1",  # wrong: a Chinese object after a Chinese subject
    "en3 ja2 <mask>\tja5\tfr5, ja5\ten3",  # right
    "en3 <mask>\tja5\tfr5, ja5\ten3",  # ja5 and fr5 tie exactly: wrong, whatever the order
]


def test_probe_bmlama_cli(planted_dir, tmp_path, capsys):
    from mlneurons.interfaces.cli import main

    folder = write(tmp_path / "b", {"en": PLANTED_EN})
    common = ["--model", str(planted_dir), "--facts", f"bmlama:{folder}"]
    assert main(["probe", *common, "--scoring", "mean", "--out", str(tmp_path / "p")]) == 0
    saved = json.loads((tmp_path / "p" / "probe.json").read_text())
    rows = {p["uuid"]: (p["predicted"], p["correct"], p["tied"]) for p in saved["predictions"]}
    assert rows == {
        "1": ("fr5", True, 1),
        "2": ("zh5", False, 1),
        "3": ("ja5", True, 1),
        "4": ("fr5", False, 2),
    }
    assert saved["settings"]["scoring"] == "mean"
    assert saved["settings"]["facts"]["source"] == "bmlama"
    assert "with a tied top score (a tie with the gold is wrong): en 1" in capsys.readouterr().out

    (folder / "en.tsv").write_text(HEADER + "\nfr1 fr5\tfr5\tzh5, fr5\tfr1\n", encoding="utf-8")
    assert main(["probe", *common, "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "en.tsv:2: the prompt needs exactly one <mask>, has 0" in err[0]
