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
)
from mlneurons.interfaces.spec import Command, Context, Step, Table

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.methods.deactivation import PerplexityMatrix

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


def describe(matrix: PerplexityMatrix) -> list[str]:
    dominant = [lang for lang, ok in matrix.diagonal_dominance().items() if ok]
    lines = [
        "baseline perplexity: " + ", ".join(f"{k} {v:.1f}" for k, v in matrix.baseline.items()),
        f"own language hit hardest for {len(dominant)}/{len(matrix.languages)}: "
        + (", ".join(dominant) or "none"),
    ]
    own, uniform, draws = own_changes(matrix)
    for i, lang in enumerate(matrix.languages):
        parts = [f"{lang}: own neurons off {float(own[i]):+.1f}%"]
        if uniform is not None:
            parts.append(f"uniform control {float(uniform[i]):+.1f}%")
        if draws is not None:
            parts.append(
                f"matched control ({len(draws)} draws) {float(draws[:, i].mean()):+.1f}% "
                f"(sd {float(draws[:, i].std(correction=0)):.1f})"
            )
        lines.append("; ".join(parts))
    return lines


def tables(matrix: PerplexityMatrix) -> list[Table]:
    own, uniform, draws = own_changes(matrix)
    rows = []
    for i, lang in enumerate(matrix.languages):
        off = matrix.deactivated[lang]
        worst = max(off, key=lambda other: off[other] / matrix.baseline[other])
        matched = (
            "–"
            if draws is None
            else f"{float(draws[:, i].mean()):+.1f}% ± {float(draws[:, i].std(correction=0)):.1f}"
        )
        rows.append(
            [
                lang,
                f"{matrix.baseline[lang]:.1f}",
                f"{off[lang]:.1f}",
                f"{float(own[i]):+.0f}%",
                "–" if uniform is None else f"{float(uniform[i]):+.0f}%",
                matched,
                worst,
            ]
        )
    header = [
        "language",
        "baseline ppl",
        "own neurons off",
        "change",
        "uniform control",
        f"matched control (mean ± sd of {0 if draws is None else len(draws)})",
        "hit hardest",
    ]
    caption = (
        "Perplexity on held-out text; the diagonal: each language with its own neurons "
        "deactivated. Controls: as many random neurons from the same layers (uniform), and "
        "from the same layers and firing-probability bins (matched)."
    )
    return [Table(header, rows, caption)]


def figures(
    matrix: PerplexityMatrix, cfg: AblateConfig, out: Path
) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    title = f"Perplexity change: {matrix.model.get('name', '')}"
    return {"ppl_matrix.png": lambda: plots.plot_perplexity_matrix(matrix, title=title)}


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
            # 10 rows of 32 tokens: enough rows for a bootstrap interval, and 2 matched draws
            "default": {"tokens_per_language": 320, "seq_len": 32, "control_draws": 2},
            "full": {},
        },
        reuse="neurons",
        needs=("lape",),
    ),
    parallel=True,
)
