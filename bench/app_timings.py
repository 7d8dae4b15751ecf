"""How fast the app answers: saved-run pages without a model, and a live neuron view.

    python bench/app_timings.py --run DIR     (DIR: a run of the built-in model, e.g. runs/report)

(a) each page of a saved run with live views off (Streamlit AppTest, a fresh session each
    time; the first render of the process, which imports torch and reads the files, apart);
(b) the Languages page's live neuron view of a new 64-token prompt with the model loaded:
    the forward over the prompt, the colour scale and the circuitsvis iframe.
Targets: 2 s for (a), 3 s for (b), on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parent.parent / "apps" / "app.py"
PAGES = ("languages", "interventions", "facts", "lrp2")
TARGET_SAVED_S, TARGET_LIVE_S = 2.0, 3.0


def session(run: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=600)
    at.query_params.update(run=run, **params)
    return at


def timed(at: AppTest, page: str | None = None) -> float:
    if page:
        at.switch_page(f"views/{page}.py")
    start = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - start
    problems = [e.value for e in [*at.exception, *at.error]]
    if problems:
        raise SystemExit(f"the app failed: {problems}")
    return seconds


def prompts(run: Path, n: int, tokens: int = 64) -> list[str]:
    """``n`` different prompts of ``tokens`` tokens of built-in English held-out text."""
    from transformers import AutoTokenizer

    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.models.loading import resolve_model_path

    meta = json.loads((run / "neurons_meta.json").read_text())
    name = meta.get("model", {}).get("name") or "gemma-3-270m"
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
    text = " ".join(MultilingualCorpus.builtin(["en"], split="heldout").sources["en"]())
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[k * tokens : (k + 1) * tokens]) for k in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/report", help="a run directory of the model")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = str(Path(args.run).resolve())

    first = timed(session(run, live="false"))
    print(f"(a) first render of the process (imports, reading the run): {first:.2f} s")
    for page in PAGES:
        times = []
        for _ in range(args.repeats):
            at = session(run, live="false")
            at.run()
            times.append(timed(at, page))
        median = statistics.median(times)
        print(
            f"(a) saved-run page {page:13s} {median:.2f} s (median of {args.repeats}), "
            f"{median / TARGET_SAVED_S:.2f} x the {TARGET_SAVED_S:.0f} s target"
        )

    at = session(run)
    load = timed(at)  # loads the model, renders the built-in sentence and the card
    print(f"(b) first live render (model load, first views): {load:.1f} s")
    texts = prompts(Path(run), args.repeats + 1)
    at.radio(key="source").set_value("my own text")
    timed(at)
    at.text_area(key="text").set_value(texts[0])
    timed(at)  # warm-up of this view
    times = []
    for text in texts[1:]:
        at.text_area(key="text").set_value(text)
        times.append(timed(at))
    median = statistics.median(times)
    print(
        f"(b) live neuron view of a new 64-token prompt: {median:.2f} s (median of "
        f"{args.repeats}), {median / TARGET_LIVE_S:.2f} x the {TARGET_LIVE_S:.0f} s target"
    )


if __name__ == "__main__":
    main()
