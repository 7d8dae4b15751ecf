"""``mlneurons ablate``: the perplexity matrix with language neurons deactivated."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

from mlneurons.config import Config, option
from mlneurons.interfaces.commands.inputs import (
    languages_of,
    load_neurons,
    load_stats,
    model_for,
    uncertainty,
)
from mlneurons.interfaces.spec import Command, Context, Step, Table

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.evaluation.uncertainty import Estimate
    from mlneurons.methods.deactivation import ChangeTest, MethodComparison, PerplexityMatrix

MODEL_HELP = "model (default: the one the neurons were selected on)"


@dataclass(frozen=True)
class NeuronsConfig(Config):
    """The options of the commands that read the neurons of ``mlneurons lape``."""

    model: str | None = option(None, MODEL_HELP)
    neurons: str = option("", "directory written by `mlneurons lape`", required=True)
    batch_size: int = option(8, "rows per forward pass", minimum=1)


@dataclass(frozen=True)
class AblateConfig(NeuronsConfig):
    """``mlneurons ablate``: the perplexity matrix under deactivation."""

    method: ClassVar[str] = "ablate"

    languages: Sequence[str] | None = option(
        None, "languages to deactivate and evaluate (default: those of --neurons)"
    )
    tokens_per_language: int = option(1024, "held-out tokens per evaluated language", minimum=1)
    seq_len: int = option(256, "tokens per row", minimum=2)
    seed: int = option(0, "seed of the random controls (matched draw i: seed + i)")
    no_random_control: bool = option(False, "skip the uniform random control")
    stats: str | None = option(
        None, "statistics for the matched controls (default: NEURONS/stats.safetensors)"
    )
    control_draws: int = option(
        3,
        "draws of the matched control (same layers and firing-probability bins; 0: none)",
        minimum=0,
    )
    control_bins: int = option(20, "firing-probability bins per layer", minimum=1)


class HeldoutBudget(Protocol):
    """A config with a held-out text budget: :class:`AblateConfig`, ``CompareMethodsConfig``."""

    @property
    def seq_len(self) -> int: ...

    @property
    def tokens_per_language(self) -> int: ...


def heldout(languages: Sequence[str], cfg: HeldoutBudget) -> MultilingualCorpus:
    """The built-in held-out text of ``languages`` at the config's budget."""
    from mlneurons.data.corpus import MultilingualCorpus

    return MultilingualCorpus.builtin(
        list(languages),
        split="heldout",
        seq_len=cfg.seq_len,
        tokens_per_language=cfg.tokens_per_language,
    )


def run(cfg: AblateConfig, context: Context) -> PerplexityMatrix:
    """Deactivate each language's neurons, evaluate every language (with controls)."""
    from mlneurons.methods.deactivation import perplexity_matrix

    neurons = load_neurons(cfg.neurons)
    languages = languages_of(neurons, cfg.languages) if cfg.languages else neurons.languages
    corpus = heldout(languages, cfg)
    stats = load_stats(cfg, "--control-draws 0") if cfg.control_draws else None
    model = model_for(cfg, context, neurons, *([stats] if stats is not None else []))
    matrix = perplexity_matrix(
        model,
        neurons,
        corpus,
        random_control=not cfg.no_random_control,
        stats=stats,
        matched_draws=cfg.control_draws,
        bins=cfg.control_bins,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        world=context.parallel,
        uncertainty=uncertainty(cfg),
    )
    context.only_rank_0()
    return matrix


def own_changes(
    matrix: PerplexityMatrix,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """In %, each language's own perplexity change: its neurons off, the uniform control,
    and the matched control's draws ``[draw, language]`` (None for a control not run)."""
    own = matrix.relative_change().diagonal() * 100
    uniform = (
        matrix.relative_change("random_control").diagonal() * 100 if matrix.random_control else None
    )
    draws = (
        matrix.matched_draws().diagonal(dim1=1, dim2=2) * 100 if matrix.matched_control else None
    )
    return own, uniform, draws


"""Below this many held-out rows per language, bootstrap intervals come out too narrow."""


def intervals_note(
    matrix: PerplexityMatrix | MethodComparison, *, tests: int, family: str
) -> list[str]:
    """How the intervals were computed (or why there are none), and a warning when the
    rows are too few for the bootstrap to be trusted; ``tests`` differences are tested
    across the ``family`` (Holm-adjusted when more than one)."""
    from mlneurons.evaluation.uncertainty import Uncertainty
    from mlneurons.methods import deactivation

    if not matrix.row_nll:
        return ["no intervals: this result was saved without its per-row losses"]
    rows = sorted(len(r) for r in matrix.row_tokens.values())
    if rows[0] < deactivation.MIN_RESAMPLED:
        return [
            f"no intervals: {rows[0]} held-out row{'' if rows[0] == 1 else 's'} per language, and a bootstrap needs "
            f"{deactivation.MIN_RESAMPLED} (its intervals come out too narrow below that); raise "
            "the held-out tokens per language or lower --seq-len for more rows"
        ]
    how = Uncertainty.of({"uncertainty": matrix.uncertainty})
    counts = str(rows[0]) if rows[0] == rows[-1] else f"{rows[0]}-{rows[-1]}"
    adjusted = f", Holm-adjusted across the {family}" if tests > 1 else ""
    lines = [
        f"intervals: {how.confidence:.0%}, paired bootstrap over the held-out rows ({counts} "
        f"per language; {how.samples} resamples, seed {how.seed}); n.s. = not significant "
        f"at {1 - how.confidence:.2g}, bootstrap p-value{adjusted}"
    ]
    return lines


def caption_of(lines: list[str]) -> str:
    """Note lines as sentences of a caption."""
    return " ".join(line[0].upper() + line[1:] + "." for line in lines)


def _flag(test: ChangeTest | None, *, short: bool = False) -> str:
    from mlneurons.interfaces.plots import format_test

    text = "" if test is None else format_test(test, short=short)
    return f" {text}" if text else ""


def describe(matrix: PerplexityMatrix) -> list[str]:
    from mlneurons.interfaces.plots import format_change, format_points

    dominant = [lang for lang, ok in matrix.diagonal_dominance().items() if ok]
    baseline = matrix.baseline_intervals()
    lines = [
        "baseline perplexity: "
        + ", ".join(
            f"{k} {v:.1f}"
            + ("" if baseline is None else f" [{baseline[k].lo:.1f}, {baseline[k].hi:.1f}]")
            for k, v in matrix.baseline.items()
        ),
        f"own language hit hardest for {len(dominant)}/{len(matrix.languages)}: "
        + (", ".join(dominant) or "none"),
    ]
    own, uniform, draws = own_changes(matrix)
    tests = matrix.own_changes()
    for i, lang in enumerate(matrix.languages):
        test = None if tests is None else tests[lang]
        parts = [
            f"{lang}: own neurons off "
            + format_change(float(own[i]) / 100, None if test is None else test.own.difference)
            + _flag(None if test is None else test.own)
        ]
        if uniform is not None:
            interval = None if test is None else test.uniform
            parts.append(f"uniform control {format_change(float(uniform[i]) / 100, interval)}")
        if draws is not None:
            interval = None if test is None else test.matched
            n = len(draws)
            spread = f"sd {float(draws[:, i].std(correction=0)):.1f}; " if n > 1 else ""
            parts.append(
                f"matched control ({n} draw{'s' if n > 1 else ''}) "
                f"{format_change(float(draws[:, i].mean()) / 100, interval)} "
                f"({spread}{int((draws[:, i] >= own[i]).sum())} of {n} draw"
                f"{'s' if n > 1 else ''} as large)"
            )
        versus = None if test is None else test.versus_matched or test.versus_uniform
        if versus is not None:
            control = "matched" if test is not None and test.versus_matched else "uniform"
            parts.append(f"own - {control} {format_points(versus.difference)}" + _flag(versus))
        lines.append("; ".join(parts))
    return lines + notes(matrix)


def tables(matrix: PerplexityMatrix) -> list[Table]:
    from mlneurons.interfaces.plots import format_change, format_points

    own, uniform, draws = own_changes(matrix)
    tests = matrix.own_changes()
    baseline = matrix.baseline_intervals()
    perplexity = matrix.perplexity_intervals()
    rows = []
    for i, lang in enumerate(matrix.languages):
        off = matrix.deactivated[lang]
        worst = max(off, key=lambda other: off[other] / matrix.baseline[other])
        test = None if tests is None else tests[lang]
        matched = (
            "–"
            if draws is None
            else format_change(
                float(draws[:, i].mean()) / 100, None if test is None else test.matched
            )
            + f" (sd {float(draws[:, i].std(correction=0)):.1f})"
        )
        versus = None if test is None else test.versus_matched or test.versus_uniform
        rows.append(
            [
                lang,
                _ppl(matrix.baseline[lang], None if baseline is None else baseline[lang]),
                _ppl(off[lang], None if perplexity is None else perplexity[lang][lang]),
                format_change(float(own[i]) / 100, None if test is None else test.own.difference)
                + _flag(None if test is None else test.own, short=True),
                "–"
                if uniform is None
                else format_change(float(uniform[i]) / 100, None if test is None else test.uniform),
                matched,
                "–" if draws is None else f"{int((draws[:, i] >= own[i]).sum())}/{len(draws)}",
                "–"
                if versus is None
                else format_points(versus.difference) + _flag(versus, short=True),
                worst,
            ]
        )
    control = "matched" if draws is not None else "uniform"
    header = [
        "language",
        "baseline ppl",
        "own neurons off",
        "change",
        "uniform control",
        f"matched control (mean of {0 if draws is None else len(draws)}, sd)",
        "matched draws as large",
        f"own - {control} control",
        "hit hardest",
    ]
    caption = (
        "Perplexity on held-out text; the diagonal: each language with its own neurons "
        "deactivated. Controls: as many random neurons from the same layers (uniform), and "
        "from the same layers and firing-probability bins (matched; its draws are the null: "
        "how many changed perplexity at least as much as the language's own neurons). "
        + caption_of(notes(matrix))
    )
    return [Table(header, rows, caption)]


def notes(matrix: PerplexityMatrix) -> list[str]:
    """How the intervals of ``matrix`` were computed (:func:`intervals_note`)."""
    n = len(matrix.languages)
    return intervals_note(matrix, tests=n, family=f"{n} languages")


def _ppl(value: float, interval: Estimate | None) -> str:
    return f"{value:.1f}" + ("" if interval is None else f" [{interval.lo:.1f}, {interval.hi:.1f}]")


def figures(
    matrix: PerplexityMatrix, cfg: AblateConfig, out: Path
) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    title = f"Perplexity change: {matrix.model.get('name', '')}"
    return {
        "ppl_matrix.png": lambda: plots.plot_perplexity_matrix(matrix, title=title),
        "ppl_own.png": lambda: plots.plot_own_changes(matrix),
    }


SPEC = Command(
    name="ablate",
    title="Deactivation: perplexity",
    config=AblateConfig,
    result="mlneurons.methods.deactivation:PerplexityMatrix",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(
        budgets={
            # 10 rows of 32 tokens (enough rows for a bootstrap interval), 3 of LAPE's languages,
            # 1 matched draw: the 3 x 3 matrix with both controls in about a minute
            "default": {
                "languages": ("en", "zh", "ja"),
                "tokens_per_language": 320,
                "seq_len": 32,
                "control_draws": 1,
            },
            "full": {},
        },
        reuse="neurons",
        needs=("lape",),
    ),
    parallel=True,
)
