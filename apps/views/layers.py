"""Layers: where the model is in which language. Sentence-embedding similarity of parallel
sentences beside the language neurons per layer (Tang et al.), and the logit lens on
translation prompts (Wendler et al.)."""

from __future__ import annotations

import common
import pandas as pd
import streamlit as st

run = common.run_dir()
st.title("Layers")

# ---- SES ----------------------------------------------------------------------------------
st.header("Sentence-embedding similarity")
if common.require(run, "sentence_similarity.safetensors"):
    from mlneurons.methods.readouts import SentenceSimilarity

    ses = SentenceSimilarity.load(run)
    frame = pd.DataFrame({"SES (mean over pairs)": ses.mean_offdiagonal().numpy()})
    neurons = common.saved_neurons(run)
    if neurons is not None and neurons.n_layers == ses.n_layers:
        counts = neurons.masks().any(0).sum(-1).numpy()  # shared neurons count once
        frame["language neurons (share of the most in a layer)"] = counts / max(counts.max(), 1)
    frame.index.name = "layer"
    common.describe(run, "ses")
    st.caption(
        "BOS excluded. Tang et al.: high in the middle layers, where few language neurons are, "
        "low where they concentrate."
    )
    st.line_chart(frame, height=280)
    from mlneurons.interfaces.commands import command

    table = command("ses").tables(ses)[0]  # per layer with its interval, ties with the peak
    with st.expander("SES per layer with intervals"):
        st.dataframe(pd.DataFrame(table.rows, columns=table.header).astype(str), hide_index=True)
        st.caption(table.caption)
    left, right = st.columns(2)
    a = left.selectbox("Language", ses.languages, key="ses_a", bind="query-params")
    b = right.selectbox("with", ses.languages, index=1, key="ses_b", bind="query-params")
    st.line_chart(pd.DataFrame({f"{a}-{b}": ses.pair(a, b).numpy()}), height=200)
    layer = st.slider("Layer of the matrix", 0, ses.n_layers - 1, ses.n_layers // 2, key="ses_l")
    matrix = pd.DataFrame(ses.similarity[layer].numpy(), index=ses.languages, columns=ses.languages)
    st.dataframe(matrix.style.format("{:.3f}").background_gradient(cmap="Blues", axis=None))
    common.reproduce(run, "ses")

# ---- logit lens ---------------------------------------------------------------------------
st.header("Latent language (logit lens)")
if common.require(run, "latent_language.safetensors"):
    from mlneurons.methods.readouts import LatentLanguage

    lens = LatentLanguage.load(run)
    st.caption(
        "At the last position each layer's residual is read through the final norm and unembedding."
    )
    common.describe(run, "logit-lens")
    curves = pd.DataFrame(
        {f"P({lens.target})": lens.p_target.numpy(), "P(en)": lens.p_english.numpy()}
    )
    curves.index.name = "layer"
    st.line_chart(curves, height=280)
    from mlneurons.interfaces.commands import command

    table = command("logit-lens").tables(lens)[0]  # intervals over words, n.s. layers
    with st.expander("Per layer with intervals"):
        st.dataframe(pd.DataFrame(table.rows, columns=table.header).astype(str), hide_index=True)
        st.caption(table.caption)
    layer = st.slider("Words at layer", 0, lens.n_layers - 1, lens.n_layers - 1, key="lens_l")
    words = pd.DataFrame(lens.words)
    words[f"P({lens.target})"] = lens.item_p_target[:, layer].numpy()
    words["P(en)"] = lens.item_p_english[:, layer].numpy()
    st.dataframe(words.style.format(precision=4), hide_index=True)
    common.download_csv("Words (CSV)", words, "logit_lens_words.csv", key="dl_lens")
    common.reproduce(run, "logit-lens")
