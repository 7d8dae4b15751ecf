"""Interventions: generate with and without deactivated / steered language neurons; the
perplexity matrix, where a cell shows the per-token loss change of its condition."""

from __future__ import annotations

import common
import numpy as np
import pandas as pd
import streamlit as st

run = common.run_dir()
st.title("Interventions")
neurons = common.saved_neurons(run) if run is not None else None
if neurons is None and common.has(run, "stats.safetensors"):
    neurons = common.selection(run, 0.01, 0.95)
if neurons is None:
    common.require(run, "neurons.json")
    st.stop()
stats = common.stats(run)
languages = neurons.languages

# ---- generate with and without ---------------------------------------------------------
st.header("Outputs with and without")
from mlneurons.methods.steering import PROMPT_TEMPLATE  # noqa: E402

questions = common.parallel_sentences(languages)
first = next((q[0] for q in questions.values() if q), "Why is the sky blue?")
with st.form("generate"):
    prompt = st.text_area(
        "Prompt", value=PROMPT_TEMPLATE.format(question=first), key="prompt", bind="query-params"
    )
    a, b, c, d = st.columns(4)
    deactivated = a.multiselect(
        "Deactivate the neurons of", languages, key="deactivate", bind="query-params"
    )
    target = b.selectbox(
        "Steer to",
        ["(none)", *languages],
        index=len(languages),  # the last language: the first question is in another one
        key="steer",
        bind="query-params",
    )
    modes = [  # the steering modes of steering_intervention, then a constant value
        "replace: mean x scale",
        "add: + mean x scale",
        "diffmean: + (mean - others' mean) x scale",
        "scale: x scale",
        "constant = scale",
    ]
    mode = c.radio("Steering value", modes, key="mode", disabled=stats is None, bind="query-params")
    scale = d.number_input("Scale", value=1.0, step=0.5, key="scale", bind="query-params")
    new_tokens = st.slider("New tokens", 4, 64, 24, key="new_tokens", bind="query-params")
    submitted = st.form_submit_button("Generate", type="primary")
if stats is None:
    mode = modes[-1]
    st.caption("No stats.safetensors: steering sets a constant value (the scale).")

if submitted:
    model = common.get_model(run)
    if model is not None:
        with common.shown_errors("Generation"):
            from mlneurons.methods.interventions import activate, deactivate, intervene
            from mlneurons.methods.steering import steering_intervention
            from mlneurons.models.generation import generate_answers

            hooks: list = []
            steered = {tuple(p) for p in neurons[target].tolist()} if target != "(none)" else set()
            off = sorted(
                {tuple(p) for lang in deactivated for p in neurons[lang].tolist()} - steered
            )
            if off:
                hooks += deactivate(off, model=model)
            if steered and mode == modes[-1]:
                hooks += activate(neurons[target], scale, model=model)
            elif steered:
                hooks += steering_intervention(
                    neurons,
                    stats,
                    source=target,  # no source neurons are touched here
                    target=target,
                    mode=mode.split(":")[0],
                    alpha=scale,
                    model=model,
                )
            options = dict(max_new_tokens=new_tokens, batch_size=1, progress=False)
            with st.spinner("Generating twice..."), common.LOCK:
                before = generate_answers(model, [prompt], **options)[0]
                with intervene(model, hooks):
                    after = generate_answers(model, [prompt], **options)[0]
            st.session_state["generation"] = {
                "prompt": prompt,
                "deactivated": deactivated,
                "steer": target,
                "mode": mode,
                "scale": scale,
                "neurons_deactivated": len(off),
                "neurons_steered": len(steered),
                "without": before,
                "with": after,
            }
generation = st.session_state.get("generation")
if generation:
    left, right = st.columns(2)
    for column, key in ((left, "without"), (right, "with")):
        code, confidence = common.identify(generation[key], languages)
        with column.container(border=True):
            st.markdown(f"**{key.capitalize()} the intervention**")
            st.text(generation[key] or "(empty)")
            st.caption(f"identified language: {code} (confidence {confidence:.0%})")
        generation[f"language_{key}"], generation[f"confidence_{key}"] = code, confidence
    st.caption(
        f"{generation['neurons_deactivated']} neurons deactivated, "
        f"{generation['neurons_steered']} steered ({generation['mode']}, scale {generation['scale']})"
    )
    common.download_json("Outputs (JSON)", generation, "generation.json", key="dl_generation")
else:
    st.caption("Choose the languages and press Generate (greedy, the run's saved neurons).")

steering = common.result(run, "steer")
if steering is not None:
    st.subheader(f"Saved steering run: {steering.source} -> {steering.target}")
    common.describe(run, "steer")
    from mlneurons.interfaces.commands import command

    rates = command("steer").tables(steering)[0]  # intervals, McNemar, n.s. flags
    st.dataframe(pd.DataFrame(rates.rows, columns=rates.header).astype(str), hide_index=True)
    st.caption(rates.caption)
    samples = pd.DataFrame(steering.samples)
    st.dataframe(samples, hide_index=True)
    common.download_csv("Steering samples (CSV)", samples, "steering.csv", key="dl_steering")
    common.reproduce(run, "steer")

# ---- perplexity matrix -------------------------------------------------------------------
st.header("Perplexity matrix")
if not common.require(run, "ppl_matrix.json"):
    st.stop()
from mlneurons.methods.baselines import matched_control, random_selection  # noqa: E402

matrix = common.result(run, "ablate")
kinds = ["deactivated"] + (["random_control"] if matrix.random_control else [])
kinds += ["matched_control"] if matrix.matched_control and stats is not None else []
kind = st.radio(
    "Rows", kinds, horizontal=True, key="ppl_kind", format_func=lambda k: k.replace("_", " ")
)
change = pd.DataFrame(
    matrix.relative_change(kind).numpy() * 100,
    index=matrix.languages,
    columns=matrix.languages,
)
change.index.name = "deactivated"
common.describe(run, "ablate")
intervals = matrix.change_intervals(kind)
st.caption(
    "Relative perplexity change in % (rows: whose neurons are off; columns: evaluated; "
    "matched control: the mean of its draws, the per-token view shows draw 1)"
    + (
        "; [lo, hi]: its interval, paired bootstrap over the held-out rows; n.s.: the "
        "interval covers 0"
        if intervals is not None
        else ""
    )
    + ". Click a cell to see its per-token loss change."
)
event = st.dataframe(
    common.change_matrix(change, intervals),
    on_select="rerun",
    selection_mode="single-cell",
    key="ppl_table",
)
cells = event.selection.get("cells", []) if event is not None else []
if cells and st.session_state.get("ppl_clicked") != cells[0]:
    st.session_state["ppl_clicked"] = cells[0]
    row, column = cells[0]
    st.session_state["ppl_row"] = matrix.languages[int(row)]
    st.session_state["ppl_col"] = column if column in matrix.languages else matrix.languages[0]
a, b, c, d = st.columns(4)
with a:
    common.download_csv("Matrix (CSV)", change, "ppl_change.csv", key="dl_ppl_csv")
with b:
    common.download_json("Matrix (JSON)", matrix.to_json(), "ppl_matrix.json", key="dl_ppl_json")
with c:
    from mlneurons.interfaces.plots import plot_perplexity_matrix

    common.download_png(
        "Matrix (PNG)", lambda: plot_perplexity_matrix(matrix), "ppl_matrix.png", key="dl_ppl_png"
    )
common.reproduce(run, "ablate")

left, right = st.columns(2)
row = left.selectbox("Deactivated", matrix.languages, key="ppl_row", bind="query-params")
column = right.selectbox("Evaluated on", matrix.languages, key="ppl_col", bind="query-params")
st.subheader(f"{kind.replace('_', ' ')} {row}, evaluated on {column}: loss change per token")
text = st.text_area(
    "Held-out text (built-in, editable)",
    value=common.heldout_text(column),
    key=f"ppl_text_{column}",
)
model = common.get_model(run) if text.strip() else None
if model is not None:
    with common.shown_errors("The per-token loss view"):
        if kind == "deactivated":
            off = tuple(map(tuple, neurons[row].tolist()))
        elif kind == "random_control":  # as many neurons per layer, none a language's
            control = random_selection(neurons, seed=matrix.seed)[row]
            off = tuple(map(tuple, control.tolist()))
        else:  # the first draw of the matched control: same layers and probability bins
            bins = matrix.matched["bins"]
            control = matched_control(neurons, stats, bins=bins, seed=matrix.seed)[row]
            off = tuple(map(tuple, control.tolist()))
        tokens, base, changed = common.loss_change(common.model_name(run), text, off, _model=model)
        delta = changed - base
        bound = max(1e-6, float(np.abs(delta).max()))
        from circuitsvis.tokens import colored_tokens

        st.caption(
            f"{len(off)} neurons off; mean loss {base.mean():.3f} -> {changed.mean():.3f} nats "
            f"per token (perplexity x{np.exp(changed.mean() - base.mean()):.2f} on this text). "
            "Red: the token got harder to predict; blue: easier."
        )
        common.iframe(
            [("", colored_tokens(tokens, delta.tolist(), -bound, bound, "blue", "red"))],
            height=40 + 26 * (len("".join(tokens)) // 140 + 1),
        )
        frame = pd.DataFrame({"token": tokens, "loss": base, "loss with": changed, "change": delta})
        common.download_csv("Token losses (CSV)", frame, "token_losses.csv", key="dl_losses")
