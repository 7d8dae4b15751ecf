"""``mlneurons logit-lens``: the latent language of translation (Wendler et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import Config, option
from mlneurons.interfaces.commands.inputs import unique, user_input
from mlneurons.interfaces.spec import Command, Context, Step, Table, plot

if TYPE_CHECKING:
    from mlneurons.methods.readouts import LatentLanguage


@dataclass(frozen=True)
class LogitLensConfig(Config):
    """``mlneurons logit-lens``: the latent language of translation (Wendler et al. 2024)."""

    method: ClassVar[str] = "logit-lens"

    source: str = option("fr", "language of the words to translate")
    target: str = option("zh", "language of the answers (compared with English)")
    n_shots: int = option(4, "translation examples per prompt", minimum=0)
    seed: int = option(0, "seed of the examples' choice")
    max_items: int | None = option(None, "first N built-in words (default: all)", minimum=1)
    keep_copies: bool = option(
        False, "keep items whose source word shares a token with the English word"
    )
    batch_size: int = option(8, "prompts per forward pass", minimum=1)


def run(cfg: LogitLensConfig, context: Context) -> LatentLanguage:
    """The logit lens at the last position of translation prompts: target vs English."""
    from mlneurons.data import parallel
    from mlneurons.methods.readouts import latent_language

    with user_input():
        words = parallel.builtin_parallel_words(unique([cfg.source, cfg.target, parallel.ENGLISH]))
        if cfg.max_items:
            words = {lang: items[: cfg.max_items] for lang, items in words.items()}
    return latent_language(
        context.model(cfg),
        source=cfg.source,
        target=cfg.target,
        words=words,
        n_shots=cfg.n_shots,
        seed=cfg.seed,
        drop_copies=not cfg.keep_copies,
        batch_size=cfg.batch_size,
    )


def describe(result: LatentLanguage) -> list[str]:
    crossover = result.crossover_layer()
    return [
        f"logit lens at the last position of {result.n_shots}-shot {result.source} → "
        f"{result.target} translation prompts: {result.n_items} words ({result.n_dropped} "
        f"dropped: token sets overlap; {result.n_copies} dropped: the source word looks English)",
        f"{result.target} overtakes English from layer {crossover} on"
        if crossover is not None
        else f"{result.target} never stays above English",
    ]


def tables(result: LatentLanguage) -> list[Table]:
    rows = [
        [layer, f"{t:.4f}", f"{e:.4f}"]
        for layer, (t, e) in enumerate(zip(result.p_target.tolist(), result.p_english.tolist()))
    ]
    return [Table(["layer", f"P({result.target})", "P(en)"], rows, details=True)]


SPEC = Command(
    name="logit-lens",
    title="Latent language: the logit lens (Wendler et al. 2024)",
    config=LogitLensConfig,
    result="mlneurons.methods.readouts:LatentLanguage",
    run=run,
    describe=describe,
    figures=plot("logit_lens.png", "plot_latent_language"),
    tables=tables,
    step=Step(
        budgets={
            "default": {"source": "fr", "target": "zh"},
            "full": {"source": "fr", "target": "zh"},
        }
    ),
)
