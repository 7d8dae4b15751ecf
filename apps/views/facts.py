"""Facts: which facts the model knows in which language, tracing codes, PROBELESS fact neurons,
language-independent knowledge neurons and where a fact got lost (the logit lens)."""

from __future__ import annotations

from pathlib import Path

import common
import numpy as np
import pandas as pd
import streamlit as st

run = common.run_dir()
st.title("Facts across languages")
if not common.require(run, "probe.json"):
    st.stop()
probe = common.result(run, "probe")
trace = common.result(run, "trace")
fact_neurons = common.result(run, "fact-neurons")
likn = common.result(run, "knowledge-neurons")
lost = common.result(run, "failure-modes")
languages = probe.languages
settings = probe.settings

# ---- summary ---------------------------------------------------------------------------
from mlneurons.interfaces.commands import probe as probe_command  # noqa: E402
from mlneurons.methods.tracing import CODES  # noqa: E402

left, middle, right = st.columns([3, 2, 2])
summary = probe_command.tables(probe)  # P@1 with intervals, the Jaccard tests (if any pair)
p_at_1, jaccard = summary[0], next(iter(summary[1:]), None)
left.markdown("**P@1** per language")
left.dataframe(pd.DataFrame(p_at_1.rows, columns=p_at_1.header), hide_index=True)
left.caption(p_at_1.caption)
middle.markdown("**Shared correct facts** (Jaccard)")
middle.dataframe(
    pd.DataFrame(probe.jaccard())
    .loc[languages, languages]
    .style.format("{:.2f}")
    .background_gradient(cmap="Greens", vmin=0, vmax=1)
)
if jaccard is not None:
    middle.dataframe(pd.DataFrame(jaccard.rows, columns=jaccard.header), hide_index=True)
    middle.caption(jaccard.caption)
if fact_neurons:
    from mlneurons.interfaces.commands import fact_neurons as fact_neurons_command

    right.markdown(f"**PROBELESS neuron overlap** (top-{fact_neurons.k}, mean Jaccard)")
    overlap = pd.DataFrame(fact_neurons.overlap()).astype(float)
    right.dataframe(overlap.style.format("{:.2f}", na_rep="-").background_gradient(cmap="Purples"))
    (overlap_table,) = fact_neurons_command.tables(fact_neurons)
    right.dataframe(pd.DataFrame(overlap_table.rows, columns=overlap_table.header), hide_index=True)
    right.caption(overlap_table.caption)
elif trace is None:
    with right:
        common.require(run, "fact_neurons.json")


# ---- consistency across languages (mlneurons consistency) -----------------------------
def consistency_section(run: Path) -> None:
    """RankC between the languages (chance-corrected, clustered order), answer consistency
    and AC3, transfer: the `consistency` command's result, if the run has one."""
    from mlneurons.interfaces.commands import consistency as consistency_command

    st.header("Consistency across languages")
    result = common.result(run, "consistency")
    if result is None:
        st.caption(
            "No consistency.json: `mlneurons consistency --probe RUN --out RUN` compares the "
            "languages' candidate rankings (RankC) from probe.json in seconds."
        )
        return
    order = result.orders.get("rankc", result.languages)
    left, right = st.columns([2, 3])
    left.markdown("**Chance-corrected RankC** (clustered order)")
    matrix = pd.DataFrame(result.matrix("rankc_corrected")).astype(float).loc[order, order]
    left.dataframe(
        matrix.style.format("{:.2f}", na_rep="-").background_gradient(cmap="Blues", vmax=1)
    )
    for table in consistency_command.tables(result):
        right.dataframe(pd.DataFrame(table.rows, columns=table.header), hide_index=True)
        right.caption(table.caption)
    for line in consistency_command.describe(result)[-3:]:
        st.caption(line)
    from mlneurons.interfaces.plots import plot_rankc

    common.download_png("RankC (PNG)", lambda: plot_rankc(result), "rankc.png", key="dl_rankc")
    common.reproduce(run, "consistency")


consistency_section(run)


# ---- the grid: facts x languages -------------------------------------------------------
rows: dict[tuple[str, str], dict[str, str]] = {}
codes: dict[tuple[str, str], dict[str, int]] = {}
for p in probe.predictions:
    key = (p["relation"], p["uuid"])
    row = rows.setdefault(key, {"relation": p["relation"], "uuid": p["uuid"], "gold": p["gold"]})
    code = trace.codes.get(p["lang"], {}).get(p["uuid"]) if trace else None
    codes.setdefault(key, {})[p["lang"]] = code if code is not None else 2 * bool(p["correct"]) + 1
    row[p["lang"]] = ("✓" if p["correct"] else "✗") + (f" {code}" if code is not None else "")
grid = pd.DataFrame(list(rows.values()))
colours = {-1: "#eeeeee", 0: "#f4b6b6", 1: "#f8d9a8", 2: "#cdeccd", 3: "#86d586"}


def paint(column: pd.Series) -> list[str]:
    if column.name not in languages:
        return [""] * len(column)
    return [
        f"background-color: {colours.get(codes[key].get(column.name), '')}"
        for key in zip(grid["relation"], grid["uuid"])
    ]


st.header("Facts x languages")
legend = "; ".join(f"{code} {name}" for code, name in CODES.items())
st.caption(
    "✓ correct / ✗ wrong"
    + (f", then the tracing code ({legend})" if trace else " (no trace.json: no tracing codes)")
    + ". Gold object in the first language."
)
st.dataframe(grid.style.apply(paint), hide_index=True, height=min(400, 38 + 35 * len(grid)))
a, b, c = st.columns(3)
with a:
    common.download_csv("Grid (CSV)", grid, "facts_grid.csv", key="dl_grid")
with b:
    common.download_json("Predictions (JSON)", probe.predictions, "predictions.json", key="dl_pred")
if trace:
    with c:
        from mlneurons.interfaces.plots import plot_tracing

        common.download_png(
            "Tracing (PNG)",
            lambda: plot_tracing(trace),
            "trace.png",
            key="dl_trace_png",
        )
common.reproduce(run, "probe")
if trace:
    common.reproduce(run, "trace")
if fact_neurons:
    common.reproduce(run, "fact-neurons")

# ---- one fact ------------------------------------------------------------------------
labels = {f"{r['uuid']}  ({r['relation']}: {r['gold']})": r["uuid"] for r in rows.values()}
chosen = st.selectbox("Fact", list(labels), key="fact", bind="query-params")
uuid = labels[chosen]
st.header(f"Fact {uuid}")
facts = None
with common.shown_errors("Reading the fact set"):
    facts = common.fact_set(settings.get("facts", {}))
by_language = {p["lang"]: p for p in probe.predictions if p["uuid"] == uuid}
found = {}
if facts is not None:
    found = {f.lang: f for f in facts.facts if f.uuid == uuid and f.lang in by_language}
detail = pd.DataFrame(
    [
        {
            "language": lang,
            "prompt": facts.fill(found[lang]) if lang in found else "",
            "gold": p["gold"],
            "predicted": p["predicted"],
            "correct": p["correct"],
            "code": codes[(p["relation"], uuid)].get(lang) if trace else None,
            "rule": trace.categories.get(lang, {}).get(uuid, "") if trace else "",
        }
        for lang, p in by_language.items()
    ]
)
st.dataframe(detail, hide_index=True)

fact_sets: dict[str, list] = {}
if fact_neurons:
    fact_sets = {
        lang: per[uuid].tolist() for lang, per in fact_neurons.neurons.items() if uuid in per
    }
    if fact_sets:
        left, right = st.columns(2)
        left.markdown(f"**PROBELESS neurons** (top-{fact_neurons.k}, best first)")
        left.dataframe(
            pd.DataFrame(
                {lang: [common.neuron_label(p) for p in pairs] for lang, pairs in fact_sets.items()}
            ),
            height=250,
        )
        sets = {lang: {tuple(p) for p in pairs} for lang, pairs in fact_sets.items()}
        jaccard = pd.DataFrame(
            {a: {b: len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for b in sets} for a in sets}
        )
        right.markdown("**Their overlap across languages** (Jaccard)")
        right.dataframe(jaccard.style.format("{:.2f}").background_gradient(cmap="Purples"))
    else:
        st.caption("No PROBELESS neurons for this fact: it is wrong in every language probed.")

st.subheader("Live: candidate scores and fact neurons over the prompt")
if facts is None:
    st.info(
        "Live views need the fact set, which this run cannot rebuild "
        f"(facts: {settings.get('facts', {}).get('source', 'unknown')})."
    )
else:
    model = common.get_model(run)
    if model is not None and found:
        with common.shown_errors("Candidate scoring"):
            name = common.model_name(run)
            columns = st.columns(len(found))
            for column, (lang, fact) in zip(columns, found.items()):
                candidates = facts.candidates_for(fact)
                sentences = tuple(facts.fill(fact, c) for c in candidates)
                scores = common.candidate_scores(name, sentences, _model=model)
                probs = np.exp(scores - scores.max())
                table = pd.DataFrame({"candidate": candidates, "share": probs / probs.sum()})
                table = table.sort_values("share", ascending=False).head(8)
                table["candidate"] = [
                    f"{c} (gold)" if c == fact.object else c for c in table["candidate"]
                ]
                column.markdown(f"**{lang}**: {len(candidates)} candidates")
                column.dataframe(table.style.format({"share": "{:.1%}"}), hide_index=True)
        if fact_sets:
            with common.shown_errors("The fact-neuron view"):
                from circuitsvis.tokens import colored_tokens

                union = tuple(sorted({tuple(p) for pairs in fact_sets.values() for p in pairs}))
                prompts = {lang: facts.fill(fact) for lang, fact in found.items()}
                results = common.activations(
                    common.model_name(run), tuple(prompts.values()), union, _model=model
                )
                values = [acts.mean(1) for _, acts in results]
                high = common.colour_bound(values)
                low = -high
                st.caption(
                    f"Mean activation of the {len(union)} PROBELESS neurons of this fact (all "
                    f"languages together) over each prompt; one colour scale, {low:.2f} to {high:.2f}."
                )
                common.iframe(
                    [
                        (lang, colored_tokens(tokens, v.tolist(), low, high))
                        for lang, (tokens, _), v in zip(prompts, results, values)
                    ],
                    columns=min(4, len(prompts)),
                    height=60 + 60 * (len(prompts) // 5 + 1),
                )

# ---- language-independent knowledge neurons (Chen et al.) ------------------------------
st.subheader("Language-independent knowledge neurons (Chen et al. 2024)")
if likn is None:
    common.require(run, "knowledge_neurons.json")
else:
    from mlneurons.interfaces.commands.knowledge_neurons import tables as likn_tables

    common.describe(run, "knowledge-neurons")
    left, right = st.columns([2, 3])
    counts = pd.DataFrame(
        {
            "LIKN (summed over facts)": likn.counts_per_layer(),
            "distinct neurons": likn.counts_per_layer(distinct=True),
        }
    )
    counts.index.name = "layer"
    left.markdown("**LIKN per layer**")
    left.bar_chart(counts["LIKN (summed over facts)"])
    effects = likn_tables(likn)[0]
    right.markdown("**P@1 with each fact's LIKN off** (vs before and vs its matched control)")
    right.dataframe(pd.DataFrame(effects.rows, columns=effects.header), hide_index=True)
    right.caption(effects.caption)
    if uuid in likn.neurons:
        pairs = likn.neurons[uuid].tolist()
        st.caption(
            f"Fact {uuid}: {len(pairs)} neurons shared by its correct languages "
            f"({', '.join(likn.sources[uuid])}): "
            + (", ".join(common.neuron_label(p) for p in pairs) or "none")
        )
    else:
        st.caption(f"Fact {uuid} is right in fewer than two languages: no intersection.")
    common.reproduce(run, "knowledge-neurons")

# ---- recall vs translation failures (Lu et al.) ----------------------------------------
st.subheader("Where the fact got lost: recall or translation (Lu et al. 2025)")
if lost is None:
    common.require(run, "failure_modes.safetensors")
else:
    common.describe(run, "failure-modes")
    band = lost.band()
    modes = lost.modes()
    mine = [i for i, item in enumerate(lost.items) if item["uuid"] == uuid]
    if not mine:
        aside = [s["lang"] for s in lost.shared if s["uuid"] == uuid]
        st.caption(
            f"Fact {uuid} is not right in {lost.pivot} and wrong elsewhere"
            + (f" with distinct answers (set aside in {', '.join(aside)})" if aside else "")
            + ": no lens curves."
        )
    for i in mine:
        item = lost.items[i]
        lang = item["lang"]
        st.caption(
            f"{lang}: {modes[i]} failure. Logit lens at the prediction position of the {lang} "
            f"prompt; English answer {item['english']!r} (tokens {item['english_tokens']}), "
            f"{lang} gold {item['gold']!r} (tokens {item['answer_tokens']}), predicted "
            f"{item['predicted']!r}; middle band: layers {band[0]}-{band[-1]}."
        )
        curve = pd.DataFrame(
            {
                "P(English answer)": lost.p_english[i].tolist(),
                f"P({lang} answer)": lost.p_answer[i].tolist(),
                "rank of English answer": lost.rank_english[i].tolist(),
                f"rank of {lang} answer": lost.rank_answer[i].tolist(),
            }
        )
        curve.index.name = "layer"
        left, right = st.columns([3, 2])
        left.line_chart(curve[["P(English answer)", f"P({lang} answer)"]])
        right.dataframe(curve, height=250)
    common.reproduce(run, "failure-modes")


# ---- Zhao et al.'s factors: object token count, training-text size ---------------------
def factors_section(run: common.Path) -> None:
    """P@1 by the object's token count, and P@1 against training-text size (``factors``)."""
    st.subheader("What P@1 depends on: object token count, text size (Zhao et al.)")
    found = common.result(run, "factors")
    if found is None:
        common.require(run, "factors.json")
        return
    from mlneurons.interfaces.commands.factors import tables as factors_tables

    common.describe(run, "factors")
    left, right = st.columns(2)
    for column, table in zip((left, right), factors_tables(found)):
        column.dataframe(pd.DataFrame(table.rows, columns=table.header), hide_index=True)
        column.caption(table.caption)
    common.reproduce(run, "factors")


factors_section(run)
