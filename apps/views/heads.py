"""Heads: attention heads per language (LAHIS importance, specific and general heads, their
deactivation), and one head's attention on the same sentence in several languages."""

from __future__ import annotations

import common
import pandas as pd
import streamlit as st

run = common.run_dir()
st.title("Heads: attention heads as language units")
if not common.require(run, "heads.json"):
    st.stop()

result = common.result(run, "heads")
heads, importance = result.heads, result.importance
languages = heads.languages
common.describe(run, "heads")

# ---- importance per language --------------------------------------------------------------
st.header("Importance per language")
left, right = st.columns([2, 3])
language = left.selectbox(
    "Importance of", languages, key="heads_language", bind="query-params",
    help="LAHIS: mean |dL/dm| of a soft mask on each head's output, over the language's rows",
)  # fmt: skip
scores = pd.DataFrame(
    importance.score(language).numpy(),
    columns=[f"H{h}" for h in range(heads.n_heads)],
)
scores.index.name = "layer"
specific = {tuple(h) for h in heads.specific[language]}
general = {tuple(h) for h in heads.general}


def _mark(frame: pd.DataFrame) -> pd.DataFrame:
    """Red border on the language's specific heads, a dotted one on the general heads."""
    styles = pd.DataFrame("", index=frame.index, columns=frame.columns)
    for layer, head in specific:
        styles.iloc[layer, head] = "border: 2px solid red"
    for layer, head in general:
        styles.iloc[layer, head] = "border: 2px dotted white"
    return styles


left.dataframe(
    scores.style.format("{:.4f}")
    .background_gradient(cmap="viridis", axis=None)
    .apply(_mark, axis=None),
    height=min(700, 40 + 35 * heads.n_layers),
)
left.caption(
    f"Red: {language}'s specific heads; dotted: general heads (candidates of at least "
    f"{heads.constants.get('shared_min')} languages)."
)
from mlneurons.interfaces.commands import command  # noqa: E402

for table in command("heads").tables(result):
    if table.details:
        with right.expander("Every cell of the deactivation matrix"):
            st.dataframe(pd.DataFrame(table.rows, columns=table.header), hide_index=True)
        continue
    right.dataframe(pd.DataFrame(table.rows, columns=table.header), hide_index=True)
    right.caption(table.caption)
a, b, c = st.columns(3)
with a:
    common.download_json("Heads (JSON)", result.to_json(), "heads.json", key="dl_heads")
with b:
    from mlneurons.interfaces.plots import plot_head_importance

    common.download_png(
        "Importance (PNG)", lambda: plot_head_importance(result), "heads_importance.png",
        key="dl_heads_importance",
    )  # fmt: skip
if result.deactivation is not None:
    with c:
        from mlneurons.interfaces.plots import plot_head_deactivation

        common.download_png(
            "Deactivation (PNG)", lambda: plot_head_deactivation(result),
            "heads_deactivation.png", key="dl_heads_deactivation",
        )  # fmt: skip
common.reproduce(run, "heads")

# ---- one head on parallel sentences (live) -----------------------------------------------
st.header("Attention of one head, the same sentence in several languages")
left, middle, right = st.columns(3)
layer = left.number_input(
    "Layer", 0, heads.n_layers - 1, value=int((heads.specific[language] or [[0, 0]])[0][0]),
    key="heads_layer", bind="query-params",
)  # fmt: skip
head = middle.number_input(
    "Head", 0, heads.n_heads - 1, value=int((heads.specific[language] or [[0, 0]])[0][1]),
    key="heads_head", bind="query-params",
)  # fmt: skip
owners = [lang for lang in languages if [int(layer), int(head)] in heads.specific[lang]]
role = "general" if (int(layer), int(head)) in general else ", ".join(owners) or "no language"
middle.caption(f"L{layer} H{head}: specific to {role}" if owners else f"L{layer} H{head}: {role}")
source = right.radio(
    "Sentences", ["built-in parallel sentences", "my own text"], key="heads_source",
    horizontal=True, bind="query-params",
)  # fmt: skip
sentences = common.parallel_heads_sentences(tuple(languages))
if source == "my own text":
    typed = st.text_area(
        "One sentence per line; each line is a column",
        value="\n".join(items[0] for items in sentences.values() if items),
        key="heads_text",
        bind="query-params",
    )
    columns = {f"line {i + 1}": line for i, line in enumerate(typed.splitlines()) if line.strip()}
else:
    have = [lang for lang in languages if sentences.get(lang)]
    count = min((len(sentences[lang]) for lang in have), default=0)
    if count:
        index = st.slider(
            "Sentence", 1, min(count, 40), value=1, key="heads_sentence", bind="query-params",
            help="item i is the same sentence in every language (mlneurons.data.parallel)",
        )  # fmt: skip
        columns = {lang: sentences[lang][index - 1] for lang in have}
    else:
        columns = {}
    missing = [lang for lang in languages if not sentences.get(lang)]
    if missing:
        st.caption(f"No built-in parallel sentences in {', '.join(missing)}; type your own.")

model = common.get_model(run) if columns else None
if model is not None:
    with common.shown_errors("The attention view"):
        with st.spinner("Running the model..."):
            found = common.attention(
                common.model_name(run), tuple(columns.values()), int(layer), int(head),
                _model=model,
            )  # fmt: skip
        from circuitsvis.attention import attention_pattern

        views = [
            (title, attention_pattern(tokens, pattern, max_value=1.0, min_value=0.0))
            for title, (tokens, pattern) in zip(columns, found)
        ]
        st.caption(
            f"Layer {layer}, head {head}: rows attend, columns are attended to (BOS kept: "
            "heads park attention there); hover a token to see where it looks."
        )
        longest = max(len(tokens) for tokens, _ in found)
        common.iframe(
            views,
            columns=min(len(views), 3),
            height=120 + (len(views) // 3 + 1) * (80 + 12 * longest),
        )
        frame = pd.DataFrame(
            [
                {"column": title, "from": i, "token": tokens[i], "to": j,
                 "attended": tokens[j], "weight": float(pattern[i][j])}
                for title, (tokens, pattern) in zip(columns, found)
                for i in range(len(tokens))
                for j in range(i + 1)
            ]
        )  # fmt: skip
        common.download_csv("Patterns (CSV)", frame, "attention.csv", key="dl_attention")
