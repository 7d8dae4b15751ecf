"""Figures: where people would rather look than read."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from mlneurons.evaluation.uncertainty import Estimate, Uncertainty
from mlneurons.methods.consistency import ConsistencyResult
from mlneurons.methods.deactivation import ChangeTest, MethodComparison, PerplexityMatrix
from mlneurons.methods.heads import HeadsResult
from mlneurons.methods.lape import LanguageNeurons, OverlapChance, SelectionStability
from mlneurons.methods.lrp2 import LRP2Result
from mlneurons.methods.probeless import FactNeurons
from mlneurons.methods.probing.result import ProbeResult
from mlneurons.methods.readouts import LatentLanguage, SentenceSimilarity
from mlneurons.methods.script_controls import ScriptControlsResult
from mlneurons.methods.steering import DEGENERATE, FallbackCurve, SteeringSweep, SweepPoint
from mlneurons.methods.steering_comparison import MEASURE_LABELS, MEASURES, SteeringComparison
from mlneurons.methods.tracing import CATEGORY_PREFIX, CODES, NAMING, OTHERS, SHARED, TracingResult


def _subplots(*grid: int, figsize: tuple[float, float], **options: Any) -> tuple[Figure, Any]:
    """A new Figure (not registered with pyplot, so no global backend is touched) and its axes."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*grid, **options)


def _on_dark(values: torch.Tensor) -> torch.Tensor:
    """Cells in the lower 60% of the colour range (dark in viridis), where text goes white."""
    finite = values[torch.isfinite(values)]
    if not len(finite):
        return torch.zeros_like(values, dtype=torch.bool)
    low, high = float(finite.min()), float(finite.max())
    return ~(values > low + 0.6 * (high - low))


def _annotated_image(
    ax: Any,
    values: torch.Tensor,
    texts: Sequence[Sequence[str | None]],
    white: torch.Tensor,
    labels: list[str],
    *,
    fontsize: int = 7,
    **imshow: Any,
) -> Any:
    """``values`` as a square image labelled on both axes, ``texts[i][j]`` written in each cell
    (none where None), in white where ``white`` (on dark cells)."""
    image = ax.imshow(values.numpy(), **imshow)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    for i, row in enumerate(texts):
        for j, text in enumerate(row):
            if text is not None:
                colour = "white" if bool(white[i, j]) else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)
    return image


def plot_layer_distribution(neurons: LanguageNeurons, *, title: str = "") -> Figure:
    """Language-specific neurons per layer, one line per language (Tang et al., Fig. 2)."""
    counts = neurons.counts_per_layer()
    fig, ax = _subplots(figsize=(8, 4.5))
    for i, lang in enumerate(neurons.languages):
        ax.plot(
            range(neurons.n_layers),
            counts[i].tolist(),
            marker="o",
            markersize=3,
            label=f"{lang} ({int(counts[i].sum())})",
        )
    ax.set_xlabel("layer")
    ax.set_ylabel("language-specific neurons")
    ax.set_xticks(range(0, neurons.n_layers, max(1, neurons.n_layers // 18)))
    ax.set_title(title or "LAPE neurons per layer")
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, fontsize=8, title="language (total)")
    return fig


def plot_heatmap(
    table: Mapping[str, Mapping[str, float | None]] | torch.Tensor,
    labels: list[str],
    *,
    title: str,
    colorbar: str,
    fmt: str = "{:.2f}",
    cmap: str = "viridis",
    notes: Mapping[tuple[str, str], str] | None = None,
) -> Figure:
    """A language x language matrix with its values written in the cells (and
    ``notes[(a, b)]`` on a second line, e.g. an interval)."""
    if not isinstance(table, torch.Tensor):  # None (e.g. no shared facts): empty, marked "–"
        rows = [[table[a][b] for b in labels] for a in labels]
        nan = float("nan")
        table = torch.tensor(
            [[nan if v is None else v for v in row] for row in rows], dtype=torch.float64
        )
    values = table.double()
    notes = notes or {}
    size = 0.6 if not notes else 1.0
    fig, ax = _subplots(figsize=(1.2 + size * len(labels), 0.8 + size * len(labels)))
    texts = [
        [
            "–" if v != v else fmt.format(v) + (f"\n{notes[(a, b)]}" if (a, b) in notes else "")
            for b, v in zip(labels, row)
        ]
        for a, row in zip(labels, values.tolist())
    ]
    white = _on_dark(values) & ~values.isnan()
    image = _annotated_image(
        ax, values, texts, white, labels, fontsize=7 if not notes else 6, cmap=cmap
    )
    fig.colorbar(image, ax=ax, shrink=0.8, label=colorbar)
    ax.set_title(title)
    return fig


def plot_overlap(
    neurons: LanguageNeurons,
    *,
    title: str = "",
    chance: OverlapChance | None = None,
    confidence: float = 0.95,
) -> Figure:
    """Neurons shared between languages (diagonal: each language's own count). With
    ``chance``, every other cell reads "shared / expected by chance" and "n.s." where the
    pair is not above chance at ``confidence`` (Holm-adjusted)."""
    if chance is None:
        return plot_heatmap(
            neurons.overlap(),
            neurons.languages,
            fmt="{:.0f}",
            colorbar="shared neurons",
            title=title or "Language overlap of LAPE neurons",
        )
    labels = neurons.languages
    values = neurons.overlap().double()
    expected = chance.expected()
    above = dict(zip(chance.pairs, chance.significant(1 - confidence)))
    above.update({(b, a): sig for (a, b), sig in list(above.items())})
    texts = [
        [
            f"{v:.0f}"
            if a == b
            else f"{v:.0f} / {expected[a, b]:.1f}" + ("" if above[a, b] else "\nn.s.")
            for b, v in zip(labels, row)
        ]
        for a, row in zip(labels, values.tolist())
    ]
    n = len(labels)
    fig, ax = _subplots(figsize=(1.6 + 0.85 * n, 1.2 + 0.7 * n))
    image = _annotated_image(ax, values, texts, _on_dark(values), labels, fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.8, label="shared neurons")
    ax.set_title(
        f"{title or 'Language overlap of LAPE neurons'}\n"
        f"cells: shared / expected by chance (hypergeometric per layer); "
        f"n.s.: not above chance (Holm, {confidence:.0%})",
        fontsize=9,
    )
    return fig


def plot_stability(stability: SelectionStability, *, title: str = "") -> Figure:
    """A LAPE selection's stability under resampled corpus rows: per language the mean
    Jaccard of a resample's set with the full set (bars, the percentile interval of the
    resamples as error bars), and how often each neuron of the full set is selected again."""
    languages = list(stability.jaccard)
    estimates = [stability.jaccard[lang] for lang in languages]
    level = f"{estimates[0].confidence:.0%}" if estimates else ""
    fig, (left, right) = _subplots(1, 2, figsize=(4.5 + 0.9 * len(languages), 4))
    means = [e.value for e in estimates]
    errors = [[e.value - e.lo for e in estimates], [e.hi - e.value for e in estimates]]
    left.bar(range(len(languages)), means, color="tab:blue", alpha=0.8)
    left.errorbar(range(len(languages)), means, yerr=errors, fmt="none", ecolor="black", capsize=4)
    left.set_xticks(range(len(languages)), languages)
    left.set_ylim(0, 1.05)
    left.set_ylabel(f"Jaccard with the full set (mean, {level} of resamples)")
    left.grid(axis="y", alpha=0.3)
    left.set_title("Set re-selected on resampled rows", fontsize=9)
    shares = stability.share_stable()
    for lang in languages:
        frequency = sorted(stability.frequency[lang], reverse=True)
        if not frequency:
            continue
        edges = [i / len(frequency) for i in range(len(frequency) + 1)]
        right.stairs(frequency, edges, baseline=None, label=f"{lang} ({shares[lang]:.0%})")
    right.axhline(stability.stable, color="grey", linestyle="--", linewidth=1)
    right.set_xlim(0, 1)
    right.set_ylim(0, 1.05)
    right.set_xlabel("the full set's neurons, most stable first")
    right.set_ylabel("share of resamples selecting the neuron")
    right.set_title(f"Selected in >= {stability.stable:.0%} of resamples (legend)", fontsize=9)
    right.grid(alpha=0.3)
    right.legend(fontsize=8, title="language (stable)", title_fontsize=8, loc="lower left")
    fig.suptitle(
        (title or "LAPE selection stability")
        + f"\n{stability.resamples} bootstrap resamples of the corpus rows, "
        f"{stability.rows_per_block} row(s) per block",
        fontsize=10,
    )
    return fig


def _interval_notes(
    tests: Mapping[tuple[str, str], Any], estimate: str
) -> dict[tuple[str, str], str]:
    """Per pair (both orders) its interval ``[lo, hi]``, and ``n.s.`` when the Holm-adjusted
    test does not put it above chance."""
    notes: dict[tuple[str, str], str] = {}
    for (a, b), test in tests.items():
        value = getattr(test, estimate)
        text = f"[{value.lo:.2f}, {value.hi:.2f}]" + ("" if test.above_chance() else " n.s.")
        notes[(a, b)] = notes[(b, a)] = text
    return notes


def plot_jaccard(result: ProbeResult, *, title: str = "") -> Figure:
    """Jaccard similarity of the sets of correctly predicted facts, per pair of languages,
    with its bootstrap interval; n.s.: not above the permutation null (Holm)."""
    name = result.model.get("name", "")
    level = f"{result.uncertainty().confidence:.0%}"
    default = (
        f"Shared correct facts (Jaccard, {level} CI): {name}\n"
        "n.s.: not above chance (permutation within relations, Holm)"
    )
    return plot_heatmap(
        result.jaccard(),
        result.languages,
        colorbar="Jaccard",
        title=title or default,
        notes=_interval_notes(result.jaccard_tests(), "jaccard"),
    )


def plot_fact_neuron_overlap(neurons: FactNeurons, *, title: str = "") -> Figure:
    """Mean Jaccard of the PROBELESS top-k neurons of the facts two languages both get right,
    with its bootstrap interval over those facts; n.s.: not above random top-k sets (Holm)."""
    level = f"{neurons.uncertainty().confidence:.0%}"
    default = (
        f"PROBELESS fact-neuron overlap (k={neurons.k}, {level} CI)\n"
        "n.s.: not above random top-k sets (hypergeometric, Holm)"
    )
    return plot_heatmap(
        neurons.overlap(),
        neurons.languages,
        colorbar="mean Jaccard of top-k",
        title=title or default,
        notes=_interval_notes(neurons.overlap_tests(), "overlap"),
    )


CONSISTENCY_MATRICES = {
    "rankc_corrected": ("chance-corrected RankC", "rankc"),
    "rankc": ("RankC", "rankc"),
    "coverlap": ("COverlap = Jaccard of correct facts", "coverlap"),
    "fact_neurons": ("PROBELESS fact-neuron overlap", "fact_neurons"),
}
"""What :func:`plot_consistency_matrix` draws: key -> (colour-bar label, order key)."""


def plot_consistency_matrix(result: ConsistencyResult, key: str, *, title: str = "") -> Figure:
    """A language x language matrix of :class:`ConsistencyResult` (``rankc``,
    ``rankc_corrected``, ``coverlap`` or ``fact_neurons``), its languages in the clustered
    order (average linkage, :func:`~mlneurons.evaluation.clustering.cluster_order`), with the
    bootstrap interval in each cell where there is one."""
    label, order = CONSISTENCY_MATRICES[key]
    labels = result.orders.get(order, result.languages)
    notes: dict[tuple[str, str], str] = {}
    if key == "fact_neurons":
        table = result.fact_neuron_overlap or {}
    else:
        table = result.matrix(key)
        for a in labels:
            for b in labels:
                estimate = result.estimate(a, b, key) if a != b else None
                if estimate is not None and estimate.has_interval:
                    notes[(a, b)] = f"[{estimate.lo:.2f}, {estimate.hi:.2f}]"
    name = result.model.get("name", "")
    return plot_heatmap(
        table,
        labels,
        colorbar=label,
        title=title or f"{label}: {name}\n(languages ordered by average-linkage clustering)",
        notes=notes,
    )


def plot_rankc(result: ConsistencyResult, *, title: str = "") -> Figure:
    """Chance-corrected RankC per pair of languages, clustered, with bootstrap intervals."""
    return plot_consistency_matrix(result, "rankc_corrected", title=title)


def _error_bars(estimates: Sequence[Any], scale: float = 100.0) -> list[list[float]]:
    """Matplotlib's ``yerr`` (distances below and above each value) of intervals; 0 where
    an estimate is None."""
    below = [0.0 if e is None else scale * (e.value - e.lo) for e in estimates]
    above = [0.0 if e is None else scale * (e.hi - e.value) for e in estimates]
    return [below, above]


def plot_p_at_1(result: ProbeResult, *, title: str = "") -> Figure:
    """P@1 per language, one bar per relation plus the macro average, with interval bars
    (Wilson per relation, cluster bootstrap for macro)."""
    table = result.p_at_1_intervals()
    level = f"{result.uncertainty().confidence:.0%}"
    keys = [*result.relations, "macro"]
    width = 0.8 / len(keys)
    fig, ax = _subplots(figsize=(1.5 + 0.7 * len(result.languages), 4))
    for k, key in enumerate(keys):
        xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(result.languages))]
        found = [table.get(lang, {}).get(key) for lang in result.languages]
        ax.bar(
            xs,
            [0.0 if e is None else 100 * e.value for e in found],
            width,
            yerr=_error_bars(found),
            error_kw={
                "elinewidth": 0.8,
                "capsize": 1.5,
                "ecolor": "0.6" if key == "macro" else "0.3",
            },
            label=key,
            color="black" if key == "macro" else None,
        )
    ax.set_xticks(range(len(result.languages)), result.languages)
    ax.set_ylabel(f"P@1 (%), {level} CI")
    ax.set_ylim(0, 105)
    ax.set_title(title or "Factual probing: P@1 per language and relation")
    ax.legend(fontsize=8, ncol=min(len(keys), 5), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_lrp2_grid(result: LRP2Result, language: str) -> Figure:
    """Dev P@1 of every (LIRP, LSRP) layer pair for one language; the selected pair is boxed
    in red, the runner-up dashed, with the paired test between them in the title."""
    grid = torch.tensor(
        [[float("nan") if v is None else 100 * v for v in row] for row in result.grid[language]]
    )
    labels = [str(layer) for layer in result.layers]
    fig, ax = _subplots(figsize=(2.5 + 0.6 * len(labels), 1.8 + 0.6 * len(labels)))
    texts = [[None if v != v else f"{v:.0f}" for v in row] for row in grid.tolist()]  # NaN: none
    image = _annotated_image(ax, grid, texts, _on_dark(grid), labels, fontsize=8, cmap="viridis")
    ax.set_xlabel("LSRP layer")
    ax.set_ylabel("LIRP layer")
    a, b = (result.layers.index(x) for x in result.selected[language])
    ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    title = f"LRP2 grid, {language} -> {result.pivot} -> {language}"
    other = result.runner_up.get(language)
    if other:
        c, d = (result.layers.index(x) for x in other["pair"])
        ax.add_patch(
            Rectangle(
                (d - 0.42, c - 0.42),
                0.84,
                0.84,
                fill=False,
                edgecolor="magenta",
                linewidth=2,
                linestyle=(0, (3, 2)),
            )
        )
        p = other["test"]["p_value"]
        word = "distinct from" if other["distinguishable"] else "not distinguishable from"
        title += f"\nselected (red) {word}\nrunner-up (dashed): exact McNemar p = {p:.2f} on dev"
    fig.colorbar(image, ax=ax, shrink=0.8, label="dev P@1 (%)")
    ax.set_title(title, fontsize=9)
    return fig


def plot_lrp2_p_at_1(result: LRP2Result, *, title: str = "") -> Figure:
    """Test P@1 before and after the projection per language, with Wilson interval bars and
    the exact McNemar p-value of each change (n.s.: not significant)."""
    tests = result.p_at_1_tests()
    languages = [lang for lang in result.languages if lang in tests]
    level = f"{result.uncertainty().confidence:.0%}"
    fig, ax = _subplots(figsize=(3.0 + 1.0 * len(languages), 4))
    for k, side in enumerate(("before", "after")):
        found = [getattr(tests[lang], side) for lang in languages]
        ax.bar(
            [i + (k - 0.5) * 0.38 for i in range(len(languages))],
            [100 * e.value for e in found],
            0.38,
            yerr=_error_bars(found),
            error_kw={"elinewidth": 0.8, "capsize": 3, "ecolor": "0.3"},
            label=side,
            color="0.7" if side == "before" else "tab:blue",
        )
    for i, lang in enumerate(languages):
        test = tests[lang]
        note = f"p = {test.p_value:.2f}" + ("" if test.significant() else "\nn.s.")
        ax.text(i, 103, note, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(f"test P@1 (%), {level} Wilson CI")
    ax.set_title(
        title or f"LRP2 via {result.pivot}: test P@1\nbefore and after (exact McNemar)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")  # long titles of small heatmaps stay whole
    return path


def format_increase(change: float) -> str:
    """A relative perplexity change: ``+48.2%``, or ``x1.6e+10`` past a thousandfold."""
    return f"{change:+.1%}" if change < 999 else f"x{1 + change:.2g}"


def format_change(value: float, interval: Estimate | None = None) -> str:
    """A relative change with its interval, ``+48.2% [+30.1%, +60.0%]`` (the value alone
    without one: a result saved before intervals)."""
    if interval is None:
        return format_increase(value)
    return (
        f"{format_increase(value)} [{format_increase(interval.lo)}, {format_increase(interval.hi)}]"
    )


def format_points(difference: Estimate) -> str:
    """A difference of two relative changes in percentage points with its interval,
    ``+57.4 pp [+40.0, +70.1]``."""

    def points(x: float) -> str:
        return f"{100 * x:+.1f}" if abs(x) < 999 else f"{100 * x:+.2g}"

    return f"{points(difference.value)} pp [{points(difference.lo)}, {points(difference.hi)}]"


def format_test(test: ChangeTest, *, short: bool = False) -> str:
    """``""`` for a significant difference, else ``not significant (p = 0.38)`` (``n.s.``
    with ``short``); p is Holm-adjusted across the table's family."""
    if test.significant():
        return ""
    return "n.s." if short else f"not significant (p = {test.adjusted:.2g})"


def _covers_zero(
    cells: dict[str, dict[str, Estimate]] | None, languages: list[str]
) -> torch.Tensor | None:
    """``[row, column]``: the cell's interval covers 0 (None without intervals)."""
    if cells is None:
        return None
    return torch.tensor([[not cells[r][c].excludes(0) for c in languages] for r in languages])


def _change_panels(
    panels: list[tuple[str, torch.Tensor]],
    languages: list[str],
    *,
    title: str,
    shared_scale: bool = True,
    uncertain: Sequence[torch.Tensor | None] = (),
    confidence: float | None = None,
) -> Figure:
    """One heatmap per panel of relative perplexity changes (rows deactivated, columns
    evaluated) coloured by log10(perplexity / baseline), on one colour scale or (not
    ``shared_scale``) one per panel. Cells where ``uncertain[panel]`` is set (the
    change's ``confidence`` interval covers 0) have their text in parentheses."""
    # colour on a log scale: changes span from a few percent to several thousand
    ratios = [torch.log10((1 + change).clamp(min=1e-6)) for _, change in panels]
    shared = max(float(r.abs().max()) for r in ratios) or 1.0
    size = 0.55 * len(languages) + 1.5
    width = size * len(panels) + (1 if shared_scale else len(panels))
    fig, axes = _subplots(1, len(panels), figsize=(width, size), squeeze=False)
    flags = list(uncertain) + [None] * (len(panels) - len(uncertain))
    for ax, ratio, (label, change), flag in zip(axes[0], ratios, panels, flags):
        bound = shared if shared_scale else float(ratio.abs().max()) or 1.0
        texts = [
            [
                f"({text})" if flag is not None and bool(flag[i, j]) else text
                for j, text in enumerate(
                    f"{100 * c:+.0f}" if c < 999 else format_increase(c) for c in row
                )
            ]
            for i, row in enumerate(change.tolist())
        ]
        image = _annotated_image(
            ax,
            ratio,
            texts,
            ratio.abs() > 0.6 * bound,
            languages,
            cmap="RdBu_r",
            vmin=-bound,
            vmax=bound,
            fontsize=7 if len(panels) < 4 else 6,
        )
        ax.set_xlabel("evaluated language")
        ax.set_ylabel("deactivated language")
        ax.set_title(label, fontsize=10)
        if not shared_scale:
            fig.colorbar(image, ax=ax, shrink=0.8)
    label = "log10(perplexity / baseline); cells: change in %"
    covers = ""
    if any(flag is not None for flag in flags) and confidence is not None:
        covers = f"\n(in parentheses: its {confidence:.0%} CI covers 0)"
    if shared_scale:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=label + covers)
    else:
        note = "colour: " + label + " (own scale per panel)" + covers
        fig.text(0.5, -0.02, note, ha="center", va="top")
    fig.suptitle(title)
    return fig


def plot_perplexity_matrix(matrix: PerplexityMatrix, *, title: str = "") -> Figure:
    """Relative perplexity change against baseline: deactivated languages vs the controls;
    a change whose interval covers 0 in parentheses."""
    kinds = [("language neurons deactivated", "deactivated")]
    if matrix.random_control:
        kinds.append(("random neurons, same layers", "random_control"))
    if matrix.matched_control:
        kinds.append(
            (f"matched control, mean of {matrix.matched['draws']} draws", "matched_control")
        )
    return _change_panels(
        [(label, matrix.relative_change(kind)) for label, kind in kinds],
        matrix.languages,
        title=title or "Perplexity after deactivating language neurons",
        uncertain=[_covers_zero(matrix.change_intervals(k), matrix.languages) for _, k in kinds],
        confidence=Uncertainty.of({"uncertainty": matrix.uncertainty}).confidence,
    )


def plot_own_changes(matrix: PerplexityMatrix, *, title: str = "") -> Figure:
    """Each language's own perplexity change (its neurons off, evaluated on itself) beside
    the controls', as perplexity / baseline on a log scale, with their intervals as error
    bars and every draw of the matched control as a dot (the null)."""
    tests = matrix.own_changes()
    languages = matrix.languages
    series: list[tuple[str, str, list[float], list[Estimate | None]]] = []
    own = matrix.relative_change().diagonal().tolist()
    series.append(
        (
            "own neurons off",
            "C3",
            own,
            [None if tests is None else tests[x].own.difference for x in languages],
        )
    )
    if matrix.random_control:
        uniform = matrix.relative_change("random_control").diagonal().tolist()
        series.append(
            (
                "uniform control",
                "C7",
                uniform,
                [None if tests is None else tests[x].uniform for x in languages],
            )
        )
    if matrix.matched_control:
        matched = matrix.relative_change("matched_control").diagonal().tolist()
        label = f"matched control (mean of {len(matrix.matched_draws())} draws)"
        series.append(
            (label, "C0", matched, [None if tests is None else tests[x].matched for x in languages])
        )
    fig, ax = _subplots(figsize=(1.6 + 0.9 * len(languages), 4.2))
    width = 0.8 / len(series)
    for k, (label, colour, values, intervals) in enumerate(series):
        x = [i + (k - (len(series) - 1) / 2) * width for i in range(len(languages))]
        heights = [1 + v for v in values]
        ax.bar(x, [h - 1 for h in heights], bottom=1, width=width, color=colour, label=label)
        if all(e is not None for e in intervals):
            low = [h - (1 + cast(Estimate, e).lo) for h, e in zip(heights, intervals)]
            high = [(1 + cast(Estimate, e).hi) - h for h, e in zip(heights, intervals)]
            ax.errorbar(x, heights, yerr=[low, high], fmt="none", ecolor="black", capsize=2, lw=1)
        if label.startswith("matched"):
            each = 1 + matrix.matched_draws().diagonal(dim1=1, dim2=2)  # [draw, language]
            for d in range(len(each)):
                ax.plot(
                    x,
                    each[d].tolist(),
                    "o",
                    color="black",
                    markersize=2.5,
                    label=None if d else "matched draws",
                )
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_ylabel("perplexity / baseline (log scale)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=7, loc="upper left")
    how = Uncertainty.of({"uncertainty": matrix.uncertainty})
    bars = (
        ""
        if tests is None
        else f"\nerror bars: {how.confidence:.0%} CI, paired bootstrap over rows"
    )
    ax.set_title(
        (title or "Each language's perplexity with its own neurons deactivated") + bars,
        fontsize=10,
    )
    return fig


def format_specificity(score: float | None) -> str:
    """A specificity score (:meth:`MethodComparison.specificity`), "–" when undefined."""
    return "–" if score is None else f"{score:.2f}"


def _specificity_text(score: float | None, interval: Estimate | None) -> str:
    if interval is None:
        return format_specificity(score)
    return f"{interval.value:.2f} [{interval.lo:.2f}, {interval.hi:.2f}]"


def plot_method_comparison(result: MethodComparison, *, title: str = "") -> Figure:
    """Tang et al.'s comparison of selectors: each method's deactivation matrix, titled
    with LAP's reading and its specificity (:meth:`MethodComparison.specificity`, this
    project's summary, not the paper's: the subtitle says so), with its interval; a change
    whose interval covers 0 in parentheses."""
    scores = result.specificity()
    intervals = result.specificity_intervals()
    panels = []
    for method in result.methods:
        kind = result.constants.get(method, {}).get("threshold_kind")
        name = method.upper() + (f" ({kind})" if kind else "")
        interval = None if intervals is None else intervals[method].score
        specificity = _specificity_text(scores[method]["score"], interval)
        panels.append((f"{name}: specificity* {specificity}", result.relative_change(method)))
    return _change_panels(
        panels,
        result.languages,
        title=title
        or "Deactivating each method's language neurons\n*specificity: own / (own + others) "
        "of the log-perplexity increases, this project's summary, not Tang et al.'s",
        shared_scale=False,
        uncertain=[
            _covers_zero(result.change_intervals(m), result.languages) for m in result.methods
        ],
        confidence=Uncertainty.of({"uncertainty": result.uncertainty}).confidence,
    )


def plot_specificity(result: MethodComparison, *, title: str = "") -> Figure:
    """Each method's specificity with its interval as an error bar; 0.5: every language
    is hurt alike, 1: only the deactivated one."""
    scores = result.specificity()
    intervals = result.specificity_intervals()
    methods = [m for m in result.methods if scores[m]["score"] is not None]
    fig, ax = _subplots(figsize=(6, 1.2 + 0.45 * len(result.methods)))
    y = list(range(len(methods)))
    values = [cast(float, scores[m]["score"]) for m in methods]
    ax.barh(y, values, color="C0", alpha=0.8, height=0.6)
    if intervals is not None:
        found = [intervals[m].score for m in methods]
        low = [v - cast(Estimate, e).lo for v, e in zip(values, found)]
        high = [cast(Estimate, e).hi - v for v, e in zip(values, found)]
        ax.errorbar(values, y, xerr=[low, high], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.axvline(0.5, color="grey", ls="--", lw=1, label="0.5: every language hurt alike")
    ax.set_yticks(y, [m.upper() for m in methods])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    how = Uncertainty.of({"uncertainty": result.uncertainty})
    bars = "" if intervals is None else f" (bars: {how.confidence:.0%} CI, bootstrap over rows)"
    ax.set_xlabel(
        "specificity: own / (own + others) of the log-perplexity increases" + bars, fontsize=8
    )
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    missing = [m for m in result.methods if scores[m]["score"] is None]
    note = f" (no score: {', '.join(missing)})" if missing else ""
    ax.set_title((title or "Specificity of each method's language neurons") + note, fontsize=10)
    return fig


TRACING_SEGMENTS: tuple[tuple[str, str], ...] = (
    ("present, correct", "#1a7f37"),
    (CATEGORY_PREFIX + SHARED, "#8fd18f"),
    (CATEGORY_PREFIX + NAMING, "#b7e4a7"),
    (CATEGORY_PREFIX + OTHERS, "#4cae4c"),
    ("present, wrong", "#e8833a"),
    ("absent, wrong", "#c0392b"),
    ("not in data", "#b0b0b0"),
)
"""The bars of :func:`plot_tracing`, in order, with their colours."""


def plot_tracing(result: TracingResult, *, title: str = "") -> Figure:
    """Stacked bars per language of the tracing code shares, absent-correct split by rule."""
    counts = result.breakdown()
    langs = result.languages
    totals = [sum(counts[lang][label] for label in CODES.values()) or 1 for lang in langs]
    fig, ax = _subplots(figsize=(8, 1.6 + 0.4 * len(langs)))
    left = [0.0] * len(langs)
    y = list(range(len(langs)))
    for label, color in TRACING_SEGMENTS:
        shares = [counts[lang][label] / total for lang, total in zip(langs, totals)]
        ax.barh(y, shares, left=left, color=color, label=label, edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, shares)]
    ax.set_yticks(y, [f"{lang} (n={len(result.codes.get(lang, {}))})" for lang in langs])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of facts")
    ax.set_title(title or "Knowledge tracing (Zhao et al., 2024)")
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return fig


SWEEP_PANELS: tuple[tuple[str, str], ...] = (
    ("target_rate", "answers in target language"),
    ("source_rate", "answers in source language"),
    ("degenerate_rate", "degenerate answers"),
    ("fluency_ppl", "fluency: perplexity (unsteered model)"),
)
"""The panels of :func:`plot_steering_sweep`: the measure and its axis label."""

_LINE_STYLES = ("-", "--", ":", "-.")


def _error(estimates: Sequence[Estimate | None], scale: float = 1.0) -> list[list[float]] | None:
    """``yerr`` of :meth:`Axes.errorbar` from estimates (distances below and above each
    value); None when any estimate is missing (results saved before intervals)."""
    found = [e for e in estimates if e is not None]
    if not found or len(found) < len(estimates):
        return None
    return [[scale * (e.value - e.lo) for e in found], [scale * (e.hi - e.value) for e in found]]


def plot_steering_sweep(sweep: SteeringSweep, *, title: str = "") -> Figure:
    """Target rate, source rate, degenerate share and fluency against α: one colour per
    mode, one line style per LAPE top rate, with error bars (Wilson intervals for rates, the
    bootstrap over questions for fluency); the unsteered answers as a grey line and band."""
    fig, axes = _subplots(2, 2, figsize=(10, 7), squeeze=False)
    modes = sweep.modes
    how = sweep.uncertainty
    top_rates = list(dict.fromkeys(p.top_rate for p in sweep.points))
    colours = {mode: f"C{i}" for i, mode in enumerate(modes)}
    offsets = {mode: 0.015 * (i - (len(modes) - 1) / 2) for i, mode in enumerate(modes)}

    def estimate(point: SweepPoint, key: str) -> Estimate | None:
        return point.fluency(how) if key == "fluency_ppl" else point.rate(key, how.confidence)

    for ax, (key, label) in zip(axes.flat, SWEEP_PANELS):
        rate = key != "fluency_ppl"
        scale = 100 if rate else 1
        for k, top_rate in enumerate(top_rates):
            for mode in modes:
                points = sorted(
                    (
                        p
                        for p in sweep.points
                        if p.mode == mode and p.top_rate == top_rate and getattr(p, key) is not None
                    ),
                    key=lambda p: cast(float, p.alpha),  # None only on the baseline
                )
                if not points:
                    continue
                alphas = [cast(float, p.alpha) for p in points]
                xs = [a * (1 + offsets[mode]) for a in alphas]  # apart, on the log axis too
                ax.errorbar(
                    xs,
                    [scale * getattr(p, key) for p in points],
                    yerr=_error([estimate(p, key) for p in points], scale),
                    marker="o",
                    markersize=4,
                    capsize=2,
                    elinewidth=0.8,
                    color=colours[mode],
                    linestyle=_LINE_STYLES[k % len(_LINE_STYLES)],
                    label=f"{mode}, top {top_rate:g} (n={points[0].n_neurons})",
                )
        base = getattr(sweep.baseline, key)
        if base is not None:
            ax.axhline(scale * base, color="grey", linestyle="--", linewidth=1)
            band = estimate(sweep.baseline, key)
            if band is not None:
                ax.axhspan(scale * band.lo, scale * band.hi, color="grey", alpha=0.12, lw=0)
        ax.set_xlabel("α")
        ax.set_ylabel(f"{label} (%)" if rate else label)
        if rate:
            ax.set_ylim(-3, 103)
        else:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=1))
    labels.append("unsteered (band: its interval)")
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    n = sweep.settings.get("n_questions", "")
    bars = f"bars: {how.confidence:.0%} CI (Wilson; fluency: bootstrap over questions)"
    fig.suptitle(title or f"Steering {sweep.source} -> {sweep.target} ({n} questions; {bars})")
    return fig


def plot_fallback_curve(curve: FallbackCurve, *, title: str = "") -> Figure:
    """Per share of deactivated neurons, each language's share of the answers with its
    Wilson interval (one line per answer language, side by side at each share)."""
    shown = [c for c in curve.categories if any(p.distribution[c] for p in curve.points)]
    how = curve.uncertainty
    fig, ax = _subplots(figsize=(2.5 + 1.1 * len(curve.points), 4.5))
    x = list(range(len(curve.points)))
    width = 0.5 / max(len(shown), 1)
    for i, category in enumerate(shown):
        colour = {DEGENERATE: "#404040", "unknown": "#b0b0b0"}.get(category, f"C{i % 10}")
        estimates = [p.interval(category, how.confidence) for p in curve.points]
        ax.errorbar(
            [v + (i - (len(shown) - 1) / 2) * width for v in x],
            [100 * p.distribution[category] for p in curve.points],
            yerr=_error(estimates, 100),
            marker="o",
            markersize=5,
            capsize=3,
            color=colour,
            label=category,
        )
    ax.set_xticks(x, [f"{p.share:.0%}\n({p.n_deactivated})" for p in curve.points])
    ax.set_xlabel(f"share of {curve.language} neurons deactivated ({curve.order} order)")
    ax.set_ylabel(f"share of answers (%, {how.confidence:.0%} Wilson CI)")
    ax.set_ylim(-3, 103)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="answer language")
    n = curve.settings.get("n_questions", "")
    default = f"Language fallback when {curve.language} neurons are deactivated ({n} questions)"
    ax.set_title(title or default)
    return fig


def plot_sentence_similarity(
    result: SentenceSimilarity,
    *,
    neurons: LanguageNeurons | None = None,
    pairs: bool = True,
    title: str = "",
) -> Figure:
    """Layer-wise sentence-embedding similarity (SES): the mean over pairs of languages, each
    pair thin behind it, and, given ``neurons``, the language-specific neurons per layer
    (all languages together) on a second axis (Tang et al. 2024, the figure that sets SES
    against the layer distribution of language neurons)."""
    layers = list(range(result.n_layers))
    fig, ax = _subplots(figsize=(8, 4.5))
    if pairs:
        for i, a in enumerate(result.languages):
            for b in result.languages[i + 1 :]:
                ax.plot(layers, result.pair(a, b).tolist(), color="grey", alpha=0.3, lw=0.8)
    ax.plot(
        layers,
        result.mean_offdiagonal().tolist(),
        color="C0",
        marker="o",
        markersize=3,
        lw=2,
        label=f"SES, mean of {len(result.languages)} languages' pairs",
    )
    found = result.mean_offdiagonal_intervals()
    if found is not None:
        level = f"{result.uncertainty.confidence:.0%}"
        ax.fill_between(
            layers,
            [e.lo for e in found],
            [e.hi for e in found],
            color="C0",
            alpha=0.25,
            lw=0,
            label=f"{level} CI, bootstrap over sentences",
        )
    ax.set_xlabel("layer")
    ax.set_ylabel("sentence embedding similarity (cosine)")
    ax.set_xticks(range(0, result.n_layers, max(1, result.n_layers // 18)))
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if neurons is not None:
        if neurons.n_layers != result.n_layers:
            raise ValueError(
                f"the neurons are of a model with {neurons.n_layers} layers, the SES of one "
                f"with {result.n_layers}"
            )
        twin = ax.twinx()
        counts = neurons.masks().any(0).sum(-1)  # a neuron of several languages counts once
        twin.bar(layers, counts.tolist(), color="C1", alpha=0.35, label="language neurons")
        twin.set_ylabel("language-specific neurons")
        ax.set_zorder(twin.get_zorder() + 1)
        ax.patch.set_visible(False)
        more = twin.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.legend(handles, labels, fontsize=8, loc="best")
    ax.set_title(title or f"Sentence embedding similarity per layer (n={result.n_sentences})")
    return fig


def plot_sentence_similarity_matrix(
    result: SentenceSimilarity, layer: int, *, title: str = ""
) -> Figure:
    """SES between every pair of languages at one layer."""
    if not -result.n_layers <= layer < result.n_layers:
        raise ValueError(f"layer {layer} is out of range 0..{result.n_layers - 1}")
    index = layer % result.n_layers
    return plot_heatmap(
        result.similarity[index],
        result.languages,
        colorbar="cosine",
        title=title or f"Sentence embedding similarity, layer {index}",
    )


def plot_latent_language(result: LatentLanguage, *, title: str = "") -> Figure:
    """Logit lens per layer: mean probability of the answer in the target language and in
    English, with bootstrap confidence bands over the words; the crossover layer is marked,
    its interval shaded (Wendler et al. 2024, their Fig. 2)."""
    layers = list(range(result.n_layers))
    fig, ax = _subplots(figsize=(8, 4.5))
    found = result.intervals()
    level = f"{result.uncertainty.confidence:.0%}"
    series = (
        (found["p_english"], "en (the English word)", "C0"),
        (found["p_target"], f"{result.target} (the answer)", "C3"),
    )
    for estimates, label, colour in series:
        ax.plot(layers, [e.value for e in estimates], color=colour, marker="o", markersize=3,
                label=label)  # fmt: skip
        ax.fill_between(layers, [e.lo for e in estimates], [e.hi for e in estimates],
                        color=colour, alpha=0.2, lw=0)  # fmt: skip
    crossover = result.crossover_layer()
    if crossover is not None:
        span = result.crossover_interval()
        ax.axvline(crossover, color="grey", ls="--", lw=1, label=f"crossover (layer {crossover})")
        ax.axvspan(span.lo - 0.5, min(span.hi, result.n_layers - 1) + 0.5, color="grey",
                   alpha=0.1, lw=0, label=f"crossover, {level} CI")  # fmt: skip
    ax.set_xlabel("layer")
    ax.set_ylabel(f"probability (logit lens; bands: {level} CI over words)")
    ax.set_xticks(range(0, result.n_layers, max(1, result.n_layers // 18)))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    default = (
        f"Latent language: {result.source} -> {result.target} "
        f"({result.n_items} words; dropped: {result.n_dropped} overlapping, {result.n_copies} copies)"
    )
    ax.set_title(title or default)
    return fig


def plot_steering_comparison(result: SteeringComparison, *, title: str = "") -> Figure:
    """One panel per measure (forcing, relevance, their harmonic mean, fluency): a bar per
    method with its interval, coloured by family (directions, neurons, unsteered in grey)."""
    methods = result.methods
    fig, axes = _subplots(
        1, len(MEASURES), figsize=(3.2 * len(MEASURES), 1.2 + 0.45 * len(methods))
    )
    colours = {"direction": "C0", "neurons": "C1"}
    ys = list(range(len(methods)))[::-1]
    for ax, measure in zip(axes, MEASURES):
        rate = measure != "fluency"
        for y, name in zip(ys, methods):
            estimate = result.score(name, measure)
            if not math.isfinite(estimate.value):
                continue
            k = 100.0 if rate else 1.0
            family = result.outcome(name).family
            ax.barh(y, k * estimate.value, color=colours.get(family, "#b0b0b0"), height=0.7)
            if estimate.has_interval:
                below, above = estimate.value - estimate.lo, estimate.hi - estimate.value
                ax.errorbar(
                    k * estimate.value, y, xerr=[[k * below], [k * above]], color="black",
                    capsize=3, linewidth=1,
                )  # fmt: skip
        ax.set_yticks(ys, methods if ax is axes[0] else [""] * len(methods))
        label = MEASURE_LABELS[measure]
        ax.set_xlabel(f"{label} (%)" if rate else f"{label} (log scale)")
        if rate:
            ax.set_xlim(0, 100)
        else:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, axis="x")
    n = len(result.questions)
    fig.suptitle(
        title
        or f"Steering {result.source} -> {result.target}: directions (blue) and neurons "
        f"(orange), {n} questions, {Uncertainty.of(result.settings).confidence:.0%} intervals",
        fontsize=10,
    )
    return fig


def plot_script_controls(result: ScriptControlsResult, *, title: str = "") -> Figure:
    """Per language, the Jaccard of its LAPE neurons between original text and each control,
    with the Jaccard two random sets of the same sizes would have (hypergeometric, black tick)."""
    overlaps = result.overlaps()
    pairs = list(overlaps)
    width = 0.8 / max(len(pairs), 1)
    fig, ax = _subplots(figsize=(1.5 + 0.9 * len(result.languages), 4))
    for k, pair in enumerate(pairs):
        xs = [i + (k - (len(pairs) - 1) / 2) * width for i in range(len(result.languages))]
        rows = [overlaps[pair][lang] for lang in result.languages]
        ax.bar(xs, [row["jaccard"] or 0.0 for row in rows], width, label=pair.replace("~", " vs "))
        for x, row in zip(xs, rows):
            expected = row["chance"]["expected"]
            union = row["a"] + row["b"] - expected
            chance = expected / union if union > 0 else 0.0
            ax.hlines(chance, x - width / 2, x + width / 2, color="black", lw=2)
    ax.set_xticks(range(len(result.languages)), result.languages)
    ax.set_ylabel("Jaccard of LAPE neuron sets")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(pairs))
    romanised = ", ".join(result.romanised) or "none"
    ax.set_title(
        title or f"Script controls (black: chance; romanised text: {romanised})", fontsize=10
    )
    return fig


def plot_head_importance(result: HeadsResult, *, title: str = "") -> Figure:
    """LAHIS importance of every head (layers down, heads across), one panel per language on
    one colour scale; language-specific heads boxed in red, general heads marked "g"."""
    heads, scores = result.heads, result.importance.scores()
    n = len(heads.languages)
    width = 1.2 + (1.0 + 0.35 * heads.n_heads) * n
    fig, axes = _subplots(
        1, n, figsize=(width, 1.5 + 0.22 * heads.n_layers), squeeze=False, sharey=True
    )
    top = float(scores.max()) or 1.0
    general = {tuple(h) for h in heads.general}
    for ax, lang, values in zip(axes[0], heads.languages, scores):
        image = ax.imshow(values.numpy(), cmap="viridis", vmin=0, vmax=top, aspect="auto")
        for layer, head in heads.specific[lang]:
            box = Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, ec="red", lw=1.8)
            ax.add_patch(box)
        for layer, head in general:
            ax.text(head, layer, "g", ha="center", va="center", color="white", fontsize=7)
        ax.set_xticks(range(heads.n_heads))
        ax.set_xlabel("head")
        ax.set_title(f"{lang}: {len(heads.specific[lang])} specific", fontsize=9)
    axes[0][0].set_ylabel("layer")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="importance, mean |dL/dm|")
    fig.suptitle(title or "Head importance per language (red: specific, g: general)")
    return fig


def plot_head_deactivation(result: HeadsResult, *, title: str = "") -> Figure:
    """Relative perplexity change with each language's specific heads off (rows) on every
    language (columns), and with as many random heads of the same layers; cells give the
    change and its bootstrap interval, "n.s." where it is not distinguishable from the
    control (Holm)."""
    deactivation = result.deactivation
    if deactivation is None:
        raise ValueError("this result has no deactivation to plot")
    cells = deactivation.cells(result.how)
    languages = deactivation.languages
    panels = [("specific heads off", "change")]
    if deactivation.control:
        draws = len(deactivation.control)
        panels.append((f"random heads, same layers ({draws} draw{'s' * (draws != 1)})", "control"))
    ratios = [
        torch.tensor(
            [[cells[r][c][key].value for c in languages] for r in languages], dtype=torch.float64
        )
        for _, key in panels
    ]
    bound = max(float(r.abs().max()) for r in ratios) or 0.01
    size = 0.9 * len(languages) + 1.5
    fig, axes = _subplots(1, len(panels), figsize=(size * len(panels) + 1, size), squeeze=False)
    for ax, ratio, (label, key) in zip(axes[0], ratios, panels):
        texts = []
        for r in languages:
            row = []
            for c in languages:
                estimate = cells[r][c][key]
                text = f"{estimate.value:+.1%}"
                if estimate.has_interval:
                    text += f"\n[{estimate.lo:+.1%}, {estimate.hi:+.1%}]"
                if key == "change" and cells[r][c].get("significant") is False:
                    text += "\nn.s."
                row.append(text)
            texts.append(row)
        image = _annotated_image(
            ax, ratio, texts, ratio.abs() > 0.6 * bound, languages,
            cmap="RdBu_r", vmin=-bound, vmax=bound, fontsize=6,
        )  # fmt: skip
        ax.set_xlabel("evaluated language")
        ax.set_ylabel("heads of")
        ax.set_title(label, fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="perplexity / baseline - 1")
    fig.suptitle(title or "Perplexity with language-specific heads off")
    return fig
