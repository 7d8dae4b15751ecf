"""Baselines and steering: LAPE against LAP, LAVE and RS; matched controls; steering modes
and strengths; the fallback curve; residual directions against neurons (steer-compare)."""

from __future__ import annotations

import common
import pandas as pd
import streamlit as st

run = common.run_dir()
st.title("Baselines and steering")


def _percent(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return frame.assign(**{c: frame[c] * 100 for c in columns})


# ---- methods ------------------------------------------------------------------------------
st.header("LAPE against its baselines")
st.caption(
    "Tang et al. compare LAPE with LAP (firing probability above a bar), LAVE (LAPE's "
    "entropy on mean activation values) and RS (random neurons); PV (relative weight change "
    "to fine-tuned checkpoints) runs when checkpoints are given."
)
if common.require(run, "methods.json"):
    comparison = common.result(run, "compare-methods")
    common.describe(run, "compare-methods")
    common.command_table(run, "compare-methods")
    method = st.selectbox("Matrix of", comparison.methods, key="method", bind="query-params")
    change = pd.DataFrame(
        comparison.relative_change(method).numpy() * 100,
        index=comparison.languages,
        columns=comparison.languages,
    )
    change.index.name = "deactivated"
    intervals = comparison.change_intervals(method)
    st.dataframe(common.change_matrix(change, intervals))
    st.caption(
        "Relative perplexity change in % (rows: deactivated; columns: evaluated)"
        + ("; [lo, hi] and n.s. as above" if intervals is not None else "")
        + "."
    )
    a, b = st.columns(2)
    with a:
        common.download_json(
            "Comparison (JSON)", comparison.to_json(), "methods.json", key="dl_methods"
        )
    with b:
        from mlneurons.interfaces.plots import plot_method_comparison

        common.download_png(
            "Matrices (PNG)",
            lambda: plot_method_comparison(comparison),
            "methods.png",
            key="dl_methods_png",
        )
    common.reproduce(run, "compare-methods")

# ---- matched controls ---------------------------------------------------------------------
st.header("Matched controls")
matrix = common.result(run, "ablate")
if matrix is not None and matrix.matched_control:
    from mlneurons.interfaces.commands.ablate import caption_of, notes
    from mlneurons.interfaces.plots import format_change, format_points, format_test

    own = matrix.relative_change().diagonal()
    uniform = matrix.relative_change("random_control").diagonal() if matrix.random_control else None
    draws = matrix.matched_draws().diagonal(dim1=1, dim2=2)  # [draw, language]
    tests = matrix.own_changes()  # None: saved without per-row losses (values alone)
    rows = []
    for i, lang in enumerate(matrix.languages):
        test = None if tests is None else tests[lang]
        row = {"language": lang}
        row["own neurons off"] = format_change(
            float(own[i]), None if test is None else test.own.difference
        )
        if uniform is not None:
            row["uniform control"] = format_change(
                float(uniform[i]), None if test is None else test.uniform
            )
        row["matched control, mean"] = format_change(
            float(draws[:, i].mean()), None if test is None else test.matched
        )
        row["matched control, sd (%)"] = f"{100 * float(draws[:, i].std(correction=0)):.1f}"
        row["draws as large"] = f"{int((draws[:, i] >= own[i]).sum())}/{len(draws)}"
        if test is not None and test.versus_matched is not None:
            flag = format_test(test.versus_matched, short=True)
            row["own - matched"] = format_points(test.versus_matched.difference) + (
                f" {flag}" if flag else ""
            )
        row.update(
            {f"draw {d + 1} (%)": f"{100 * float(draws[d, i]):+.1f}" for d in range(len(draws))}
        )
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption(
        f"Each language's own perplexity change. Matched control: per layer, neurons from the "
        f"same firing-probability bin ({matrix.matched['bins']} bins per layer) on that "
        f"language, none a language neuron; {len(draws)} draws (seeds {matrix.seed}.."
        f"{matrix.seed + len(draws) - 1}); they are the null: draws as large counts those that "
        "changed perplexity at least as much as the language's own neurons. "
        + caption_of(notes(matrix))
    )
else:
    st.info("This run's perplexity matrix has no matched controls. Produce them with:")
    from mlneurons.interfaces.commands import command

    st.code(command("ablate").producer(run), language="bash")

# ---- steering sweep -----------------------------------------------------------------------
st.header("Steering modes and strengths")
if common.require(run, "steering_sweep.json"):
    sweep = common.result(run, "steer-sweep")
    measures = ["target_rate", "source_rate", "degenerate_rate"]
    columns = ["mode", "alpha", "top_rate", "n_neurons", *measures, "fluency_ppl"]
    points = pd.DataFrame(sweep.points)[columns].astype({"fluency_ppl": float})
    common.describe(run, "steer-sweep")
    from mlneurons.interfaces.commands import command

    for table in command("steer-sweep").tables(sweep):  # best per mode, every setting
        st.dataframe(pd.DataFrame(table.rows, columns=table.header).astype(str), hide_index=True)
        st.caption(table.caption)
    shown = _percent(points, measures)
    measure = st.radio("Plot", [*measures, "fluency_ppl"], horizontal=True, key="sweep_measure")
    chart = shown.assign(setting=points["mode"] + " top " + points["top_rate"].astype(str))
    st.line_chart(chart, x="alpha", y=measure, color="setting", height=260)
    labels = [f"{p.mode} alpha {p.alpha:g} top {p.top_rate:g}" for p in sweep.points]
    chosen = st.selectbox("Answers of", range(len(labels)), format_func=labels.__getitem__)
    st.dataframe(pd.DataFrame(sweep.points[chosen].samples), hide_index=True)
    common.reproduce(run, "steer-sweep")

# ---- fallback -----------------------------------------------------------------------------
st.header("Fallback curve")
if common.require(run, "fallback.json"):
    curve = common.result(run, "fallback")
    shares = pd.DataFrame(
        [{c: 100 * p.distribution[c] for c in curve.categories} for p in curve.points],
        index=[f"{p.share:.0%} off ({p.n_deactivated})" for p in curve.points],
    )
    common.describe(run, "fallback")
    st.caption("Share of answers per identified language, in %.")
    st.bar_chart(shares, height=260)
    from mlneurons.interfaces.commands import command

    table = command("fallback").tables(curve)[0]  # Wilson intervals, McNemar against none off
    st.dataframe(pd.DataFrame(table.rows, columns=table.header).astype(str), hide_index=True)
    st.caption(table.caption)
    common.reproduce(run, "fallback")

# ---- residual directions against neurons --------------------------------------------------
st.header("Residual directions against neurons")
st.caption(
    "CLaS-Bench's comparison on the same fact questions: directions in the residual stream "
    "(difference of means, probe, LDA, principal component) and the neuron steering modes; "
    "forcing = answers in the target language, relevance = the answer names the gold object, "
    "their harmonic mean, and fluency (perplexity under the unsteered model)."
)
if common.require(run, "steer_compare.json"):
    compared = common.result(run, "steer-compare")
    common.describe(run, "steer-compare")
    from mlneurons.interfaces.commands import command

    scores, pairs, _ = command("steer-compare").tables(compared)
    for table in (scores, pairs):  # per method with intervals; every pair, Holm, n.s.
        st.dataframe(pd.DataFrame(table.rows, columns=table.header).astype(str), hide_index=True)
        st.caption(table.caption)
    from mlneurons.interfaces.plots import plot_steering_comparison

    figure = plot_steering_comparison(compared)
    st.pyplot(figure, clear_figure=True)
    chosen = st.selectbox("Answers of", compared.methods, key="compare_method")
    outcome = compared.outcome(chosen)
    answers = pd.DataFrame(
        {
            "question": [q["question"] for q in compared.questions],
            "gold": [" / ".join(q["answers"].values()) for q in compared.questions],
            "answer": outcome.answers,
            "language": outcome.languages,
            "forced": outcome.forced,
            "relevant": outcome.relevant,
            "degenerate": outcome.degenerate,
        }
    )
    st.dataframe(answers, hide_index=True)
    common.download_json(
        "Comparison (JSON)", compared.to_json(), "steer_compare.json", key="dl_compare"
    )
    common.reproduce(run, "steer-compare")
