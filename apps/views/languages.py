"""Languages: LAPE neurons per layer and language, live re-selection, language columns, neuron card."""

from __future__ import annotations

import shlex

import common
import numpy as np
import pandas as pd
import streamlit as st

run = common.run_dir()
st.title("Languages: LAPE neurons")
if not (common.has(run, "stats.safetensors") or common.require(run, "neurons.json")):
    st.stop()

stats = common.stats(run)
saved = common.saved_neurons(run)
constants = dict(saved.constants) if saved is not None else {}

# ---- selection: saved, or re-selected live from the statistics (no forward pass) ----------
if stats is not None:
    saved_top, saved_filter = constants.get("top_rate", 0.01), constants.get("filter_rate", 0.95)
    left, right = st.columns(2)
    top_rate = left.slider(
        "top_rate: share of all neurons kept (lowest LAPE entropy)",
        0.001,
        max(0.1, saved_top),
        value=saved_top,
        step=0.001,
        format="%.3f",
        key="top_rate",
        bind="query-params",
    )
    filter_rate = right.slider(
        "filter_rate: a kept neuron must fire above this quantile in some language",
        0.5,
        0.999,
        value=saved_filter,
        step=0.001,
        format="%.3f",
        key="filter_rate",
        bind="query-params",
    )
    bar = constants.get("activation_bar_ratio", 0.95)
    neurons = common.selection(run, top_rate, filter_rate, bar)
    reselected = (top_rate, filter_rate) != (saved_top, saved_filter) or saved is None
else:
    st.caption("No stats.safetensors in this run: the saved selection, without re-selection.")
    neurons, reselected = saved, False

languages = neurons.languages
counts = neurons.counts()
per_layer = neurons.counts_per_layer()
overlap = neurons.overlap()
table = pd.DataFrame({"neurons": counts})
if stats is not None:
    table["tokens counted"] = dict(zip(stats.languages, stats.token_counts.tolist()))
st.caption(
    f"{neurons.n_layers} layers x {neurons.d_mlp} neurons; kept {neurons.constants.get('kept')}, "
    f"tau {neurons.constants.get('threshold', float('nan')):.4f}"
    + (" (re-selected from the statistics)" if reselected else " (as saved)")
)
left, middle, right = st.columns([1.2, 2, 2])
left.dataframe(table)
layers = pd.DataFrame(per_layer.T.numpy(), columns=languages)
layers.index.name = "layer"
middle.markdown("**Neurons per layer**")
middle.line_chart(layers, height=260)
right.markdown("**Shared neurons** (diagonal: each language's count)")
right.dataframe(
    pd.DataFrame(overlap.numpy(), index=languages, columns=languages).style.background_gradient(
        cmap="Blues"
    )
)

# ---- shared neurons against chance, and the saved selection's stability ------------------
saved_result = common.result(run, "lape")
confidence = saved_result.uncertainty.confidence if saved_result is not None else 0.95
stability = None
if len(languages) > 1:
    from mlneurons.interfaces.commands.lape import overlap_tables

    chance_table = overlap_tables(neurons.overlap_chance(), confidence)[0]
    st.markdown("**Shared neurons against chance** (n.s.: not above chance)")
    st.dataframe(pd.DataFrame(chance_table.rows, columns=chance_table.header), hide_index=True)
    st.caption(chance_table.caption)
    stability = None if reselected or saved_result is None else saved_result.selection_stability()
    if stability is not None:
        shares = stability.share_stable()
        st.markdown("**Stability of the selection** (bootstrap resamples of the corpus rows)")
        st.dataframe(
            pd.DataFrame(
                {
                    "neurons": [len(stability.frequency[lang]) for lang in stability.jaccard],
                    "Jaccard with the full set": [
                        e.text(".2f") for e in stability.jaccard.values()
                    ],
                    f"selected in >= {stability.stable:.0%}": [
                        "–" if shares[lang] is None else f"{shares[lang]:.0%}"
                        for lang in stability.jaccard
                    ],
                },
                index=list(stability.jaccard),
            )
        )
        from mlneurons.interfaces.plots import plot_stability

        common.download_png(
            "Stability (PNG)",
            lambda: plot_stability(stability, title="LAPE selection stability"),
            "stability.png",
            key="dl_stability_png",
        )
        st.caption(
            f"{stability.resamples} resamples of each language's blocks of "
            f"{stability.rows_per_block} row(s), each re-selected with the same constants: the "
            f"mean Jaccard of a resample's set with the full set [{confidence:.0%} of resamples], "
            f"and the share of the full set selected in >= {stability.stable:.0%} of them."
        )
    elif saved_result is not None and saved_result.selection_stability() is not None:
        st.caption("The saved stability is of the saved selection; these sliders changed it.")

pairs_table = pd.DataFrame(
    [(lang, *pair) for lang in languages for pair in neurons[lang].tolist()],
    columns=["language", "layer", "neuron"],
)
cols = st.columns(4)
with cols[0]:
    common.download_csv("Neurons (CSV)", pairs_table, "neurons.csv", key="dl_neurons_csv")
with cols[1]:
    common.download_json(
        "Neurons (JSON)",
        {lang: neurons[lang].tolist() for lang in languages},
        "neurons.json",
        key="dl_neurons_json",
    )
with cols[2]:
    from mlneurons.interfaces.plots import plot_layer_distribution, plot_overlap

    common.download_png(
        "Per layer (PNG)",
        lambda: plot_layer_distribution(neurons, title="LAPE neurons per layer"),
        "neurons_per_layer.png",
        key="dl_layers_png",
    )
with cols[3]:
    common.download_png(
        "Overlap (PNG)",
        lambda: plot_overlap(
            neurons,
            title="Shared LAPE neurons",
            chance=neurons.overlap_chance() if len(languages) > 1 else None,
            confidence=confidence,
        ),
        "overlap.png",
        key="dl_overlap_png",
    )

if reselected:
    from mlneurons.interfaces.commands.lape import LapeConfig

    reselect = LapeConfig(stats=str(run), top_rate=top_rate, filter_rate=filter_rate)
    with st.expander(f"Select these neurons: `mlneurons lape --stats {run.name}`"):
        argv = [*reselect.to_argv(), "--out", f"{run}-top{top_rate:g}"]
        st.code(shlex.join(["mlneurons", *argv]), language="bash")
common.reproduce(run, "lape")

# ---- script and shuffle controls (Verma et al.) --------------------------------------------
st.header("Script and shuffle controls")
st.caption(
    "LAPE on the original text and on romanised (non-Latin scripts only) and word-shuffled "
    "copies: how many of each language's neurons survive the control, against chance."
)
if common.require(run, "script_controls.json"):
    from mlneurons.interfaces.plots import plot_script_controls

    common.describe(run, "script-controls")
    common.command_table(run, "script-controls")
    st.pyplot(plot_script_controls(common.result(run, "script-controls")), clear_figure=True)
    common.reproduce(run, "script-controls")

# ---- language columns: live activations over parallel sentences ---------------------------
st.header("Language columns")
left, middle, right = st.columns(3)
language = left.selectbox(
    "Neurons of", languages, key="lang", bind="query-params", help="whose LAPE neuron set to show"
)
pairs = [tuple(p) for p in neurons[language].tolist()]
labels = [common.neuron_label(p) for p in pairs]
colour = middle.radio(
    "Colour by",
    ["the whole set (mean)", "one neuron"],
    key="colour",
    horizontal=True,
    bind="query-params",
)
source = right.radio(
    "Sentences",
    ["built-in parallel questions", "my own text"],
    key="source",
    horizontal=True,
    bind="query-params",
)
questions = common.parallel_sentences(languages)
if source == "my own text":
    typed = st.text_area(
        "One sentence per line; each line is a column",
        value="\n".join(q[0] for q in questions.values() if q),
        key="text",
        bind="query-params",
    )
    columns = {f"line {i + 1}": line for i, line in enumerate(typed.splitlines()) if line.strip()}
else:
    with_questions = [lang for lang in languages if questions[lang]]
    index = st.slider(
        "Question",
        1,
        30,
        value=1,
        key="q",
        bind="query-params",
        help="the same question in every language",
    )
    columns = {lang: questions[lang][index - 1] for lang in with_questions}
    missing = [lang for lang in languages if not questions[lang]]
    if missing:
        st.caption(f"No built-in questions in {', '.join(missing)}; type your own text for them.")
MAX_SHOWN = 256  # neurons per circuitsvis view: all their values travel in the page
neuron, shown = None, []
if pairs:
    neuron = st.selectbox(
        "Neuron (for 'one neuron' and the card below)",
        labels,
        key="neuron",
        bind="query-params",
        help="the neurons of the chosen language, by layer",
    )
    shown = list(range(min(len(pairs), MAX_SHOWN)))
    if labels.index(neuron) not in shown:
        shown = [labels.index(neuron), *shown[:-1]]

model = common.get_model(run) if pairs and columns else None
if not pairs:
    st.info(f"{language} has no neurons at these rates; raise top_rate or lower filter_rate.")
elif model is not None:
    with common.shown_errors("The live neuron view"):
        name = common.model_name(run)
        with st.spinner("Running the model..."):
            results = common.activations(name, tuple(columns.values()), tuple(pairs), _model=model)
        k = labels.index(neuron)
        values = [
            acts.mean(1) if colour.startswith("the whole") else acts[:, k] for _, acts in results
        ]
        high = common.colour_bound(values)
        low = -high
        from circuitsvis.activations import text_neuron_activations
        from circuitsvis.tokens import colored_tokens

        views = [
            (title, colored_tokens(tokens, value.tolist(), min_value=low, max_value=high))
            for title, (tokens, _), value in zip(columns, results, values)
        ]
        detail = text_neuron_activations(
            [tokens for tokens, _ in results],
            [acts[:, None, shown] for _, acts in results],
            first_dimension_name="Set",
            first_dimension_labels=[f"{language} neurons"],
            second_dimension_name="Neuron",
            second_dimension_labels=[labels[i] for i in shown],
        )
        what = "mean of the set" if colour.startswith("the whole") else neuron
        st.caption(
            f"Activation of {language}'s {len(pairs)} neurons ({what}); one colour scale for all "
            f"columns, blue up to {high:.2f}, red down to {low:.2f}. Below: each neuron over "
            "every column's text"
            + (f" (the first {len(shown)})." if len(shown) < len(pairs) else ".")
        )
        common.iframe(
            views,
            columns=min(len(views), 4),
            wide=[("Per neuron", detail)],
            height=90 + 70 * (len(views) // 5 + 1) + 90 + 60 * len(views),
        )
        frame = pd.DataFrame(
            [
                {"column": title, "position": i, "token": token, "value": float(v)}
                for title, (tokens, _), value in zip(columns, results, values)
                for i, (token, v) in enumerate(zip(tokens, value))
            ]
        )
        common.download_csv("Token values (CSV)", frame, "language_columns.csv", key="dl_columns")

# ---- neuron card -----------------------------------------------------------------------
per_language: dict = {}
if neuron is not None:
    layer, index = pairs[labels.index(neuron)]
    st.header(f"Neuron card: layer {layer}, neuron {index}")
    owners = [lang for lang in languages if (layer, index) in map(tuple, neurons[lang].tolist())]
    st.caption(f"In the LAPE sets of: {', '.join(owners)}")
    left, right = st.columns(2)
    if stats is not None:
        card = pd.DataFrame(
            {
                "firing probability": stats.activation_probs[:, layer, index].numpy(),
                "mean activation": stats.mean_activations[:, layer, index].numpy(),
            },
            index=stats.languages,
        )
        left.markdown("**Firing probability per language** (from the statistics)")
        left.bar_chart(card["firing probability"], horizontal=True, sort=False, height=200)
        left.dataframe(card.style.format("{:.4f}"))
        common.download_csv("Card (CSV)", card, f"neuron_L{layer}_N{index}.csv", key="dl_card")
    if model is not None:
        with common.shown_errors("The neuron card"), right:
            n_sentences = 10
            texts = [q for lang in languages for q in questions[lang][:n_sentences]]
            owners_of = [lang for lang in languages for _ in questions[lang][:n_sentences]]
            chosen = tuple(pairs[i] for i in shown)  # the same for every neuron of the set
            sample = common.activations(common.model_name(run), tuple(texts), chosen, _model=model)
            mine = shown.index(labels.index(neuron))
            order = [mine] + [i for i in range(len(shown)) if i != mine]  # this neuron first
            per_language = {}
            for lang, (tokens, acts) in zip(owners_of, sample):
                words, values = per_language.setdefault(lang, ([], []))
                words.extend(tokens)
                values.append(acts[:, order])
            first = np.concatenate([np.concatenate(v)[:, 0] for _, v in per_language.values()])
            edges = np.histogram_bin_edges(first, bins=24)
            histogram = pd.DataFrame(
                {
                    lang: np.histogram(np.concatenate(v)[:, 0], bins=edges)[0]
                    / max(1, len(np.concatenate(v)))
                    for lang, (_, v) in per_language.items()
                },
                index=np.round((edges[:-1] + edges[1:]) / 2, 3),
            )
            histogram.index.name = "activation"
            st.markdown(
                f"**Activation histogram**: share of tokens, {n_sentences} built-in questions "
                "per language"
            )
            st.line_chart(histogram, height=220)
            promoted, suppressed = common.logit_effects(
                common.model_name(run), layer, index, _model=model
            )
            a, b = st.columns(2)
            a.markdown("**Promotes** (W_out . W_U)")
            a.dataframe(pd.DataFrame(promoted), hide_index=True)
            b.markdown("**Suppresses**")
            b.dataframe(pd.DataFrame(suppressed), hide_index=True)
        if per_language:
            from circuitsvis.topk_tokens import topk_tokens

            st.markdown(
                "**Top-activating tokens** per language (first column: this neuron; then the "
                f"rest of {language}'s set)"
            )
            view = topk_tokens(
                [words for words, _ in per_language.values()],
                [
                    np.concatenate(v)[None, :, :].astype(np.float32)
                    for _, v in per_language.values()
                ],
                max_k=8,
                first_dimension_name="Set",
                first_dimension_labels=[f"{language} neurons"],
                third_dimension_name="Neuron",
                sample_labels=list(per_language),
            )
            common.iframe([("", view)], height=640)
