"""``mlneurons probe``: factual probing across languages (P@1 and Jaccard)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlneurons.config import Config, option
from mlneurons.data.facts import CandidateSource
from mlneurons.errors import UserError
from mlneurons.interfaces.commands.inputs import load_facts, uncertainty, user_input
from mlneurons.interfaces.spec import Command, Context, Step, Table
from mlneurons.methods.probing import ProbingMethod, Scoring
from mlneurons.methods.probing.result import p_value_text, pair_test
from mlneurons.models.bridge import TransformerBridge

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.data.facts import FactSet
    from mlneurons.evaluation.uncertainty import Estimate
    from mlneurons.methods.probing.result import ProbeResult


FACT_SOURCES = ("mlama:", "bmlama:")
"""The prefixes of ``--facts`` that name a directory."""


@dataclass(frozen=True)
class FactsConfig(Config):
    """The options of the commands that probe facts."""

    facts: str = option(
        "builtin",
        "'builtin' (default), mlama:DIR (mLAMA 1.1 layout) or bmlama:DIR (a BMLAMA folder of "
        "{lang}.tsv files, e.g. BMLAMA17; relations recovered from the templates)",
    )
    candidates: CandidateSource = option(
        "files",
        "mlama:DIR only: 'files' (default) needs TREx_multilingual_objects/{lang}.json for "
        "every language and relation; 'gold' ranks the gold objects of a relation where the "
        "file is missing (mLAMA TyQ, an easier task)",
    )
    languages: Sequence[str] | None = option(
        None, "comma-separated languages (default: all of the fact set)"
    )
    relations: Sequence[str] | None = option(
        None, "comma-separated relations, e.g. P36,P37 (BMLAMA: R1,R2, ...; default: all)"
    )
    max_facts_per_relation: int | None = option(
        None, "probe only the first N facts (by uuid) of each relation", minimum=1
    )
    batch_size: int = option(32, "sentences per forward", minimum=1)

    def check(self) -> None:
        if self.facts != "builtin" and not self.facts.startswith(FACT_SOURCES):
            raise UserError(
                f"facts={self.facts!r} is not valid; give 'builtin', 'mlama:DIR' or 'bmlama:DIR'"
            )
        if self.facts.startswith(FACT_SOURCES) and not self.facts.partition(":")[2]:
            raise UserError(f"facts={self.facts!r} names no directory; give e.g. 'bmlama:DIR'")


@dataclass(frozen=True)
class ProbeConfig(FactsConfig):
    """``mlneurons probe``: factual probing (mLAMA typed ranking, Zhao et al.'s matching)."""

    method: ClassVar[str] = "probe"

    probing: ProbingMethod = option(
        "typed",
        "typed: rank the typed candidates (default); zhao: masked LMs only, full-match greedy "
        "decoding without candidates (Zhao et al.)",
        flag="--method",
    )
    scoring: Scoring | None = option(
        None,
        "how candidates are scored: sentence (causal default: whole-sentence log-likelihood), "
        "sum / mean (log-probability of the object's tokens, summed / averaged; mean is the "
        "masked-LM default, TyQ), sentence-ce (mean cross-entropy of the filled sentence, "
        "RankC; causal LMs only, as is sentence)",
    )

    def check(self) -> None:
        super().check()
        if self.probing == "zhao" and self.scoring is not None:
            raise UserError(
                f"scoring={self.scoring!r} ranks candidates, and --method zhao ranks none"
            )


@dataclass(frozen=True)
class ReuseProbeConfig(FactsConfig):
    """The options of the commands built on a probing result (fact-neurons, trace)."""

    probe: str | None = option(
        None, "reuse probe.json from this directory instead of probing again"
    )


def run(cfg: ProbeConfig, context: Context) -> ProbeResult:
    """Probe the facts: P@1 per language and relation, Jaccard of correct facts."""
    from mlneurons.methods.probing import probe

    facts = load_facts(cfg)
    result = probe(
        context.model(cfg),
        facts,
        method=cfg.probing,
        scoring=cfg.scoring,
        batch_size=cfg.batch_size,
        world=context.parallel,
        uncertainty=uncertainty(cfg),
    )
    context.only_rank_0()
    return result


def facts_and_probing(
    cfg: ReuseProbeConfig, context: Context
) -> tuple[FactSet, TransformerBridge, ProbeResult]:
    """The fact set, the model and the probing result of a command built on probing: read
    from ``cfg.probe`` (checked against the model), else probed now and kept in the output
    directory with its figures. Under torchrun every rank gets every prediction."""
    from mlneurons.methods.probing import probe
    from mlneurons.methods.probing.result import ProbeResult
    from mlneurons.models.fingerprint import check_same_model

    facts = load_facts(cfg)
    if cfg.probe:  # read before the model loads
        with user_input():
            saved = ProbeResult.load(cfg.probe)
    model = context.model(cfg)
    if cfg.probe:
        with user_input():
            check_same_model(saved.model, model, what=f"{cfg.probe}/probe.json")
        return facts, model, saved
    result = probe(
        model,
        facts,
        batch_size=cfg.batch_size,
        world=context.parallel,
        uncertainty=uncertainty(cfg),
    )
    if context.world.rank == 0:
        context.keep(result, figures=figures(result, cfg, context.out or Path()))
    return facts, model, result


def describe(result: ProbeResult) -> list[str]:
    how = result.uncertainty()
    level = f"{how.confidence:.0%}"
    scoring = result.settings.get("scoring")
    lines = [
        f"{len(result.predictions)} predictions (facts x languages)"
        + (f", candidates scored by {scoring}" if scoring else "")
        + f"; {level} intervals: Wilson, macro P@1 by cluster bootstrap (relations, then facts)"
    ]
    for lang, row in result.p_at_1_intervals().items():
        lines.append(
            f"{lang}: P@1 macro {row['macro'].text()}, micro {row['micro'].text()} "
            f"({row['micro'].n} facts)"
        )
    ties = result.ties()
    if any(ties.values()):
        listed = ", ".join(f"{lang} {n}" for lang, n in ties.items() if n)
        lines.append(f"predictions with a tied top score (a tie with the gold is wrong): {listed}")
    pivot = result.languages[0]
    tests = result.jaccard_tests()
    others = [lang for lang in result.languages if lang != pivot]
    if not others:
        return lines
    family = next(iter(tests.values())).family if tests else 0
    lines.append(
        f"Jaccard of correctly predicted facts with {pivot} (bootstrap over shared facts; "
        f"chance: permutation within relations, Holm-adjusted over {family} pairs):"
    )
    table = result.jaccard()
    for lang in others:
        test = pair_test(tests, pivot, lang)
        if test is None:
            lines.append(f"  {lang} {table[pivot][lang]:.2f} (no correct shared fact)")
            continue
        verdict = "above chance" if test.above_chance() else "not above chance"
        lines.append(
            f"  {lang} {test.jaccard.text('.2f')}, {verdict} (null mean "
            f"{test.chance.expected:.2f}, Holm {p_value_text(test.p_adjusted)})"
        )
    return lines


def tables(result: ProbeResult) -> list[Table]:
    intervals = result.p_at_1_intervals()
    how = result.uncertainty()
    level = f"{how.confidence:.0%}"

    def cell(row: dict[str, Estimate], key: str) -> str:
        return row[key].text() if key in row else "–"

    rows = [
        [
            lang,
            *(cell(intervals.get(lang, {}), r) for r in [*result.relations, "macro", "micro"]),
        ]
        for lang in result.languages
    ]
    p_at_1 = Table(
        ["language", *result.relations, "macro", "micro"],
        rows,
        f"P@1 per relation with {level} intervals: Wilson score per relation and micro (all "
        f"facts), cluster bootstrap for macro (relations, then facts; {how.samples} resamples, "
        f"seed {how.seed}).",
    )
    tests = list(result.jaccard_tests().values())
    if not tests:
        return [p_at_1]
    pairs = [
        [
            f"{t.languages[0]}–{t.languages[1]}",
            t.jaccard.n,
            t.jaccard.text(".2f"),
            f"{t.chance.expected:.2f}",
            p_value_text(t.p_adjusted).removeprefix("p = "),
            "above chance" if t.above_chance() else "n.s.",
        ]
        for t in tests
    ]
    jaccard = Table(
        ["pair", "shared facts", f"Jaccard [{level} CI]", "null mean", "p (Holm)", ""],
        pairs,
        f"Jaccard of correctly predicted facts: percentile bootstrap over the shared facts "
        f"({how.samples} resamples); chance: permutation within relations keeping each "
        f"language's count of correct facts ({how.samples} permutations), one-sided p-values "
        f"Holm-adjusted over the {len(tests)} pairs; n.s.: not above chance at "
        f"{1 - how.confidence:.0%}.",
    )
    return [p_at_1, jaccard]


def figures(result: ProbeResult, cfg: Any, out: Path) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    title = f"P@1: {result.model.get('name', '')}"
    return {
        "p_at_1.png": lambda: plots.plot_p_at_1(result, title=title),
        "jaccard.png": lambda: plots.plot_jaccard(result),
    }


FACTS = {"languages": ("en", "es", "zh", "ja"), "max_facts_per_relation": 4}
FULL_FACTS = {
    "languages": ("en", "fr", "es", "de", "zh", "ja", "ru", "ar", "hi"),
    "max_facts_per_relation": 10,
}
"""The report's fact budgets, shared by probe, fact-neurons and trace."""

SPEC = Command(
    name="probe",
    title="Factual probing: P@1 and Jaccard",
    config=ProbeConfig,
    result="mlneurons.methods.probing.result:ProbeResult",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(budgets={"default": FACTS, "full": FULL_FACTS}),
    parallel=True,
)
