"""``mlneurons script-controls``: LAPE on original, romanised and word-shuffled text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlneurons.config import Config, option
from mlneurons.data.controls import Control
from mlneurons.interfaces.commands.inputs import user_input
from mlneurons.interfaces.spec import Command, Context, Step, Table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.methods.script_controls import ScriptControlsResult


@dataclass(frozen=True)
class ScriptControlsConfig(Config):
    """``mlneurons script-controls``: do language neurons follow the script (Verma et al.)?"""

    method: ClassVar[str] = "script-controls"

    languages: Sequence[str] = option(("en", "es", "ru", "zh", "ja"), "comma-separated languages")
    corpus: str = option("builtin", "'builtin' (default) or a folder of {lang}.txt files")
    controls: Sequence[Control] = option(
        ("original", "romanised", "shuffled"), "controls to run (original always runs)"
    )
    tokens_per_language: int = option(8192, "token budget per language and control", minimum=1)
    seq_len: int = option(256, "tokens per packed row", minimum=2)
    batch_size: int = option(8, "rows per forward pass", minimum=1)
    top_rate: float = option(0.01, "LAPE top_rate", rate=True)
    seed: int = option(0, "seed of the word shuffles")


def run(cfg: ScriptControlsConfig, context: Context) -> ScriptControlsResult:
    """LAPE under each control; overlaps per language with their chance levels."""
    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.methods.script_controls import script_controls

    options: dict[str, Any] = {
        "seq_len": cfg.seq_len,
        "tokens_per_language": cfg.tokens_per_language,
    }
    if cfg.corpus == "builtin":
        corpus = MultilingualCorpus.builtin(list(cfg.languages), **options)
    else:
        with user_input():
            corpus = MultilingualCorpus.from_files(cfg.corpus, **options)
        corpus = corpus.subset(list(cfg.languages))
    return script_controls(
        context.model(cfg),
        corpus,
        controls=cfg.controls,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        top_rate=cfg.top_rate,
    )


def describe(result: ScriptControlsResult) -> list[str]:
    lines = []
    for pair, rows in result.overlaps().items():
        first, second = pair.split("~")
        parts = []
        for lang, row in rows.items():
            jaccard = "–" if row["jaccard"] is None else f"{row['jaccard']:.2f}"
            unchanged = (
                " (text unchanged)"
                if second == "romanised" and lang not in result.romanised
                else ""
            )
            chance = "above chance" if row["p_holm"] < 0.05 else "not above chance"
            parts.append(
                f"{lang} {row['overlap']} shared of {row['a']}/{row['b']}, Jaccard {jaccard}, "
                f"chance {row['chance']['expected']:.1f} ({chance}){unchanged}"
            )
        lines.append(f"{first} vs {second}: " + "; ".join(parts))
    lines.append(
        "chance: the overlap of random sets of the same sizes among "
        f"{result.population} MLP neurons (hypergeometric; Holm across languages, 5%)"
    )
    return lines


def tables(result: ScriptControlsResult) -> list[Table]:
    rows = []
    for pair, per in result.overlaps().items():
        for lang, row in per.items():
            rows.append([
                pair.replace("~", " vs "), lang, row["a"], row["b"], row["overlap"],
                "–" if row["jaccard"] is None else f"{row['jaccard']:.2f}",
                f"{row['chance']['expected']:.1f}", f"{row['p_holm']:.2g}",
            ])  # fmt: skip
    caption = (
        "LAPE neurons per language under each control; chance = the hypergeometric "
        "expectation of the overlap, p = its Holm-adjusted tail probability across languages."
    )
    header = [
        "controls",
        "language",
        "neurons A",
        "neurons B",
        "shared",
        "Jaccard",
        "chance",
        "p (Holm)",
    ]
    return [Table(header, rows, caption)]


def figures(result: ScriptControlsResult, cfg: Any, out: Path) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    return {"script_controls.png": lambda: plots.plot_script_controls(result)}


SPEC = Command(
    name="script-controls",
    title="Script and word-order controls of LAPE (Verma et al.)",
    config=ScriptControlsConfig,
    result="mlneurons.methods.script_controls:ScriptControlsResult",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(
        budgets={
            "default": {"languages": ("en", "ru", "zh"), "tokens_per_language": 2048},
            "full": {},
        }
    ),
)
