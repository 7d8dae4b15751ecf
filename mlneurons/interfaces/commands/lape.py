"""``mlneurons lape``: language-specific neurons (LAPE, Tang et al. 2024)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlneurons.config import Config, option
from mlneurons.data.builtin_text import DEFAULT_LANGUAGES
from mlneurons.errors import UserError
from mlneurons.interfaces.commands.inputs import unique, user_input
from mlneurons.interfaces.spec import Command, Context, OtherRank, Step, Table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.methods.lape import LapeResult
    from mlneurons.models.bridge import TransformerBridge
    from mlneurons.stats.activation import ActivationStats

LAPE_SHARDS = "lape-shards"
"""The directory (in ``--out``) of a data-parallel LAPE pass: manifest.json and shards/."""
LAPE_CHECKPOINT = "stats.checkpoint.safetensors"


@dataclass(frozen=True)
class LapeConfig(Config):
    """``mlneurons lape``: LAPE statistics and selection (Tang et al. 2024)."""

    method: ClassVar[str] = "lape"

    languages: Sequence[str] | None = option(
        None,
        f"comma-separated codes (default: {','.join(DEFAULT_LANGUAGES)}; with --stats, the "
        "languages of the statistics)",
    )
    corpus: str = option(
        "builtin", "'builtin' (default) or a folder of {lang}.txt files or {lang}/ folders"
    )
    tokens_per_language: int = option(12_288, "token budget per language", minimum=1)
    seq_len: int = option(256, "tokens per packed row", minimum=2)
    batch_size: int = option(8, "rows per forward pass", minimum=1)
    top_rate: float = option(0.01, "LAPE top_rate", rate=True)
    filter_rate: float = option(0.95, "LAPE filter_rate", rate=True)
    activation_bar_ratio: float = option(0.95, "LAPE activation_bar_ratio", rate=True)
    stats: str | None = option(
        None,
        "re-select from statistics saved by an earlier run (stats.safetensors or its "
        "directory) with the constants given: no model, no forward",
    )
    shards: int | None = option(
        None,
        "logical shards of a data-parallel pass (torchrun): fixed at the first launch, "
        "checkpointed in OUT/shards/ (default 8 under torchrun)",
        minimum=1,
    )
    dictionary: Sequence[str] | None = option(
        None,
        "comma-separated directories of sparse autoencoders or transcoders (cfg.json + "
        "sae_weights.safetensors, as SAELens saves them): LAPE over their features instead "
        "of the MLP neurons, one 'layer' per dictionary",
    )


def run(cfg: LapeConfig, context: Context) -> LapeResult:
    """Collect the statistics (or read ``cfg.stats``) and select the LAPE neurons.

    Under torchrun (or with ``shards``) the statistics pass is data parallel through
    shards in ``context.out``; ranks other than 0 end once their shards are written.
    """
    from mlneurons.data.builtin_text import normalize_language
    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.methods import lape
    from mlneurons.stats.activation import ActivationStats

    start = time.time()
    if cfg.stats and cfg.dictionary:
        raise UserError(
            "--dictionary reads features in a statistics pass; statistics given with --stats "
            "already hold their units (drop one of the two)"
        )
    dictionaries = []
    if cfg.dictionary:
        from mlneurons.models.dictionary import load_dictionary

        dictionaries = [load_dictionary(path) for path in cfg.dictionary]
    if cfg.stats:
        with user_input():
            stats = ActivationStats.load(cfg.stats)
            if cfg.languages:
                stats = stats.select(
                    unique([normalize_language(code, stats.languages) for code in cfg.languages])
                )
        languages = stats.languages
    else:
        options: dict[str, Any] = dict(
            seq_len=cfg.seq_len, tokens_per_language=cfg.tokens_per_language
        )
        wanted = list(cfg.languages or DEFAULT_LANGUAGES)
        if cfg.corpus == "builtin":
            corpus = MultilingualCorpus.builtin(wanted, **options)
        else:
            corpus = MultilingualCorpus.from_files(cfg.corpus, **options).subset(wanted)
        languages = corpus.languages
    if len(languages) < 2:
        raise UserError(f"LAPE compares languages: give at least two, got {languages}")
    if not cfg.stats:
        from mlneurons.models.dictionary import splice

        model = context.model(cfg)
        with splice(model, *dictionaries) as points:
            stats = _collect(cfg, context, model, corpus, points)
    neurons = lape.select(
        stats,
        top_rate=cfg.top_rate,
        filter_rate=cfg.filter_rate,
        activation_bar_ratio=cfg.activation_bar_ratio,
    )
    summary = lape.summarize(stats, neurons, wall_time_s=time.time() - start, stats_path=cfg.stats)
    return lape.LapeResult(stats, neurons, summary)


def _collect(
    cfg: LapeConfig,
    context: Context,
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    points: list[str],
) -> ActivationStats:
    """The statistics pass of ``run`` (data parallel under torchrun or with ``shards``), at
    the MLP neurons or at ``points``."""
    from mlneurons.stats.activation import collect_activation_stats

    out = context.out
    if context.world.size > 1 or cfg.shards:  # data parallel: logical shards in out
        if out is None:
            raise UserError("a data-parallel LAPE pass needs an output directory (--out)")
        collected = collect_activation_stats(
            model, corpus, batch_size=cfg.batch_size, shards=out / LAPE_SHARDS,
            n_shards=cfg.shards, points=points,
        )  # fmt: skip
        if collected is None:
            print(
                f"rank {context.world.rank}: shards written; once every rank is done, add "
                f"them with: mlneurons merge {out / LAPE_SHARDS}"
            )
            raise OtherRank
        context.only_rank_0()
        stats = collected
    else:
        checkpoint = out / LAPE_CHECKPOINT if out is not None else None
        single = collect_activation_stats(
            model, corpus, batch_size=cfg.batch_size, checkpoint=checkpoint, points=points
        )
        assert single is not None  # None only for a sharded pass
        stats = single
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
    return stats


def describe(result: LapeResult) -> list[str]:
    summary = result.summary
    counts = ", ".join(f"{lang} {n}" for lang, n in summary.neurons_per_language.items())
    constants = ", ".join(
        f"{k} {v:.4g}" if isinstance(v, int | float) else f"{k} {v}"
        for k, v in summary.constants.items()
    )
    unit = "feature" if result.neurons.feature_points else "neuron"
    lines = [
        f"{sum(summary.neurons_per_language.values())} language-specific {unit}s (a {unit} "
        f"may belong to several languages): {counts}",
        f"LAPE constants: {constants}",
    ]
    if result.neurons.feature_points:
        sources = [d["source"] for d in summary.model["units"]["dictionaries"]]
        lines.append(f"units: the features of {len(sources)} dictionaries ({', '.join(sources)})")
    return lines


def tables(result: LapeResult) -> list[Table]:
    summary = result.summary
    tokens = summary.tokens_per_language
    rows = [[lang, tokens.get(lang, "–"), n] for lang, n in summary.neurons_per_language.items()]
    return [Table(["language", "tokens", "neurons"], rows)]


def figures(result: LapeResult, cfg: LapeConfig, out: Path) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    name = result.stats.model.get("name", "")
    return {
        "neurons_per_layer.png": lambda: plots.plot_layer_distribution(
            result.neurons, title=f"LAPE neurons per layer: {name}"
        ),
        "overlap.png": lambda: plots.plot_overlap(
            result.neurons, title=f"Shared LAPE neurons: {name}"
        ),
    }


SPEC = Command(
    name="lape",
    title="Language-specific neurons (LAPE, Tang et al. 2024)",
    config=LapeConfig,
    result="mlneurons.methods.lape:LapeResult",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(
        budgets={
            "default": {"languages": ("en", "es", "de", "zh", "ja"), "tokens_per_language": 8192},
            "full": {},
        }
    ),
    parallel=True,
    offline_shards=True,
    default_out="runs/lape",
    resumes=lambda cfg: not cfg.stats,  # the statistics pass keeps a checkpoint
)
