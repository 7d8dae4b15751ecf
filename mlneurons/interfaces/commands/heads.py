"""``mlneurons heads``: attention heads as language units (LAHIS, Liu et al. AAAI 2026)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mlneurons.config import Config, option
from mlneurons.errors import UserError
from mlneurons.interfaces.commands.inputs import uncertainty, unique, user_input
from mlneurons.interfaces.spec import Command, Context, Step, Table

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.methods.heads import HeadsResult


@dataclass(frozen=True)
class HeadsConfig(Config):
    """``mlneurons heads``: head importance per language, language-specific and general
    heads, and their deactivation against random heads of the same layers."""

    method: ClassVar[str] = "heads"

    languages: Sequence[str] = option(("en", "es", "ru", "zh", "ja"), "comma-separated languages")
    corpus: str = option(
        "builtin", "text for the importance: 'builtin' (its training split) or a folder of "
        "{lang}.txt files",
    )  # fmt: skip
    heldout: str = option(
        "builtin", "text for the deactivation: 'builtin' (its held-out split), a folder of "
        "{lang}.txt files, or 'none' (no deactivation)",
    )  # fmt: skip
    tokens_per_language: int = option(2048, "importance: tokens per language", minimum=1)
    heldout_tokens_per_language: int = option(
        1024, "deactivation: held-out tokens per language", minimum=1
    )
    seq_len: int = option(64, "tokens per row (rows are the bootstrap's items)", minimum=2)
    batch_size: int = option(4, "rows per forward and backward pass", minimum=1)
    top_rate: float = option(
        0.1, "share of all heads among each language's candidates (LAHIS: 0.04)", rate=True
    )
    shared_min: int = option(
        2, "a head among the candidates of this many languages is general (LAHIS: 4)", minimum=2
    )
    control_draws: int = option(
        2, "draws of the random-head control (same layers; 0: none)", minimum=0
    )
    seed: int = option(0, "seed of the controls (draw d: seed + d)")

    def check(self) -> None:
        languages = unique(self.languages)
        if len(languages) < 2:
            raise UserError(f"languages={','.join(languages)} names one; heads compare two or more")
        if self.shared_min > len(languages):
            raise UserError(
                f"shared_min={self.shared_min} is more than the {len(languages)} languages; "
                f"choose 2..{len(languages)}"
            )


def _text(where: str, languages: list[str], split: str, tokens: int, seq_len: int) -> Any:
    from mlneurons.data.corpus import MultilingualCorpus

    options: dict[str, Any] = {"seq_len": seq_len, "tokens_per_language": tokens}
    with user_input():
        if where == "builtin":
            return MultilingualCorpus.builtin(languages, split=split, **options)
        return MultilingualCorpus.from_files(where, **options).subset(languages)


def corpora(cfg: HeadsConfig) -> tuple[MultilingualCorpus, MultilingualCorpus | None]:
    """The importance text and the held-out text (None with ``--heldout none``)."""
    languages = unique(cfg.languages)
    corpus = _text(cfg.corpus, languages, "train", cfg.tokens_per_language, cfg.seq_len)
    heldout = None
    if cfg.heldout != "none":
        heldout = _text(
            cfg.heldout, corpus.languages, "heldout", cfg.heldout_tokens_per_language, cfg.seq_len
        )
    return corpus, heldout


def run(cfg: HeadsConfig, context: Context) -> HeadsResult:
    """Importance on the corpus, selection, deactivation on the held-out text."""
    from mlneurons.methods.heads import language_heads

    corpus, heldout = corpora(cfg)  # read and checked before the model loads
    return language_heads(
        context.model(cfg),
        corpus,
        heldout,
        top_rate=cfg.top_rate,
        shared_min=cfg.shared_min,
        control_draws=cfg.control_draws,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        how=uncertainty(cfg),
    )


def head_name(head: Sequence[int]) -> str:
    """``L7 H1``."""
    return f"L{int(head[0])} H{int(head[1])}"


def _names(heads: Sequence[Sequence[int]]) -> str:
    return ", ".join(head_name(h) for h in heads) or "none"


def _significance(cell: dict[str, Any]) -> str:
    from mlneurons.evaluation.uncertainty import NOT_SIGNIFICANT

    if "p_holm" not in cell or cell["p_holm"] != cell["p_holm"]:  # no control, or too few rows
        return "untested"
    return f"p {cell['p_holm']:.2g} (Holm)" if cell["significant"] else NOT_SIGNIFICANT


def describe(result: HeadsResult) -> list[str]:
    heads, importance = result.heads, result.importance
    rows = {lang: len(n) for lang, n in importance.tokens.items()}
    constants = heads.constants
    lines = [
        f"importance (LAHIS): mean |dL/dm| of a soft mask on each of {heads.n_layers} x "
        f"{heads.n_heads} heads, over {min(rows.values())} rows per language; candidates: "
        f"the top {constants['per_language']} per language (top_rate {constants['top_rate']:g})",
        f"general heads (candidates of >= {constants['shared_min']} languages): "
        f"{_names(heads.general)}",
    ]
    for lang in heads.languages:
        specific = heads.specific[lang]
        shown = [
            f"{head_name(h)} {importance.interval(lang, (h[0], h[1]), result.how).text('.3g')}"
            for h in specific
        ]
        lines.append(f"{lang}-specific heads: " + ("; ".join(shown) or "none"))
    deactivation = result.deactivation
    if deactivation is None:
        return lines
    cells = deactivation.cells(result.how)
    draws = len(deactivation.control)
    for lang in deactivation.languages:
        cell = cells[lang][lang]
        if not deactivation.heads[lang]:
            lines.append(f"{lang}: no language-specific heads to deactivate")
            continue
        parts = [
            f"{lang}: its {len(deactivation.heads[lang])} head(s) off, own perplexity "
            f"{cell['change'].text('+.1%')}"
        ]
        if "control" in cell:
            parts.append(
                f"random heads of the same layers ({draws} draw{'s' * (draws != 1)}) "
                f"{cell['control'].text('+.1%')}; "
                f"difference {cell['difference'].text('+.1%')}, {_significance(cell)}"
            )
        others = [c for c in deactivation.languages if c != lang]
        if others:
            worst = max(others, key=lambda c: cells[lang][c]["change"].value)
            parts.append(
                f"other languages at most {worst} {cells[lang][worst]['change'].text('+.1%')}"
            )
        lines.append("; ".join(parts))
    return lines


def tables(result: HeadsResult) -> list[Table]:
    heads, importance, how = result.heads, result.importance, result.how
    selection = [
        [
            lang,
            _names(heads.specific[lang]),
            "; ".join(
                importance.interval(lang, (h[0], h[1]), how).text(".3g")
                for h in heads.specific[lang]
            )
            or "–",
            _names(heads.candidates[lang]),
        ]
        for lang in heads.languages
    ]
    found = [
        Table(
            ["language", "specific heads", "importance [CI]", "candidates"],
            selection,
            f"LAHIS importance (mean |dL/dm| over rows, bootstrap {how.confidence:.0%} "
            f"intervals over rows); general heads: {_names(heads.general)}.",
        )
    ]
    deactivation = result.deactivation
    if deactivation is None:
        return found
    cells = deactivation.cells(how)
    rows, matrix = [], []
    for lang in deactivation.languages:
        cell = cells[lang][lang]
        control = cell.get("control")
        rows.append(
            [
                lang,
                _names(deactivation.heads[lang]),
                f"{deactivation.perplexity(lang):.1f}",
                cell["change"].text("+.1%"),
                "–" if control is None else control.text("+.1%"),
                "–" if "difference" not in cell else cell["difference"].text("+.1%"),
                "–"
                if "p_holm" not in cell
                else _significance(cell).replace("not significant", "n.s."),
            ]
        )
        for column in deactivation.languages:
            other = cells[lang][column]
            matrix.append(
                [
                    lang,
                    column,
                    other["change"].text("+.1%"),
                    "–" if "control" not in other else other["control"].text("+.1%"),
                    "–" if "p_holm" not in other else f"{other['p_holm']:.2g}",
                ]
            )
    caption = (
        f"Held-out perplexity with each language's specific heads zeroed (hook_z), against as "
        f"many random heads of the same layers (mean over {len(deactivation.control)} "
        "draw(s)); "
        f"{how.confidence:.0%} bootstrap intervals over held-out rows; p: the change minus the "
        "control, two-sided bootstrap, Holm across every cell of the matrix."
    )
    return [
        *found,
        Table(
            [
                "language",
                "heads off",
                "baseline ppl",
                "own change",
                "control",
                "difference",
                "test",
            ],
            rows,
            caption,
        ),
        Table(
            ["heads of", "evaluated", "change", "control", "p (Holm)"],
            matrix,
            "Every cell of the deactivation matrix.",
            details=True,
        ),
    ]


def figures(result: HeadsResult, cfg: HeadsConfig, out: Path) -> dict[str, Callable[[], Figure]]:
    from mlneurons.interfaces import plots

    name = result.model.get("name", "")
    drawn = {
        "heads_importance.png": lambda: plots.plot_head_importance(
            result, title=f"Head importance per language: {name}"
        )
    }
    if result.deactivation is not None:
        drawn["heads_deactivation.png"] = lambda: plots.plot_head_deactivation(
            result, title=f"Perplexity with language-specific heads off: {name}"
        )
    return drawn


SPEC = Command(
    name="heads",
    title="Attention heads as language units (LAHIS, Liu et al. 2026)",
    config=HeadsConfig,
    result="mlneurons.methods.heads:HeadsResult",
    run=run,
    describe=describe,
    figures=figures,
    tables=tables,
    step=Step(
        budgets={
            "default": {
                "languages": ("en", "ru", "zh"),
                "tokens_per_language": 640,
                "heldout_tokens_per_language": 320,
                "seq_len": 33,
                "control_draws": 1,
            },
            "full": {},
        }
    ),
)
