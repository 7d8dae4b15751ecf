"""LRP2: the (LIRP, LSRP) grid per language, P@1 and Trans before and after, live projection."""

from __future__ import annotations

import common
import pandas as pd
import streamlit as st

run = common.run_dir()
st.title("LRP2: language representation projection")
if not common.require(run, "lrp2.json"):
    st.stop()
result = common.result(run, "lrp2")
from mlneurons.interfaces.commands import lrp2 as lrp2_command  # noqa: E402
from mlneurons.interfaces.plots import plot_lrp2_grid  # noqa: E402
from mlneurons.methods.lrp2 import projection  # noqa: E402

summary = pd.DataFrame(
    {
        lang: {
            "LIRP layer": result.selected[lang][0],
            "LSRP layer": result.selected[lang][1],
            "P@1 before": result.test_p_at_1[lang]["before"],
            "P@1 after": result.test_p_at_1[lang]["after"],
            "Trans before": result.trans[lang]["before"],
            "Trans after": result.trans[lang]["after"],
            "neuron overlap before": result.neuron_overlap[lang]["before"],
            "neuron overlap after": result.neuron_overlap[lang]["after"],
        }
        for lang in result.languages
    }
).T.astype(float)
common.describe(run, "lrp2")
st.caption(f"Trans: Jaccard of the correct facts with {result.pivot}.")
(table,) = lrp2_command.tables(result)  # with intervals and tests (results that keep per-fact data)
st.dataframe(pd.DataFrame(table.rows, columns=table.header).astype(str), hide_index=True)
if table.caption:
    st.caption(table.caption)
else:
    st.caption("This result was saved without per-fact outcomes: values only, no intervals.")
a, b = st.columns(2)
with a:
    common.download_csv("Summary (CSV)", summary, "lrp2_summary.csv", key="dl_lrp2_csv")
with b:
    common.download_json("lrp2.json", result.to_json(), "lrp2.json", key="dl_lrp2_json")
probe = common.result(run, "probe")
common.reproduce(run, "lrp2")

language = st.selectbox("Language", result.languages, key="lrp2_lang", bind="query-params")
st.header(f"Grid: {language} -> {result.pivot} -> {language}")
layers = [str(layer) for layer in result.layers]
grid = pd.DataFrame(result.grid[language], index=layers, columns=layers).astype(float) * 100
grid.index.name, grid.columns.name = "LIRP layer", "LSRP layer"
lirp, lsrp = (str(x) for x in result.selected[language])


def colours(frame: pd.DataFrame) -> pd.DataFrame:
    """Greens by dev P@1 (blank where LIRP is not below LSRP); the chosen pair in bold."""
    from matplotlib import colormaps

    greens = colormaps["Greens"]
    styles = pd.DataFrame("", index=frame.index, columns=frame.columns)
    for row in grid.index:
        for column in grid.columns:
            value = grid.loc[row, column]
            if not pd.isna(value):
                r, g, b, _ = (int(255 * c) for c in greens(0.1 + 0.8 * value / 100))
                text = "white" if value > 60 else "black"
                styles.loc[row, column] = f"background-color: rgb({r},{g},{b}); color: {text}"
    styles.loc[lirp, lsrp] += "; font-weight: bold"
    return styles


cells = grid.map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
cells.loc[lirp, lsrp] = "★ " + cells.loc[lirp, lsrp]
left, right = st.columns([2, 1])
left.dataframe(cells.style.apply(colours, axis=None))
right.caption(
    f"Dev P@1 in % per (LIRP, LSRP) pair; the chosen pair ({lirp}, {lsrp}) is starred "
    f"({result.settings.get('tie_rule', 'ties: the earlier LIRP, then LSRP layer')})."
)
other = result.runner_up.get(language)
if other:
    verdict = "distinguishable" if other["distinguishable"] else "**not distinguishable**"
    right.caption(
        f"Runner-up {tuple(other['pair'])} ({other['dev_p_at_1']:.0%} on dev): the chosen pair "
        f"is {verdict} from it (exact McNemar p = {other['test']['p_value']:.2f} on "
        f"{other['test']['difference']['n']} dev facts)."
    )
with right:
    common.download_png(
        "Grid (PNG)",
        lambda: plot_lrp2_grid(result, language),
        f"lrp2_grid_{language}.png",
        key="dl_grid_png",
    )

# ---- live projection ---------------------------------------------------------------------
st.header("Projection on a prompt")
if not common.require(run, "language_vectors.safetensors"):
    st.stop()
vectors = common.language_vectors(run)
facts = common.fact_set(probe.settings.get("facts", {})) if probe else None
default = ""
if facts is not None and language in facts.languages:
    fact = facts.facts_for(language)[0]
    default = (
        facts.templates[(language, fact.relation)]
        .split("[Y]")[0]
        .replace("[X]", fact.subject)
        .rstrip()
    )
elif common.parallel_sentences([language])[language]:
    default = common.parallel_sentences([language])[language][0]
prompt = st.text_input(
    "Prompt (the next token is predicted)", value=default, key=f"lrp2_prompt_{language}"
)
a, b = st.columns(2)
n_layers = vectors.vectors.shape[1]
first = a.selectbox("LIRP layer", range(n_layers), index=int(lirp), key=f"lirp_{language}")
second = b.selectbox("LSRP layer", range(n_layers), index=int(lsrp), key=f"lsrp_{language}")
model = common.get_model(run) if prompt.strip() else None
if model is not None:
    with common.shown_errors("The projection"):
        hooks = projection(
            vectors, language, lirp_layer=first, lsrp_layer=second, pivot=result.pivot, model=model
        )
        without = common.next_token_table(model, prompt, [])
        with_projection = common.next_token_table(model, prompt, hooks)
        left, right = st.columns(2)
        left.markdown("**Next token without**")
        left.dataframe(
            pd.DataFrame(without).style.format({"probability": "{:.1%}"}), hide_index=True
        )
        right.markdown(f"**With LIRP at {first}, LSRP at {second}**")
        right.dataframe(
            pd.DataFrame(with_projection).style.format({"probability": "{:.1%}"}), hide_index=True
        )
        common.download_json(
            "Next tokens (JSON)",
            {
                "prompt": prompt,
                "lirp": first,
                "lsrp": second,
                "without": without,
                "with": with_projection,
            },
            "projection.json",
            key="dl_projection",
        )
