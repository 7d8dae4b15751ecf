"""``mlneurons factors``: P@1 by Zhao et al.'s factors: the object's token count and the
languages' training-text size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlneurons.config import option
from mlneurons.errors import UserError
from mlneurons.interfaces.commands.inputs import uncertainty
from mlneurons.interfaces.commands.probe import (
    FACTS,
    FULL_FACTS,
    ReuseProbeConfig,
    facts_and_probing,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.methods.probing.factors import Factors


@dataclass(frozen=True)
class FactorsConfig(ReuseProbeConfig):
    """``mlneurons factors``: P@1 by object token count and by training-text size (Zhao et al.)."""

    method: ClassVar[str] = "factors"

    text_sizes: str | None = option(
        None, "training-text size per language, e.g. en=3e9,de=1.2e9 (any unit, the same for all)"
    )
    text_corpus: str | None = option(
        None,
        "count the training-text sizes in this folder of {lang}.txt files or {lang}/ folders "
        "(UTF-8 bytes) instead of --text-sizes",
    )

    def check(self) -> None:
        from mlneurons.methods.probing.factors import parse_text_sizes

        super().check()
        if self.text_sizes and self.text_corpus:
            raise UserError("give --text-sizes or --text-corpus, not both")
        if self.text_sizes:
            try:
                parse_text_sizes(self.text_sizes)
            except UserError as exc:
                raise UserError(f"--text-sizes {self.text_sizes!r}: {exc}") from None
        if self.text_corpus and not Path(self.text_corpus).is_dir():
            raise UserError(f"--text-corpus {self.text_corpus!r}: no such folder")


def run(cfg: FactorsConfig, context: Context) -> Factors:
    """P@1 split by the object's token count, and its Spearman correlation with text size."""
    from mlneurons.methods.probing.factors import (
        corpus_text_sizes,
        factors,
        object_token_counts,
        parse_text_sizes,
    )
    from mlneurons.models.fingerprint import fingerprint

    sizes: dict[str, float] = {}
    source = ""
    if cfg.text_sizes:
        sizes, source = parse_text_sizes(cfg.text_sizes), "--text-sizes"
    elif cfg.text_corpus:  # counted before the model loads
        counted = corpus_text_sizes(cfg.text_corpus)
        sizes = {lang: float(n) for lang, n in counted.items()}
        source = f"UTF-8 bytes of {cfg.text_corpus}"
    facts, model, probing = facts_and_probing(cfg, context)
    context.only_rank_0()
    return factors(
        probing,
        object_token_counts(model.tokenizer, facts),
        sizes=sizes,
        size_source=source,
        model=fingerprint(model),
        uncertainty=uncertainty(cfg),
    )


def _correlation_line(result: Factors) -> str:
    from mlneurons.evaluation.uncertainty import MIN_RESAMPLED, NOT_SIGNIFICANT
    from mlneurons.methods.probing.result import p_value_text

    found = result.correlation()
    if not result.sizes:
        return (
            "training-text size: no sizes given (--text-sizes en=...,de=... or --text-corpus DIR)"
        )
    if found is None:
        return f"training-text size: sizes for {', '.join(result.sizes)} only; 2+ probed languages needed"
    rho, p = found
    langs = result.correlated()
    words = (
        f"Spearman rho of P@1 with text size ({result.size_source}) over {len(langs)} languages: "
    )
    words += f"{rho.text('.2f')}"
    if not rho.has_interval:
        words += f" (no bootstrap interval under {MIN_RESAMPLED} languages)"
    alpha = 1 - result.uncertainty().confidence
    words += f", permutation {p_value_text(p)}" if p == p else ", undefined (no spread)"
    return words + ("" if p < alpha else f": {NOT_SIGNIFICANT}")


def describe(result: Factors) -> list[str]:
    from mlneurons.methods.probing.factors import ONE, SEVERAL

    split = result.split()
    lines = ["P@1 by the gold object's token count (the model's tokenizer; Wilson intervals):"]
    for lang, row in split.items():
        one, several = row.get(ONE), row.get(SEVERAL)
        lines.append(
            f"{lang}: one token {one.text() + f' ({one.n} facts)' if one else '– (no fact)'}, "
            f"several {several.text() + f' ({several.n} facts)' if several else '– (no fact)'}"
        )
    lines.append(_correlation_line(result))
    return lines


def tables(result: Factors) -> list[Table]:
    from mlneurons.methods.probing.factors import ONE, SEVERAL

    def cell(row: dict[str, Any], group: str) -> list[Any]:
        return [row[group].n, row[group].text()] if group in row else [0, "–"]

    rows = [[lang, *cell(row, ONE), *cell(row, SEVERAL)] for lang, row in result.split().items()]
    split = Table(
        ["language", "one-token facts", "P@1 one token", "several-token facts", "P@1 several"],
        rows,
        "P@1 by the gold object's token count in its filled sentence; Wilson intervals.",
    )
    p_at_1 = result.p_at_1()
    sizes = [
        [lang, f"{result.sizes[lang]:.4g}", p_at_1[lang].text()] for lang in result.correlated()
    ]
    if not sizes:
        return [split]
    caption = _correlation_line(result) + "."
    return [split, Table(["language", "text size", "P@1 (micro)"], sizes, caption)]


def plot_factors(result: Factors, *, title: str = "") -> Figure:
    """Left: P@1 of one-token and several-token objects per language (Wilson intervals).
    Right, only when sizes are given: P@1 against training-text size (log scale)."""
    from matplotlib.figure import Figure

    from mlneurons.methods.probing.factors import ONE, SEVERAL

    langs = result.correlated()
    fig = Figure(figsize=(11 if langs else 6, 4), layout="constrained")
    left, right = fig.subplots(1, 2) if langs else (fig.subplots(), None)
    split = result.split()
    width = 0.4
    for k, (group, colour) in enumerate(((ONE, "C0"), (SEVERAL, "C1"))):
        at = [(i, row[group]) for i, row in enumerate(split.values()) if group in row]
        left.bar(
            [i + (k - 0.5) * width for i, _ in at],
            [100 * e.value for _, e in at],
            width,
            yerr=[[100 * (e.value - e.lo) for _, e in at], [100 * (e.hi - e.value) for _, e in at]],
            capsize=2,
            color=colour,
            label=f"{group} ({split['all'][group].n if group in split['all'] else 0} facts)",
        )
    left.set_xticks(range(len(split)), list(split))
    left.set_ylabel("P@1 (%)")
    left.set_ylim(0, 105)
    left.legend(fontsize=8)
    left.set_title("P@1 by the object's token count")
    if right is not None:
        p_at_1 = result.p_at_1()
        xs = [result.sizes[lang] for lang in langs]
        ys = [100 * p_at_1[lang].value for lang in langs]
        errors = [[100 * (p_at_1[g].value - p_at_1[g].lo) for g in langs],
                  [100 * (p_at_1[g].hi - p_at_1[g].value) for g in langs]]  # fmt: skip
        right.errorbar(xs, ys, yerr=errors, fmt="o", capsize=2)
        for x, y, lang in zip(xs, ys, langs):
            right.annotate(lang, (x, y), textcoords="offset points", xytext=(4, 4))
        if min(xs) > 0:
            right.set_xscale("log")
        found = result.correlation()
        if found is not None:
            right.set_title(f"Spearman rho {found[0].text('.2f')}", fontsize=9)
        right.set_xlabel(f"training-text size ({result.size_source})")
        right.set_ylabel("P@1 (%)")
    if title:
        fig.suptitle(title)
    return fig


def figures(result: Factors, cfg: Any, out: Path) -> dict[str, Callable[[], Figure]]:
    return {"factors.png": lambda: plot_factors(result)}


SPEC = Command(
    name="factors",
    title="P@1 by Zhao et al.'s factors: object token count, training-text size",
    config=FactorsConfig,
    result="mlneurons.methods.probing.factors:Factors",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(budgets={"default": FACTS, "full": FULL_FACTS}, reuse="probe", needs=("probe",)),
)
