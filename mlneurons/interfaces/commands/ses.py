"""``mlneurons ses``: sentence-embedding similarity of parallel sentences per layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from mlneurons.config import Config, option
from mlneurons.interfaces.commands.inputs import uncertainty, user_input
from mlneurons.interfaces.spec import Command, Context, Step, Table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.methods.lape import LanguageNeurons
    from mlneurons.methods.readouts import SentenceSimilarity


@dataclass(frozen=True)
class SesConfig(Config):
    """``mlneurons ses``: layer-wise sentence-embedding similarity (Tang et al. 2024)."""

    method: ClassVar[str] = "ses"

    languages: Sequence[str] = option(("en", "es", "de", "zh", "ja"), "comma-separated languages")
    sentences: int = option(40, "built-in parallel sentences per language", minimum=1)
    center: bool = option(False, "subtract each layer's mean embedding before the cosines")
    neurons: str | None = option(
        None, "LAPE neurons to plot beside it (default: OUT's neurons.json when there is one)"
    )
    batch_size: int = option(8, "sentences per forward pass", minimum=1)


def run(cfg: SesConfig, context: Context) -> SentenceSimilarity:
    """Mean-pooled residual states of parallel sentences, their cosines per layer."""
    from mlneurons.data import parallel
    from mlneurons.methods.readouts import sentence_similarity

    with user_input():
        sentences = parallel.builtin_parallel_sentences(cfg.languages, n=cfg.sentences)
    neurons = _neurons(cfg, context.out)  # read before the model loads
    model = context.model(cfg)
    if neurons is not None:
        with user_input():
            neurons.check_fits(model)
    return sentence_similarity(
        model,
        sentences,
        center=cfg.center,
        batch_size=cfg.batch_size,
        uncertainty=uncertainty(cfg),
    )


def _neurons(cfg: SesConfig, out: Path | None) -> LanguageNeurons | None:
    """The LAPE neurons of ``cfg.neurons``, else of ``out`` (a report's), else None."""
    from mlneurons.methods.lape import NEURONS_FILE, LanguageNeurons

    where = Path(cfg.neurons) if cfg.neurons else out
    if where is None or not (cfg.neurons or (where / NEURONS_FILE).exists()):
        return None
    with user_input():
        return LanguageNeurons.load(where)


def describe(result: SentenceSimilarity) -> list[str]:
    mean = result.mean_offdiagonal().tolist()
    found = result.mean_offdiagonal_intervals()
    peak, ties = result.peak()
    value = f"{mean[peak]:.3f}" if found is None else found[peak].text(".3f")
    lines = [
        f"mean cosine of the mean-pooled residual states of {result.n_sentences} parallel "
        f"sentences over every pair of {', '.join(result.languages)}: highest at layer {peak} "
        f"({value})"
    ]
    if found is not None:
        how = result.uncertainty
        lines[0] += f"; {how.confidence:.0%} intervals: bootstrap over the sentences"
        lines.append(
            "layers not distinguishable from the peak (paired bootstrap over sentences): "
            + (", ".join(map(str, ties)) if ties else "none")
        )
    lines.append(
        "per layer: " + " ".join(f"{layer}:{value:.3f}" for layer, value in enumerate(mean))
    )
    return lines


def tables(result: SentenceSimilarity) -> list[Table]:
    mean = result.mean_offdiagonal().tolist()
    found = result.mean_offdiagonal_intervals()
    peak, ties = result.peak()
    rows = []
    for layer, value in enumerate(mean):
        shown = f"{value:.3f}" if found is None else found[layer].text(".3f")
        mark = "peak" if layer == peak else "n.s. from the peak" if layer in ties else ""
        rows.append([layer, shown, mark])
    caption = (
        "Tang et al. find it high in the middle layers, where language neurons are few, and "
        "low at the bottom and top, where they concentrate (bars)."
    )
    if found is not None:
        how = result.uncertainty
        caption += (
            f" {how.confidence:.0%} percentile bootstrap intervals over the {result.n_sentences} "
            f"sentences ({how.samples} resamples, seed {how.seed}); n.s. from the peak: the "
            "paired bootstrap interval of the difference to the peak layer holds 0."
        )
    return [Table(["layer", "SES", ""], rows, caption, details=True)]


def figures(
    result: SentenceSimilarity, cfg: SesConfig, out: Path
) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    return {"ses.png": lambda: plots.plot_sentence_similarity(result, neurons=_neurons(cfg, out))}


SPEC = Command(
    name="ses",
    title="Sentence-embedding similarity per layer (Tang et al. 2024)",
    config=SesConfig,
    result="mlneurons.methods.readouts:SentenceSimilarity",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(
        budgets={
            "default": {"languages": ("en", "es", "de", "zh", "ja")},
            "full": {"languages": ("en", "fr", "es", "de", "zh", "ja", "ru", "ar", "hi")},
        },
        needs=("lape",),
    ),
)
