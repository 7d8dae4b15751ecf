"""``mlneurons failure-modes``: facts right in English and wrong in another language, split
into recall and translation failures by the logit lens (Lu et al. 2025)."""

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
from mlneurons.methods.failure_modes import RiseCriterion

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.methods.failure_modes import FailureModes


@dataclass(frozen=True)
class FailureModesConfig(ReuseProbeConfig):
    """``mlneurons failure-modes``: recall vs translation failures (Lu et al. 2025)."""

    method: ClassVar[str] = "failure-modes"

    criterion: RiseCriterion = option(
        "rank",
        "when the English answer 'rises' in a middle layer: rank (its best token enters the "
        "vocabulary's top-k) or probability (above the language's answer)",
    )
    top_k: int = option(10, "the rank criterion's k", minimum=1)
    band_start: float = option(0.25, "the middle band's first layer, as a share of the depth")
    band_end: float = option(0.75, "the middle band's end, as a share of the depth")

    def check(self) -> None:
        super().check()
        if not 0 <= self.band_start < self.band_end <= 1:
            raise UserError(
                f"band_start={self.band_start} and band_end={self.band_end} need "
                "0 <= start < end <= 1, e.g. 0.25 and 0.75"
            )


def run(cfg: FailureModesConfig, context: Context) -> FailureModes:
    """The logit lens at the prediction position of each fact right in English only."""
    from mlneurons.methods.failure_modes import failure_modes

    facts, model, probing = facts_and_probing(cfg, context)
    context.only_rank_0()
    return failure_modes(
        model,
        facts,
        probing,
        criterion=cfg.criterion,
        top_k=cfg.top_k,
        band=(cfg.band_start, cfg.band_end),
        batch_size=cfg.batch_size,
        uncertainty=uncertainty(cfg),
    )


def _rule(result: FailureModes) -> str:
    layers = result.band()
    where = f"layers {layers[0]}-{layers[-1]} of {result.n_layers}"
    if result.settings.get("criterion", "rank") == "rank":
        return f"its best token ranks in the top {result.settings.get('top_k', 10)} in {where}"
    return f"its probability exceeds the language's answer's in one of {where}"


def describe(result: FailureModes) -> list[str]:
    lines = [
        f"facts right in {result.pivot} and wrong in another language (Lu et al.): a "
        f"translation failure when the {result.pivot} answer rises at the prediction position "
        f"({_rule(result)}), a recall failure when it never does; share of translation failures:"
    ]
    shares = result.shares()
    for lang in result.languages:
        row = shares[lang]
        aside = f"; {row['shared']} set aside (answers share a token)" if row["shared"] else ""
        lines.append(f"{lang}: {result.share_text(lang)} ({row['recall']} recall){aside}")
    if not result.items:
        lines.append(
            f"no fact is right in {result.pivot} and wrong elsewhere with distinct answers"
        )
    return lines


def tables(result: FailureModes) -> list[Table]:
    shares = result.shares()
    rows = [
        [
            lang,
            shares[lang]["translation"],
            shares[lang]["recall"],
            shares[lang]["shared"],
            shares[lang]["share"].text() if shares[lang]["share"] else "–",
        ]
        for lang in result.languages
    ]
    header = ["language", "translation failures", "recall failures", "set aside"]
    caption = f"Rises = {_rule(result)}; share with its Wilson interval."
    items = [
        [
            item["lang"],
            item["uuid"],
            item["english"],
            item["gold"],
            item["predicted"],
            mode,
            int(result.rank_english[i][result.band()].min()),
            f"{float(result.p_english[i][result.band()].max()):.3g}",
        ]
        for i, (item, mode) in enumerate(zip(result.items, result.modes()))
    ]
    item_header = ["language", "fact", "English answer", "gold", "predicted", "failure"]
    item_header += ["best rank in band", "max P(English) in band"]
    return [
        Table([*header, "translation share"], rows, caption),
        Table(item_header, items, "Per failure.", details=True),
    ]


def plot_failure_modes(result: FailureModes, *, title: str = "") -> Figure:
    """Left: per language, recall vs translation failures (counts). Right: mean logit-lens
    probability per layer of the English answer and the language's answer over the
    failures, the middle band shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2)
    shares = result.shares()
    languages = result.languages
    translation = [shares[lang]["translation"] for lang in languages]
    recall = [shares[lang]["recall"] for lang in languages]
    left.bar(languages, translation, color="C2", label="translation failure")
    left.bar(languages, recall, bottom=translation, color="C3", label="recall failure")
    left.set_ylabel("facts right in English, wrong here")
    left.legend(fontsize=8)
    left.set_title("Where the fact got lost")
    if result.items:
        layers = list(range(result.n_layers))
        right.plot(layers, result.p_english.mean(0).tolist(), color="C0", marker="o", ms=3,
                   label="English answer")  # fmt: skip
        right.plot(layers, result.p_answer.mean(0).tolist(), color="C3", marker="o", ms=3,
                   label="the language's answer")  # fmt: skip
        band = result.band()
        right.axvspan(band[0] - 0.5, band[-1] + 0.5, color="grey", alpha=0.15, label="middle band")
        right.legend(fontsize=8)
    right.set_xlabel("layer")
    right.set_ylabel("probability (logit lens), mean over failures")
    right.set_title(f"{len(result.items)} failures")
    if title:
        fig.suptitle(title)
    return fig


def figures(result: FailureModes, cfg: Any, out: Path) -> dict[str, Callable[[], Figure]]:
    return {"failure_modes.png": lambda: plot_failure_modes(result)}


SPEC = Command(
    name="failure-modes",
    title="Recall vs translation failures (Lu et al. 2025)",
    config=FailureModesConfig,
    result="mlneurons.methods.failure_modes:FailureModes",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(budgets={"default": FACTS, "full": FULL_FACTS}, reuse="probe", needs=("probe",)),
)
