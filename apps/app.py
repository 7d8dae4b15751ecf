"""The mlneurons app: browse a run directory; live neuron views with the model.

    streamlit run apps/app.py -- --run DIR [--model NAME]    (or: mlneurons app --run DIR)

Installed, this folder is the package ``mlneurons.app`` (pyproject.toml maps ``apps/`` there);
``common`` and ``views/`` are found next to this file wherever it is.
``?run=DIR``, ``?model=NAME`` and ``?live=false`` in the URL override the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

st.set_page_config(page_title="mlneurons", layout="wide")

args = common.cli_args()
with st.sidebar:
    st.text_input(
        "Run directory", value=args.run, key="run", bind="query-params", help="a CLI --out folder"
    )
    st.text_input(
        "Model for live views",
        value=args.model,
        key="model",
        bind="query-params",
        placeholder="the model the run recorded",
        help="built-in gemma-3-270m, a local Hugging Face folder or a hub name",
    )
    st.toggle("Live views (load the model)", value=True, key="live", bind="query-params")

run = common.run_dir()
# open on the first page this run has results for
first = next(
    (
        title
        for title, files in (
            ("Languages", ("stats.safetensors", "neurons.json")),
            ("Interventions", ("ppl_matrix.json", "steering.json")),
            (
                "Baselines",
                ("methods.json", "steering_sweep.json", "fallback.json", "steer_compare.json"),
            ),
            ("Layers", ("sentence_similarity.safetensors", "latent_language.safetensors")),
            ("Facts", ("probe.json",)),
            ("LRP2", ("lrp2.json",)),
            ("Heads", ("heads.json",)),
        )
        if any(common.has(run, name) for name in files)
    ),
    "Languages",
)
here = Path(__file__).resolve().parent / "views"
pages = [
    # no icons: a page icon becomes the favicon, fetched from fonts.gstatic.com
    st.Page(here / f"{title.lower()}.py", title=title, default=title == first)
    for title in ("Languages", "Interventions", "Baselines", "Layers", "Facts", "LRP2", "Heads")
]
page = st.navigation(pages)

with st.sidebar:
    if run is None and str(st.session_state.get("run") or "").strip():
        st.error(f"{st.session_state['run']!r} is not a directory.")
    elif run is None:
        st.warning("No run directory: give one above or start with `mlneurons app --run DIR`.")
    else:
        fingerprint = common.recorded_model(run)
        st.caption(
            f"**{run.name}**: model `{fingerprint.get('name', '?')}` "
            f"({fingerprint.get('n_layers', '?')} layers x {fingerprint.get('d_mlp', '?')} "
            f"neurons, hash {fingerprint.get('hash', '?')})"
        )
        files = sorted(p.name for p in run.iterdir() if p.is_file())
        st.caption("Files: " + ", ".join(files))
page.run()
