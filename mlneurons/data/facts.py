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
* :meth:`FactSet.builtin` reads a small fact set frozen as package data in the mLAMA
  layout (``mlneurons/data/builtin_facts``): official language (P37), currency (P38),
  continent (P30) and capital (P36) of a curated list of countries, with hand-written
  templates in 17 languages, labelled with CLDR's localised names. The data was built
  once by ``scripts/build_builtin_facts.py`` from the CLDR data shipped by ``babel``;
  its ``provenance.json`` (babel and CLDR versions, date, script) goes into the set's
  description. Loading does not import babel, so the facts do not change with it.
* :meth:`FactSet.from_bmlama` reads BMLAMA (Qi et al., EMNLP 2023): a directory of
  ``{lang}.tsv`` files (``BMLAMA17/`` or ``BMLAMA53/`` of the authors' repository), each a
  tab-separated table with the header ``Prompt, Ans, Candidate Ans, Subject``. Line i is
  the same query in every language; each query brings its own candidates
  (:attr:`FactSet.fact_candidates`), and the relations, which the files do not name, are
  recovered from the template text (see :meth:`FactSet.from_bmlama`).
"""

from __future__ import annotations

import csv
import functools
import json
import random
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OBJECTS_DIR = "TREx_multilingual_objects"

CandidateSource = Literal["files", "gold"]
"""Where an mLAMA directory's candidates come from: the ``TREx_multilingual_objects``
files, or each relation's gold objects where a file is missing (mLAMA TyQ, easier)."""
"""Folder of the candidate-object files at the root of an mLAMA directory."""

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin_facts"
"""The built-in fact set in the mLAMA layout, with its ``provenance.json``."""

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

    @property
    def label(self) -> str:
        """``"lang:uuid"``: this fact's label in collected statistics."""
        return f"{self.lang}:{self.uuid}"


@dataclass
class FactSet:
    """Facts in several languages with their templates and candidate objects.

    Build one with :meth:`builtin`, :meth:`from_mlama` or :meth:`from_bmlama`, or
    directly. Candidates missing for a (language, relation) that has facts default to its
    gold objects in order of first appearance (mLAMA's TyQ).

    Attributes:
        facts: the facts, in order.
        templates: (lang, relation) -> template with ``[X]`` (subject) and ``[Y]`` (object).
        candidates: (lang, relation) -> candidate objects, the gold objects among them.
        description: where the facts came from, recorded in saved results.
        fact_candidates: (uuid, lang) -> the candidates of that one fact, which replace
            its relation's (BMLAMA gives every query its own); :meth:`candidates_for`
            reads the right list.

    Raises:
        ValueError: no facts, an empty label, a duplicate (uuid, lang), a fact without a
            template, a template without ``[X]`` or ``[Y]``, per-fact candidates of a fact
            not in the set, or a gold object that is not among its candidates.
    """

    facts: list[Fact]
    templates: dict[tuple[str, str], str]
    candidates: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    description: dict[str, Any] = field(default_factory=dict)
    fact_candidates: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.facts = list(self.facts)
        self.templates = dict(self.templates)
        self.candidates = {key: _unique(values) for key, values in self.candidates.items()}
        self.description = dict(self.description)
        self.fact_candidates = {k: _unique(v) for k, v in self.fact_candidates.items()}
        if not self.facts:
            raise ValueError("a FactSet needs at least one fact")
        for key, template in self.templates.items():
            _check_template(template, f"template for {key}")
        for key, values in [*self.candidates.items(), *self.fact_candidates.items()]:
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
        unknown = set(self.fact_candidates) - seen
        if unknown:
            raise ValueError(f"per-fact candidates for facts not in the set: {sorted(unknown)[:3]}")
        allowed = {key: set(values) for key, values in self.candidates.items()}
        for fact in self.facts:
            own = self.fact_candidates.get((fact.uuid, fact.lang))
            pool = set(own) if own is not None else allowed[(fact.lang, fact.relation)]
            if fact.object not in pool:
                raise ValueError(
                    f"gold object {fact.object!r} of fact {fact.uuid!r} ({fact.lang}, "
                    f"{fact.relation}, subject {fact.subject!r}) is not among its "
                    f"{len(pool)} candidates"
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

    def candidates_for(self, fact: Fact) -> list[str]:
        """The candidates ranked for ``fact``: its own (BMLAMA), else its relation's."""
        own = self.fact_candidates.get((fact.uuid, fact.lang))
        return own if own is not None else self.candidates[(fact.lang, fact.relation)]

    def fill(self, fact: Fact, obj: str | None = None) -> str:
        """Return the fact's template with ``[X]`` -> subject and ``[Y]`` -> ``obj``.

        Args:
            fact: the fact; its (lang, relation) picks the template.
            obj: the object to insert; the gold object when ``None``.
        """
        key = (fact.lang, fact.relation)
        if key not in self.templates:
            raise ValueError(f"no template for {key}; templates exist for {sorted(self.templates)}")
        return self.fill_spans(fact, obj)[0]

    def fill_spans(self, fact: Fact, obj: str | None = None) -> tuple[str, list[tuple[int, int]]]:
        """:meth:`fill` with the ``(start, end)`` character spans of the object in the text
        (one per ``[Y]``), which tell the object's tokens apart from the template's."""
        key = (fact.lang, fact.relation)
        if key not in self.templates:
            raise ValueError(f"no template for {key}; templates exist for {sorted(self.templates)}")
        values = {"[X]": fact.subject, "[Y]": fact.object if obj is None else obj}
        template = self.templates[key]
        pieces: list[str] = []
        spans: list[tuple[int, int]] = []
        length = end = 0
        for match in _SLOT.finditer(template):
            pieces.append(template[end : match.start()])
            length += match.start() - end
            value = values[match.group(0)]
            if match.group(0) == "[Y]":
                spans.append((length, length + len(value)))
            pieces.append(value)
            length += len(value)
            end = match.end()
        pieces.append(template[end:])
        return "".join(pieces), spans

    def head(self, per_relation: int) -> FactSet:
        """The first ``per_relation`` uuids (sorted) of each relation, in every language."""
        if per_relation < 1:
            raise ValueError(f"per_relation must be at least 1, got {per_relation}")
        keep = set()
        for relation in self.relations:
            keep.update(
                sorted({f.uuid for f in self.facts if f.relation == relation})[:per_relation]
            )
        facts = [f for f in self.facts if f.uuid in keep]
        kept = {(f.uuid, f.lang) for f in facts}
        return FactSet(
            facts,
            self.templates,
            self.candidates,
            {**self.description, "facts_per_relation": per_relation},
            {k: v for k, v in self.fact_candidates.items() if k in kept},
        )

    def shard(self, rank: int, size: int) -> FactSet:
        """Every ``size``-th fact from the ``rank``-th (data-parallel probing), with the full
        candidate lists of their relations."""
        if not 0 <= rank < size:
            raise ValueError(f"rank {rank} is not in 0..{size - 1}")
        return self._restricted(self.facts[rank::size], dict(self.description))

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
        """Return the built-in fact set: CLDR labels frozen as package data.

        The description records where the data came from (``babel_version``,
        ``cldr_version``, ``generated``, ``script``), from its ``provenance.json``.

        Args:
            languages: ISO 639-1 codes among :data:`BUILTIN_LANGUAGES`; all when ``None``.
            relations: relation ids among :data:`RELATIONS`; all when ``None``.

        Raises:
            ValueError: an unknown language or relation.
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
        *,
        languages: Sequence[str] | None = None,
        relations: Sequence[str] | None = None,
    ) -> FactSet:
        """Read facts in the mLAMA 1.1 layout.

        Args:
            directory: the folder holding ``{lang}/`` folders (e.g. ``mlama1.1``) and,
                optionally, ``TREx_multilingual_objects/``.
            languages: language folders to read; all (sorted) when ``None``.
            relations: relations to read; all that have a template when ``None``.

        A (language, relation) without a candidate file ranks its gold objects only:
        that warns, and ``description["gold_candidates"]`` lists them (``"en/P36"``).

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
        gold_only: list[str] = []  # (lang/relation) without a candidate file
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
                else:
                    gold_only.append(f"{lang}/{relation}")
        if gold_only:
            warnings.warn(
                f"{root}: no candidate objects ({OBJECTS_DIR}/{{lang}}.json) for "
                f"{', '.join(gold_only)}; they are ranked among their gold objects only "
                "(mLAMA TyQ), an easier task than the candidate files' typed objects",
                stacklevel=2,
            )
        description = {
            "source": "mlama",
            "directory": str(root),
            "languages": list(languages),
            "relations": list(dict.fromkeys(f.relation for f in facts)),
            "candidates": f"{OBJECTS_DIR}/{{lang}}.json where present, else gold objects",
            "gold_candidates": gold_only,
        }
        return cls(facts, templates, candidates, description)

    @classmethod
    def from_bmlama(
        cls,
        directory: str | Path,
        *,
        languages: Sequence[str] | None = None,
        relations: Sequence[str] | None = None,
    ) -> FactSet:
        """Read BMLAMA (Qi et al., EMNLP 2023): a directory of ``{lang}.tsv`` files.

        The layout of the authors' ``BMLAMA17/`` and ``BMLAMA53/`` folders: UTF-8,
        tab-separated and CSV-quoted (a field that holds ``"`` is quoted, its quotes
        doubled, as in the Hebrew files), with the header ``Prompt, Ans, Candidate Ans,
        Subject`` (spacing inside it does not matter: BMLAMA-17's ``zh.tsv`` splits
        "Candidate Ans" with a tab). Blank lines are skipped, as the authors' reader does.
        Per row: ``Prompt`` has exactly one ``<mask>`` where the object goes; ``Ans`` is the
        gold object (a ", "-separated list in the format; one gold per query is supported);
        ``Candidate Ans`` the query's own candidates, split on ", ", the gold among them
        (BMLAMA lists it last: the tie rule of probing never lets that favour it);
        ``Subject`` the subject as it is written in the prompt.

        * Facts: row i of every file is the same query, so its uuid is the row number
          (1-based, the header not counted, zero-padded to the width of the row count) and
          :meth:`head` keeps each relation's first rows. Candidates are per fact
          (:attr:`fact_candidates`); each (language, relation) also gets the union of its
          facts' candidates, in order of first appearance, for code that reads those.
        * Templates: the prompt with the first occurrence of the subject made ``[X]`` and
          ``<mask>`` made ``[Y]``, so :meth:`fill` gives back the prompt exactly.
        * Relations: the files have no relation column. Two rows share a relation when
          their templates are equal in every file of the directory (also the languages
          not read), so each (language, relation) has one template and the relations do
          not change with ``languages``; a row that has no template in some language
          joins the first relation that agrees with it in all the others. Relations are
          named ``R1``, ``R2``, ... in order of their first row;
          ``description["relation_labels"]`` gives each its English template (another
          file's where there is no ``en.tsv``). BMLAMA-17 gives 39 relations this way (its
          English prompts have 38 templates; one row is worded apart in some language),
          BMLAMA-53 gives 27, as many as its English templates.
        * A row whose subject does not occur in its prompt (an inflected subject:
          BMLAMA-53's ``de.tsv`` has one) has no template: it is left out of that language
          with a warning and listed in ``description["skipped"]`` as ``"lang:uuid"``.

        Args:
            directory: the folder of ``{lang}.tsv`` files (e.g. ``BMLAMA17``).
            languages: file stems to read; all (sorted) when ``None``.
            relations: recovered relation ids (``R1``, ...) to read; all when ``None``.

        Raises:
            FileNotFoundError: a missing directory.
            ValueError: no ``.tsv`` file, a wrong header, a row without four fields or
                with an empty one, a prompt without or with several ``<mask>``, several
                gold answers, a gold answer not among the candidates (each named with
                its file and line), files with different numbers of rows, an unknown
                language or relation, or a language without facts.
        """
        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"BMLAMA directory not found: {root}")
        files = {p.stem: p for p in sorted(root.glob("*.tsv"))}
        if not files:
            inside = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.tsv")))
            hint = f" (it holds {', '.join(inside)}: give one of them)" if inside else ""
            raise ValueError(f"no BMLAMA files ({{lang}}.tsv) in {root}{hint}")
        languages = _choose("language", languages, list(files))
        rows = {lang: _read_bmlama(path) for lang, path in files.items()}
        counts = {lang: len(r) for lang, r in rows.items()}
        if len(set(counts.values())) > 1:
            ordered = sorted(counts.items(), key=lambda item: item[1])
            (a, n_a), (b, n_b) = ordered[0], ordered[-1]
            raise ValueError(
                f"{files[a]} has {n_a} rows, {files[b]} {n_b}: BMLAMA aligns its languages "
                "by row, so every file needs the same rows"
            )
        keys = list(zip(*([row.template for row in r] for r in rows.values())))
        relation_of = [f"R{k + 1}" for k in _template_groups(keys)]
        label_at = list(files).index("en") if "en" in files else 0
        labels = dict.fromkeys(relation_of, "")  # the label language's template, in order
        for relation, key in zip(relation_of, keys):
            labels[relation] = labels[relation] or key[label_at] or ""
        for relation, key in zip(relation_of, keys):  # no such template: another language's
            labels[relation] = labels[relation] or next((t for t in key if t), "")
        chosen = set(_choose("relation", relations, list(labels)))
        width = len(str(len(keys)))
        facts: list[Fact] = []
        templates: dict[tuple[str, str], str] = {}
        candidates: dict[tuple[str, str], list[str]] = {}
        own: dict[tuple[str, str], list[str]] = {}
        skipped: list[str] = []
        for lang in languages:
            count = len(facts)
            for i, row in enumerate(rows[lang]):
                relation, uuid = relation_of[i], f"{i + 1:0{width}d}"
                if relation not in chosen:
                    continue
                if row.template is None:
                    skipped.append(f"{lang}:{uuid}")
                    continue
                facts.append(Fact(uuid, lang, relation, row.subject, row.answer))
                templates[(lang, relation)] = row.template
                own[(uuid, lang)] = row.candidates
                candidates.setdefault((lang, relation), []).extend(row.candidates)
            if len(facts) == count:
                raise ValueError(
                    f"language {lang!r} has no facts in {files[lang]}"
                    + (f" for relations {list(relations)}" if relations is not None else "")
                )
        if skipped:
            warnings.warn(
                f"{root}: {len(skipped)} rows whose subject is not written as in the prompt "
                f"have no template and are left out: {', '.join(skipped[:6])}"
                + (" ..." if len(skipped) > 6 else ""),
                stacklevel=2,
            )
        description = {
            "source": "bmlama",
            "directory": str(root),
            "languages": list(languages),
            "relations": list(dict.fromkeys(f.relation for f in facts)),
            "relation_labels": labels,
            "relation_rule": "rows whose templates (prompt, subject -> [X]) agree in every "
            f"file of the directory ({len(files)} languages)",
            "candidates": "per query: the Candidate Ans column",
            "skipped": skipped,
        }
        return cls(facts, templates, candidates, description, own)

    def to_mlama(self, directory: str | Path) -> Path:
        """Write the set in the mLAMA 1.1 layout and return the directory.

        Writes ``{lang}/templates.jsonl``, ``{lang}/{relation}.jsonl`` and
        ``TREx_multilingual_objects/{lang}.json``; ``sub_uri`` and ``obj_uri`` are
        empty, as a :class:`Fact` keeps no URIs. Existing files of those names are
        replaced.

        Raises:
            ValueError: the set gives facts their own candidates (BMLAMA), which the
                mLAMA layout cannot hold.
        """
        if self.fact_candidates:
            raise ValueError(
                "this set gives facts their own candidates (BMLAMA), which the mLAMA layout "
                "cannot hold: its candidates are per (language, relation)"
            )
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
        kept = {(f.uuid, f.lang) for f in facts}
        return FactSet(
            facts,
            {k: v for k, v in self.templates.items() if k in keys},
            {k: v for k, v in self.candidates.items() if k in keys},
            description,
            {k: v for k, v in self.fact_candidates.items() if k in kept},
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
    if kind == "language":  # the one normaliser of mlneurons: " FR " and "fra" are "fr"
        from mlneurons.data.builtin_text import normalize_language

        normal = []
        for value in asked:
            try:
                normal.append(normalize_language(value, available))
            except ValueError:
                normal.append(value)  # _check_choice names it with the valid ones
        asked = normal
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


def _template_groups(keys: Sequence[tuple[str | None, ...]]) -> list[int]:
    """Group rows by their templates in every language, numbered in order of first row.

    Rows whose templates are all known group by equality. A row without a template in
    some language (``None``) joins the first group that agrees with it in all the others,
    else it starts a group of its own.
    """
    group: dict[tuple[str | None, ...], int] = {}
    of: list[int | None] = [
        group.setdefault(k, len(group)) if None not in k else None for k in keys
    ]
    complete = list(group)
    for i, key in enumerate(keys):
        if of[i] is None:
            agreeing = (g for g in complete if all(a is None or a == b for a, b in zip(key, g)))
            match = next(agreeing, None)
            of[i] = group[match] if match is not None else group.setdefault(key, len(group))
    order: dict[int | None, int] = {}
    return [order.setdefault(g, len(order)) for g in of]


@dataclass(frozen=True)
class _BmlamaRow:
    """One row of a BMLAMA file; ``template`` is None where the subject is not in the prompt."""

    subject: str
    answer: str
    candidates: list[str]
    template: str | None


BMLAMA_HEADER = ("Prompt", "Ans", "Candidate Ans", "Subject")
"""The columns of a BMLAMA file, in order."""


def _read_bmlama(path: Path) -> list[_BmlamaRow]:
    """Read one BMLAMA ``{lang}.tsv``, checked row by row (errors name the file and line)."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter="\t")
            lines = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    lines = [(n, row) for n, row in lines if any(cell.strip() for cell in row)]
    expected = " ".join(BMLAMA_HEADER)
    if not lines or " ".join(" ".join(lines[0][1]).split()) != expected:
        found = "\t".join(lines[0][1]) if lines else "nothing"
        raise ValueError(
            f"{path}:1: expected the header {expected!r} (tab-separated), got {found!r}"
        )
    rows = []
    for number, row in lines[1:]:
        where = f"{path}:{number}"
        if len(row) != len(BMLAMA_HEADER):
            raise ValueError(
                f"{where}: expected 4 tab-separated fields ({', '.join(BMLAMA_HEADER)}), "
                f"got {len(row)}: {chr(9).join(row)[:80]!r}"
            )
        prompt, answer, listed, subject = row
        if not all(map(str.strip, row)):
            empty = next(name for name, value in zip(BMLAMA_HEADER, row) if not value.strip())
            raise ValueError(f"{where}: the {empty} field is empty")
        masks = prompt.count("<mask>")
        if masks != 1:
            raise ValueError(
                f"{where}: the prompt needs exactly one <mask>, has {masks}: {prompt!r}"
            )
        if "[X]" in prompt or "[Y]" in prompt:
            raise ValueError(f"{where}: the prompt contains a template slot [X] or [Y]: {prompt!r}")
        if ", " in answer:
            raise ValueError(
                f"{where}: {len(answer.split(', '))} gold answers ({answer!r}); "
                "one gold answer per query is supported"
            )
        candidates = _unique(listed.split(", "))
        if answer not in candidates:
            raise ValueError(
                f"{where}: the gold answer {answer!r} is not among the {len(candidates)} candidates"
            )
        if not all(map(str.strip, candidates)):
            raise ValueError(f"{where}: the Candidate Ans list has an empty label: {listed!r}")
        template = None
        if subject in prompt:
            template = prompt.replace(subject, "[X]", 1).replace("<mask>", "[Y]")
        rows.append(_BmlamaRow(subject, answer, candidates, template))
    return rows


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


@functools.cache
def _builtin_data() -> tuple[
    tuple[Fact, ...],
    dict[tuple[str, str], str],
    dict[tuple[str, str], list[str]],
    dict[str, Any],
]:
    """Read the frozen built-in set once: facts, templates, candidates, description."""
    full = FactSet.from_mlama(BUILTIN_DIR, languages=BUILTIN_LANGUAGES)
    provenance = json.loads((BUILTIN_DIR / "provenance.json").read_text(encoding="utf-8"))
    description = {"source": "builtin", **provenance, "relation_labels": dict(RELATIONS)}
    return tuple(full.facts), full.templates, full.candidates, description
