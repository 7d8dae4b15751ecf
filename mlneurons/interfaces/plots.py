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

from mlneurons.evaluation.uncertainty import Uncertainty
from mlneurons.methods.deactivation import MethodComparison, PerplexityMatrix
from mlneurons.methods.lape import LanguageNeurons
from mlneurons.methods.lrp2 import LRP2Result
from mlneurons.methods.probeless import FactNeurons
from mlneurons.methods.probing.result import ProbeResult
from mlneurons.methods.readouts import LatentLanguage, SentenceSimilarity
from mlneurons.methods.script_controls import ScriptControlsResult
from mlneurons.methods.steering import DEGENERATE, FallbackCurve, SteeringSweep
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
) -> Figure:
    """A language x language matrix with its values written in the cells."""
    if not isinstance(table, torch.Tensor):  # None (e.g. no shared facts): empty, marked "–"
        rows = [[table[a][b] for b in labels] for a in labels]
        nan = float("nan")
        table = torch.tensor(
            [[nan if v is None else v for v in row] for row in rows], dtype=torch.float64
        )
    values = table.double()
    fig, ax = _subplots(figsize=(1.2 + 0.6 * len(labels), 0.8 + 0.6 * len(labels)))
    texts = [["–" if v != v else fmt.format(v) for v in row] for row in values.tolist()]
    white = _on_dark(values) & ~values.isnan()
    image = _annotated_image(ax, values, texts, white, labels, cmap=cmap)
    fig.colorbar(image, ax=ax, shrink=0.8, label=colorbar)
    ax.set_title(title)
    return fig


def plot_overlap(neurons: LanguageNeurons, *, title: str = "") -> Figure:
    """Neurons shared between languages (diagonal: each language's own count)."""
    return plot_heatmap(
        neurons.overlap(),
        neurons.languages,
        fmt="{:.0f}",
        colorbar="shared neurons",
        title=title or "Language overlap of LAPE neurons",
    )


def plot_jaccard(result: ProbeResult, *, title: str = "") -> Figure:
    """Jaccard similarity of the sets of correctly predicted facts, per pair of languages."""
    name = result.model.get("name", "")
    default = f"Shared correct facts (Jaccard): {name}"
    return plot_heatmap(
        result.jaccard(), result.languages, colorbar="Jaccard", title=title or default
    )


def plot_fact_neuron_overlap(neurons: FactNeurons, *, title: str = "") -> Figure:
    """Mean Jaccard of the PROBELESS top-k neurons of the facts two languages both get right."""
    default = f"PROBELESS fact-neuron overlap (k={neurons.k})"
    return plot_heatmap(
        neurons.overlap(),
        neurons.languages,
        colorbar="mean Jaccard of top-k",
        title=title or default,
    )


def plot_p_at_1(result: ProbeResult, *, title: str = "") -> Figure:
    """P@1 per language, one bar per relation plus the macro average."""
    table = result.p_at_1()
    keys = [*result.relations, "macro"]
    width = 0.8 / len(keys)
    fig, ax = _subplots(figsize=(1.5 + 0.7 * len(result.languages), 4))
    for k, key in enumerate(keys):
        xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(result.languages))]
        ax.bar(
            xs,
            [100 * table[lang].get(key, 0.0) for lang in result.languages],
            width,
            label=key,
            color="black" if key == "macro" else None,
        )
    ax.set_xticks(range(len(result.languages)), result.languages)
    ax.set_ylabel("P@1 (%)")
    ax.set_title(title or "Factual probing: P@1 per language and relation")
    ax.legend(fontsize=8, ncol=min(len(keys), 5), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_lrp2_grid(result: LRP2Result, language: str) -> Figure:
    """Dev P@1 of every (LIRP, LSRP) layer pair for one language; the selected pair is boxed."""
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
    fig.colorbar(image, ax=ax, shrink=0.8, label="dev P@1 (%)")
    ax.set_title(f"LRP2 grid, {language} -> {result.pivot} -> {language}")
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


def _change_panels(
    panels: list[tuple[str, torch.Tensor]],
    languages: list[str],
    *,
    title: str,
    shared_scale: bool = True,
) -> Figure:
    """One heatmap per panel of relative perplexity changes (rows deactivated, columns
    evaluated) coloured by log10(perplexity / baseline), on one colour scale or (not
    ``shared_scale``) one per panel."""
    # colour on a log scale: changes span from a few percent to several thousand
    ratios = [torch.log10((1 + change).clamp(min=1e-6)) for _, change in panels]
    shared = max(float(r.abs().max()) for r in ratios) or 1.0
    size = 0.55 * len(languages) + 1.5
    width = size * len(panels) + (1 if shared_scale else len(panels))
    fig, axes = _subplots(1, len(panels), figsize=(width, size), squeeze=False)
    for ax, ratio, (label, change) in zip(axes[0], ratios, panels):
        bound = shared if shared_scale else float(ratio.abs().max()) or 1.0
        texts = [
            [f"{100 * c:+.0f}" if c < 999 else format_increase(c) for c in row]
            for row in change.tolist()
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
    if shared_scale:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label=label)
    else:
        fig.text(0.5, -0.02, "colour: " + label + " (own scale per panel)", ha="center")
    fig.suptitle(title)
    return fig


def plot_perplexity_matrix(matrix: PerplexityMatrix, *, title: str = "") -> Figure:
    """Relative perplexity change against baseline: deactivated languages vs the controls."""
    panels = [("language neurons deactivated", matrix.relative_change())]
    if matrix.random_control:
        panels.append(("random neurons, same layers", matrix.relative_change("random_control")))
    if matrix.matched_control:
        label = f"matched control, mean of {matrix.matched['draws']} draws"
        panels.append((label, matrix.relative_change("matched_control")))
    return _change_panels(
        panels,
        matrix.languages,
        title=title or "Perplexity after deactivating language neurons",
    )


def format_specificity(score: float | None) -> str:
    """A specificity score (:meth:`MethodComparison.specificity`), "–" when undefined."""
    return "–" if score is None else f"{score:.2f}"


def plot_method_comparison(result: MethodComparison, *, title: str = "") -> Figure:
    """Tang et al.'s comparison of selectors: each method's deactivation matrix, titled
    with its specificity (:meth:`MethodComparison.specificity`)."""
    scores = result.specificity()
    panels = [
        (
            f"{method.upper()}: specificity {format_specificity(scores[method]['score'])}",
            result.relative_change(method),
        )
        for method in result.methods
    ]
    return _change_panels(
        panels,
        result.languages,
        title=title or "Deactivating each method's language neurons",
        shared_scale=False,
    )


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


def plot_steering_sweep(sweep: SteeringSweep, *, title: str = "") -> Figure:
    """Target rate, source rate, degenerate share and fluency against α: one colour per
    mode, one line style per LAPE top rate; the unsteered answers as a grey line."""
    fig, axes = _subplots(2, 2, figsize=(10, 7), squeeze=False)
    modes = sweep.modes
    top_rates = list(dict.fromkeys(p.top_rate for p in sweep.points))
    colours = {mode: f"C{i}" for i, mode in enumerate(modes)}
    for ax, (key, label) in zip(axes.flat, SWEEP_PANELS):
        rate = key != "fluency_ppl"
        for k, top_rate in enumerate(top_rates):
            for mode in modes:
                points = sorted(
                    (p for p in sweep.points if p.mode == mode and p.top_rate == top_rate),
                    key=lambda p: cast(float, p.alpha),  # None only on the baseline
                )
                pairs = [(p.alpha, getattr(p, key)) for p in points if getattr(p, key) is not None]
                if not pairs:
                    continue
                ax.plot(
                    [a for a, _ in pairs],
                    [100 * v if rate else v for _, v in pairs],
                    marker="o",
                    markersize=4,
                    color=colours[mode],
                    linestyle=_LINE_STYLES[k % len(_LINE_STYLES)],
                    label=f"{mode}, top {top_rate:g} (n={points[0].n_neurons})",
                )
        base = getattr(sweep.baseline, key)
        if base is not None:
            ax.axhline(100 * base if rate else base, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("α")
        ax.set_ylabel(f"{label} (%)" if rate else label)
        if rate:
            ax.set_ylim(-3, 103)
        else:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=1))
    labels.append("unsteered")
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    n = sweep.settings.get("n_questions", "")
    fig.suptitle(title or f"Steering {sweep.source} -> {sweep.target} ({n} questions)")
    return fig


def plot_fallback_curve(curve: FallbackCurve, *, title: str = "") -> Figure:
    """Stacked bars: per share of deactivated neurons, the languages of the answers."""
    shown = [c for c in curve.categories if any(p.distribution[c] for p in curve.points)]
    fig, ax = _subplots(figsize=(2 + 0.9 * len(curve.points), 4.5))
    x = list(range(len(curve.points)))
    bottom = [0.0] * len(curve.points)
    for i, category in enumerate(shown):
        heights = [p.distribution[category] for p in curve.points]
        colour = {DEGENERATE: "#404040", "unknown": "#b0b0b0"}.get(category, f"C{i % 10}")
        ax.bar(x, heights, bottom=bottom, color=colour, label=category, edgecolor="white")
        bottom = [b + h for b, h in zip(bottom, heights)]
    ax.set_xticks(x, [f"{p.share:.0%}\n({p.n_deactivated})" for p in curve.points])
    ax.set_xlabel(f"share of {curve.language} neurons deactivated ({curve.order} order)")
    ax.set_ylabel("share of answers")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="answer language")
    ax.set_title(title or f"Language fallback when {curve.language} neurons are deactivated")
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
    ax.legend(handles, labels, fontsize=8, loc="lower left")
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
    English, with 95% confidence bands over items; the crossover layer is marked
    (Wendler et al. 2024, their Fig. 2)."""
    layers = list(range(result.n_layers))
    fig, ax = _subplots(figsize=(8, 4.5))
    series = (
        (result.item_p_english, "en (the English word)", "C0"),
        (result.item_p_target, f"{result.target} (the answer)", "C3"),
    )
    for items, label, colour in series:
        mean = items.mean(0)
        half = 1.96 * items.std(0) / max(result.n_items, 1) ** 0.5 if result.n_items > 1 else 0
        ax.plot(layers, mean.tolist(), color=colour, marker="o", markersize=3, label=label)
        if isinstance(half, torch.Tensor):
            ax.fill_between(
                layers, (mean - half).tolist(), (mean + half).tolist(), color=colour, alpha=0.2
            )
    crossover = result.crossover_layer()
    if crossover is not None:
        ax.axvline(crossover, color="grey", ls="--", lw=1, label=f"crossover (layer {crossover})")
    ax.set_xlabel("layer")
    ax.set_ylabel("probability (logit lens)")
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
