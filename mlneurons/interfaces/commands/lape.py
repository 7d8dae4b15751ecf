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
from mlneurons.interfaces.commands.inputs import uncertainty, unique, user_input
from mlneurons.interfaces.spec import Command, Context, OtherRank, Step, Table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.methods.lape import LapeResult, OverlapChance
    from mlneurons.models.bridge import TransformerBridge
    from mlneurons.stats.activation import ActivationStats, BlockStats

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
    stability: int = option(
        0,
        "re-select on this many bootstrap resamples of the corpus rows and report how stable "
        "each language's set is (0: off)",
        minimum=0,
    )

    def check(self) -> None:
        if self.stability and self.stats:
            raise UserError(
                "--stability resamples corpus rows, but --stats holds per-language totals only: "
                "drop --stats (the pass runs again) or --stability"
            )
        if self.stability and self.shards:
            raise UserError("--stability needs a pass in one process: drop --shards")
        if self.stability and self.dictionary:
            raise UserError("--stability resamples neuron counts; drop --dictionary or --stability")


def run(cfg: LapeConfig, context: Context) -> LapeResult:
    """Collect the statistics (or read ``cfg.stats``) and select the LAPE neurons.

    Under torchrun (or with ``shards``) the statistics pass is data parallel through
    shards in ``context.out``; ranks other than 0 end once their shards are written.
    With ``stability`` the one pass keeps its counts per block of rows
    (:func:`~mlneurons.stats.activation.collect_block_stats`): their sums are the same
    statistics, and the bootstrap re-selects from them without another forward pass.
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
    if cfg.stability and context.world.size > 1:
        raise UserError("--stability needs a pass in one process, not a torchrun launch")
    blocks = None
    if not cfg.stats:
        from mlneurons.models.dictionary import splice

        model = context.model(cfg)
        with splice(model, *dictionaries) as points:
            stats, blocks = _collect(cfg, context, model, corpus, points)
    constants: dict[str, Any] = dict(
        top_rate=cfg.top_rate,
        filter_rate=cfg.filter_rate,
        activation_bar_ratio=cfg.activation_bar_ratio,
    )
    neurons = lape.select(stats, **constants)
    how = uncertainty(cfg)
    stable = None if blocks is None else lape.stability(
        blocks, cfg.stability, **constants, uncertainty=how
    )  # fmt: skip
    summary = lape.summarize(
        stats,
        neurons,
        wall_time_s=time.time() - start,
        stats_path=cfg.stats,
        stability=stable,
        uncertainty=how,
    )
    return lape.LapeResult(stats, neurons, summary)


def _collect(
    cfg: LapeConfig,
    context: Context,
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    points: list[str],
) -> tuple[ActivationStats, BlockStats | None]:
    """The statistics pass of ``run`` (data parallel under torchrun or with ``shards``), at
    the MLP neurons or at ``points``; with ``--stability``, counted per block of rows too."""
    from mlneurons.stats.activation import collect_activation_stats, collect_block_stats

    out = context.out
    if cfg.stability:
        checkpoint = out / LAPE_CHECKPOINT if out is not None else None
        blocks = collect_block_stats(
            model, corpus, batch_size=cfg.batch_size, checkpoint=checkpoint
        )
        if checkpoint is not None:
            checkpoint.unlink(missing_ok=True)
        return blocks.total(), blocks
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
    return stats, None


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
    if len(result.neurons.languages) > 1:
        lines.append(overlap_line(result.overlap_chance(), result.uncertainty.confidence))
    stable = result.selection_stability()
    if stable is not None:
        level = f"{result.uncertainty.confidence:.0%}"
        jaccards = ", ".join(f"{lang} {e.text('.2f')}" for lang, e in stable.jaccard.items())
        shares = ", ".join(
            f"{lang} {'–' if share is None else f'{share:.0%}'}"
            for lang, share in stable.share_stable().items()
        )
        lines.append(
            f"Selection stability over {stable.resamples} bootstrap resamples of the corpus "
            f"rows ({stable.rows_per_block} row(s) per block): Jaccard with the full set, mean "
            f"[{level} of resamples]: {jaccards}; neurons selected in >= {stable.stable:.0%} "
            f"of resamples: {shares}"
        )
    return lines


def overlap_line(chance: OverlapChance, confidence: float) -> str:
    """Shared neurons against chance, in one line: every pair up to ten, else the five most
    above chance and the pairs that are not (flags at ``confidence``, Holm-adjusted)."""
    alpha = 1 - confidence
    significant = chance.significant(alpha)
    words = [
        f"{a}-{b} {c.observed:.0f} vs {c.expected:.1f}" + ("" if sig else " (n.s.)")
        for (a, b), c, sig in zip(chance.pairs, chance.overall, significant)
    ]
    if len(words) > 10:
        ratio = [c.observed / max(c.expected, 1e-12) for c in chance.overall]
        top = sorted(range(len(words)), key=lambda i: -ratio[i])[:5]
        weak = [f"{a}-{b}" for (a, b), sig in zip(chance.pairs, significant) if not sig]
        shown = "most above chance: " + ", ".join(words[i] for i in top)
        shown += f"; not significant: {', '.join(weak) or 'none'}"
    else:
        shown = ", ".join(words)
    return (
        f"Shared neurons vs chance ({sum(significant)} of {len(words)} pairs above chance; "
        f"{OVERLAP_TEST}, Holm-adjusted over the pairs, {1 - alpha:.0%} level): {shown}"
    )


OVERLAP_TEST = "hypergeometric per layer summed over layers, one-sided"


def p_text(p: float) -> str:
    """A p-value in two significant digits (``< 1e-300`` where the float underflows)."""
    return "< 1e-300" if p < 1e-300 else f"{p:.2g}"


def tables(result: LapeResult) -> list[Table]:
    summary = result.summary
    tokens = summary.tokens_per_language
    stable = result.selection_stability()
    header = ["language", "tokens", "neurons"]
    rows: list[list[Any]] = [
        [lang, tokens.get(lang, "–"), n] for lang, n in summary.neurons_per_language.items()
    ]
    caption = ""
    if stable is not None:
        header += ["Jaccard with the full set", f"selected in >= {stable.stable:.0%}"]
        shares = stable.share_stable()
        for row in rows:
            estimate, share = stable.jaccard.get(row[0]), shares.get(row[0])
            row += [
                "–" if estimate is None else estimate.text(".2f"),
                "–" if share is None else f"{share:.0%}",
            ]
        caption = (
            f"Stability over {stable.resamples} bootstrap resamples of each language's corpus "
            f"rows ({stable.rows_per_block} row(s) per block): the mean Jaccard of a resample's "
            f"set with the full set [{result.uncertainty.confidence:.0%} of resamples], and the "
            f"share of the full set selected in >= {stable.stable:.0%} of resamples."
        )
    found = [Table(header, rows, caption)]
    if len(result.neurons.languages) > 1:
        found += overlap_tables(result.overlap_chance(), result.uncertainty.confidence)
    return found


def overlap_tables(chance: OverlapChance, confidence: float) -> list[Table]:
    """Each pair's shared neurons against chance, and (folded) per layer."""
    alpha = 1 - confidence
    rows = [
        [
            f"{a}-{b}",
            f"{c.observed:.0f}",
            f"{c.expected:.2f}",
            "–" if c.expected == 0 else f"{c.observed / c.expected:.1f}",
            p_text(p),
            "" if sig else "n.s.",
        ]
        for (a, b), c, p, sig in zip(
            chance.pairs, chance.overall, chance.p_holm, chance.significant(alpha)
        )
    ]
    caption = (
        "Neurons two languages share against chance: random sets as large as each language's "
        f"set in every layer (of its {chance.population} neurons) share a hypergeometric "
        "number there; expected: the sum over layers; p: the exact one-sided chance of a total "
        f"at least as large (layers independent), Holm-adjusted over the {len(rows)} pairs; "
        f"n.s.: not above chance at the {1 - alpha:.0%} level."
    )
    header = ["pair", "shared", "expected by chance", "shared / expected", "p (Holm)", ""]
    layers = [
        [f"{a}-{b}", layer, f"{c.observed:.0f}", f"{c.expected:.2f}", p_text(c.p_value)]
        for (a, b), per_layer in zip(chance.pairs, chance.layers)
        for layer, c in enumerate(per_layer)
        if c.observed or c.expected >= 0.5
    ]
    per_layer_caption = (
        "Per layer (layers sharing a neuron or expecting at least half of one): shared "
        "neurons, the hypergeometric expectation and the exact one-sided p-value (not adjusted)."
    )
    return [
        Table(header, rows, caption),
        Table(["pair", "layer", "shared", "expected", "p"], layers, per_layer_caption, True),
    ]


def figures(result: LapeResult, cfg: LapeConfig, out: Path) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    name = result.stats.model.get("name", "")
    found = {
        "neurons_per_layer.png": lambda: plots.plot_layer_distribution(
            result.neurons, title=f"LAPE neurons per layer: {name}"
        ),
        "overlap.png": lambda: plots.plot_overlap(
            result.neurons,
            title=f"Shared LAPE neurons: {name}",
            chance=result.overlap_chance(),
            confidence=result.uncertainty.confidence,
        ),
    }
    stable = result.selection_stability()
    if stable is not None:
        found["stability.png"] = lambda: plots.plot_stability(
            stable, title=f"LAPE selection stability: {name}"
        )
    return found


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
            "default": {"languages": ("en", "es", "de", "zh", "ja"), "tokens_per_language": 4096},
            "full": {},
        }
    ),
    parallel=True,
    offline_shards=True,
    default_out="runs/lape",
    resumes=lambda cfg: not cfg.stats,  # the statistics pass keeps a checkpoint
)
