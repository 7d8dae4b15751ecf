"""``mlneurons logit-lens``: the latent language of translation (Wendler et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import Config, option
from mlneurons.interfaces.commands.inputs import uncertainty, unique, user_input
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
        uncertainty=uncertainty(cfg),
    )


def crossover_text(result: LatentLanguage) -> str:
    """``from layer 17 on (95% CI: layers 16 to never, bootstrap over the 151 words)``."""
    found = result.crossover_interval()
    never = result.n_layers

    def layer(x: float) -> str:
        return "never" if x >= never else f"layer {x:.0f}"

    return (
        f"{found.confidence:.0%} CI: {layer(found.lo)} to {layer(found.hi)}, bootstrap over the "
        f"{result.n_items} words"
    )


def describe(result: LatentLanguage) -> list[str]:
    crossover = result.crossover_layer()
    differences = result.intervals()["difference"]
    unclear = [layer for layer, d in enumerate(differences) if not d.excludes(0.0)]
    lines = [
        f"logit lens at the last position of {result.n_shots}-shot {result.source} → "
        f"{result.target} translation prompts: {result.n_items} words ({result.n_dropped} "
        f"dropped: token sets overlap; {result.n_copies} dropped: the source word looks English)",
        (
            f"{result.target} overtakes English from layer {crossover} on"
            if crossover is not None
            else f"{result.target} never stays above English"
        )
        + f" ({crossover_text(result)})",
    ]
    if unclear:
        lines.append(
            f"layers where the words do not tell whether {result.target} or English leads "
            f"(the interval of P({result.target}) - P(en) holds 0): " + ", ".join(map(str, unclear))
        )
    return lines


def tables(result: LatentLanguage) -> list[Table]:
    found = result.intervals()
    rows = []
    for layer, (t, e, d) in enumerate(
        zip(found["p_target"], found["p_english"], found["difference"])
    ):
        flag = "" if d.excludes(0.0) else " n.s."
        rows.append([layer, t.text(".3g"), e.text(".3g"), d.text("+.3g") + flag])
    how = result.uncertainty
    caption = (
        f"Mean over the {result.n_items} words with {how.confidence:.0%} percentile bootstrap "
        f"intervals over them ({how.samples} resamples, seed {how.seed}); n.s.: the "
        "difference's interval holds 0 (per layer, not adjusted across layers)."
    )
    header = ["layer", f"P({result.target})", "P(en)", f"P({result.target}) - P(en)"]
    return [Table(header, rows, caption, details=True)]


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
