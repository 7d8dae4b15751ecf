"""The Streamlit app (apps/app.py), page by page, on a run of the tiny planted model (AppTest)."""

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
pytest.importorskip("circuitsvis")
from streamlit.testing.v1 import AppTest  # noqa: E402
from tiny import LANGS, PLANTED, language_text, tiny_facts  # noqa: E402

from mlneurons.interfaces.cli import main as cli_main

APP = Path(__file__).resolve().parent.parent / "apps" / "app.py"
# the app runs torch on one thread; the tests that follow this module should not
os.environ.setdefault("MLNEURONS_APP_THREADS", str(__import__("torch").get_num_threads()))


def make_run(planted_dir: Path, root: Path, *, everything: bool = True) -> Path:
    """A run directory of the planted model written by the CLI with tiny budgets.

    The facts are the tiny fact set in the mLAMA layout, so the app can rebuild them.
    """
    corpus = root / "corpus"
    corpus.mkdir()
    for lang in LANGS:
        (corpus / f"{lang}.txt").write_text(language_text(lang, 600) + "\n")
    out, model = root / "run", ["--model", str(planted_dir)]
    facts = ["--facts", f"mlama:{tiny_facts().to_mlama(root / 'mlama')}"]
    steps = [
        ["lape", *model, "--corpus", str(corpus), "--languages", ",".join(LANGS)]
        + ["--tokens-per-language", "500", "--seq-len", "64", "--top-rate", "0.1"],
    ]
    if everything:
        steps += [
            ["ablate", "--neurons", str(out), "--tokens-per-language", "64", "--seq-len", "32"],
            ["steer", "--neurons", str(out), "--source", "fr", "--target", "zh"]
            + ["--n-questions", "2", "--max-new-tokens", "3"],
            ["compare-methods", "--neurons", str(out), "--tokens-per-language", "64"]
            + ["--seq-len", "32"],
            ["steer-sweep", "--neurons", str(out), "--source", "fr", "--target", "zh"]
            + ["--modes", "add,scale", "--alphas", "1,2", "--top-rates", "0.1"]
            + ["--n-questions", "2", "--max-new-tokens", "3"],
            ["fallback", "--neurons", str(out), "--language", "fr", "--shares", "0,0.5,1"]
            + ["--n-questions", "2", "--max-new-tokens", "3"],
            ["probe", *model, *facts],
            ["fact-neurons", *model, *facts, "--probe", str(out), "--k", "3"],
            ["trace", *model, *facts, "--probe", str(out)],
            ["knowledge-neurons", *model, *facts, "--probe", str(out)],
            ["failure-modes", *model, *facts, "--probe", str(out)],
            ["factors", *model, *facts, "--probe", str(out), "--text-sizes", "en=2,de=1"],
            ["lrp2", *model, *facts, "--layers", "0,1", "--sentences", "4", "--k", "2"],
            ["ses", *model, "--languages", "en,fr,zh", "--sentences", "3"],
        ]
    for argv in steps:
        assert cli_main([*argv, "--out", str(out)]) == 0, argv[0]
    return out


@pytest.fixture(scope="session")
def tiny_run(planted_dir, tmp_path_factory):
    return make_run(planted_dir, tmp_path_factory.mktemp("apprun"))


def open_app(run, page=None, **params) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.query_params.update(run=str(run), **params)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    return at


def clean(at: AppTest) -> AppTest:
    """No exception reached the page and no error box is shown."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def iframes(at: AppTest) -> list[str]:
    return [element.proto.srcdoc for element in at.get("iframe")]


def views(doc: str, name: str) -> list[dict]:
    """The props of every circuitsvis ``name`` view rendered in an iframe document."""
    calls = re.findall(rf"CircuitsVis\.{name},\s*(\{{.*?\}})\s*\)", doc, flags=re.S)
    return [json.loads(call) for call in calls]


def captions(at: AppTest) -> str:
    return "\n".join(e.value for e in at.caption)


def test_opens_on_languages_with_a_rendered_offline_view(tiny_run):
    at = clean(open_app(tiny_run))
    assert at.title[0].value.startswith("Languages")
    docs = iframes(at)
    assert docs, "no circuitsvis view without a click"
    first = docs[0]
    assert views(first, "ColoredTokens") and views(first, "TextNeuronActivations")
    assert first.count("CircuitsVis.render(") == 5  # four columns and one detail, one script
    assert "unpkg.com" not in first and "https://" not in first.split("<script")[0]


def test_sliders_reselect_from_the_statistics_without_a_model(tiny_run):
    at = clean(open_app(tiny_run, live="false"))
    assert not iframes(at)
    assert "(as saved)" in captions(at)
    before = at.dataframe[0].value["neurons"].sum()
    at.slider(key="top_rate").set_value(0.02).run()
    clean(at)
    assert "(re-selected from the statistics)" in captions(at)
    assert at.dataframe[0].value["neurons"].sum() < before
    assert any("--stats" in c.value and "--top-rate 0.02" in c.value for c in at.code)


def test_language_columns_share_one_colour_scale(tiny_run):
    at = open_app(tiny_run)
    at.selectbox(key="lang").set_value("fr")
    at.radio(key="source").set_value("my own text").run()
    at.text_area(key="text").set_value("fr1 fr2 fr3\nen1 en2 en3").run()
    clean(at)
    columns = views(iframes(at)[0], "ColoredTokens")
    assert [c["tokens"] for c in columns] == [["fr1", " fr2", " fr3"], ["en1", " en2", " en3"]]
    french, english = columns
    assert min(french["values"]) > 0.1 and max(abs(v) for v in english["values"]) < 1e-6
    assert french["maxValue"] == english["maxValue"] == pytest.approx(max(french["values"]))


def test_neuron_card(tiny_run):
    at = open_app(tiny_run)
    at.selectbox(key="lang").set_value("fr").run()
    clean(at)
    layer, neuron = PLANTED["fr"][0]
    assert f"layer {layer}, neuron {neuron}" in at.header[-1].value
    card = next(d.value for d in at.dataframe if "firing probability" in d.value.columns)
    assert card.loc["fr", "firing probability"] == pytest.approx(1.0)
    assert card.loc["en", "firing probability"] == 0
    docs = iframes(at)
    assert len(docs) == 2 and views(docs[1], "TopkTokens")
    promoted = next(d.value for d in at.dataframe if list(d.value.columns) == ["token", "logit"])
    assert promoted["token"].str.strip().str.startswith("fr").all()  # writes into the fr output


def test_interventions_steer_and_loss_change(tiny_run):
    at = open_app(tiny_run, "interventions")
    clean(at)
    assert at.dataframe, "the saved perplexity matrix and steering samples"
    rates = at.dataframe[0].value  # the saved steering run: 2 questions, nothing significant
    assert list(rates.columns) == ["", "before", "after", "difference", "exact McNemar"]
    assert rates["exact McNemar"].str.endswith(" n.s.").all()
    at.text_area(key="prompt").set_value("fr1 fr2 fr3")
    at.selectbox(key="steer").set_value("zh")
    at.button[0].click().run()
    clean(at)
    without, with_ = (t.value.split() for t in at.text[:2])
    assert without and all(w.startswith("fr") for w in without)
    assert with_ and all(w.startswith("zh") for w in with_)
    at.radio(key="mode").set_value("add: + mean x scale")
    at.button[0].click().run()
    clean(at)
    with_ = at.text[1].value.split()  # adding zh's mean activation also switches to zh
    assert with_ and all(w.startswith("zh") for w in with_)
    at.selectbox(key="ppl_row").set_value("en")
    at.selectbox(key="ppl_col").set_value("en").run()
    at.text_area(key="ppl_text_en").set_value("en1 en2 en3 en4 en5").run()
    clean(at)
    before, after = map(float, re.search(r"mean loss ([\d.]+) -> ([\d.]+)", captions(at)).groups())
    assert after > before + 1  # both planted English neurons write the English predictions
    assert views(iframes(at)[-1], "ColoredTokens")


def test_baselines_page(tiny_run):
    at = clean(open_app(tiny_run, "baselines"))
    methods = at.dataframe[0].value
    assert list(methods["method"]) == ["lape", "lap", "lave", "rs"]
    assert methods["reading"][1] == "P(fire) > 0.95 (probability reading)"
    assert (
        "language neurons excluded (layer matching and the exclusion are this project's"
        in (methods["reading"][3])
    )
    assert "this project's summary, not the paper's" in " ".join(c.value for c in at.caption)
    saved = json.loads((tiny_run / "methods.json").read_text())
    assert methods["neurons"].tolist() == [
        sum(saved["counts"][m].values()) for m in saved["methods"]
    ]
    # this run's held-out text is one row per language: no intervals, the values alone
    assert "specificity - lape's" in methods.columns and "[" not in methods["own increase"][0]
    assert "no intervals: 1 held-out row per language" in captions(at)
    controls = at.dataframe[2].value  # the matched controls of ablate's default 3 draws
    assert list(controls["language"]) == list(LANGS) and "draw 3 (%)" in controls.columns
    best, sweep = at.dataframe[3].value, at.dataframe[4].value  # best per mode, every setting
    assert list(best["mode"]) == ["unsteered", "add", "scale"]
    assert [(m, a) for m, a in zip(sweep["mode"], sweep["alpha"])] == [
        ("add", "1"),
        ("add", "2"),
        ("scale", "1"),
        ("scale", "2"),
    ]
    assert all(re.fullmatch(r"[\d.]+% \[[\d.]+%, [\d.]+%\]", cell) for cell in sweep["in zh"])
    assert sweep["vs unsteered (exact McNemar)"].str.contains("Holm").all()
    assert "Fallback curve" in [h.value for h in at.header]
    fallback = at.dataframe[-1].value  # the last table: shares with intervals, McNemar
    assert "in fr vs none off" in fallback.columns and fallback["share off"].iloc[0] == "0%"
    at.selectbox(key="method").set_value("rs").run()
    clean(at)


def test_baselines_page_shows_intervals_and_flags(tiny_run, tmp_path, monkeypatch):
    from test_deactivation_intervals import _comparison, _matched_matrix

    from mlneurons.methods import deactivation

    monkeypatch.setattr(deactivation, "MIN_RESAMPLED", 2)  # two rows, enumerable intervals

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    _comparison().save(run)  # hand-made results of two rows per language, known intervals
    _matched_matrix().save(run)
    at = clean(open_app(run, "baselines"))
    methods = at.dataframe[0].value
    assert list(methods["specificity"]) == ["0.97 [0.94, 1.00]", "0.53 [0.43, 0.62]"]
    assert list(methods["specificity - m's"]) == ["–", "-0.44 [-0.56, -0.32]"]
    cells = at.dataframe[1].value  # method m's matrix: value [lo, hi], n.s. covering 0
    assert cells.loc["a", "a"] == "+101 [+49.2, +172]" and cells.loc["a", "b"].endswith(" n.s.")
    controls = at.dataframe[2].value.set_index("language")
    assert controls.loc["a", "own - matched"].endswith(" n.s.")
    assert controls.loc["b", "own - matched"].startswith("+348.2 pp [+171.8, +638.9]")
    assert not controls.loc["b", "own - matched"].endswith("n.s.")
    assert controls.loc["a", "draws as large"] == "1/2"
    assert "Holm-adjusted across the 2 languages" in captions(at)


def test_layers_page(tiny_run, planted_model):
    from mlneurons.methods.readouts import latent_language

    at = clean(open_app(tiny_run, "layers"))
    assert "mlneurons logit-lens" in " ".join(c.value for c in at.code)  # not run yet: how to
    words = {lang: [f"{lang}{i}" for i in range(1, 7)] for lang in ("fr", "zh", "en")}
    lens = latent_language(planted_model, source="fr", target="zh", words=words, n_shots=2)
    lens.save(tiny_run)
    try:
        at = clean(open_app(tiny_run, "layers"))
    finally:
        (tiny_run / "latent_language.safetensors").unlink()
    table = at.dataframe[-1].value
    assert list(table.columns) == ["source", "target", "en", "P(zh)", "P(en)"] and len(table) == 6
    lens_layers = at.dataframe[-2].value  # per layer with intervals over the 6 words
    assert list(lens_layers.columns) == ["layer", "P(zh)", "P(en)", "P(zh) - P(en)"]
    ses = at.dataframe[0].value  # per layer with intervals over the sentences
    assert list(ses.columns) == ["layer", "SES", ""] and ses["SES"].str.contains(r"\[").all()
    assert at.dataframe[1].value.shape == (3, 3)  # the SES matrix of en, fr, zh


def test_facts_page(tiny_run):
    at = clean(open_app(tiny_run, "facts"))
    p_at_1 = at.dataframe[0].value  # with Wilson / cluster-bootstrap intervals
    assert list(p_at_1.columns)[-2:] == ["macro", "micro"] and "%, " in p_at_1["micro"][0]
    assert "Holm-adjusted" in captions(at)  # the Jaccard tests across language pairs
    grid = next(d.value for d in at.dataframe if "uuid" in d.value.columns)
    assert set(grid["uuid"]) == {"f1", "f2", "f3", "f4"} and {"en", "de"} <= set(grid.columns)
    assert grid.set_index("uuid").loc["f1", "en"] == "✓ 2"  # correct, absent from the text
    facts = at.selectbox(key="fact")
    facts.set_value(next(o for o in facts.options if o.startswith("f2"))).run()
    clean(at)
    assert at.header[-1].value == "Fact f2"
    assert "No PROBELESS neurons" in captions(at)  # wrong in both languages
    assert "right in fewer than two languages: no intersection" in captions(at)
    assert "no lens curves" in captions(at)  # not right in English
    at.selectbox(key="fact").set_value(at.selectbox(key="fact").options[0]).run()
    clean(at)
    scores = [d.value for d in at.dataframe if "candidate" in d.value.columns]
    assert len(scores) == 2 and all(s["share"].sum() == pytest.approx(1) for s in scores)
    assert views(iframes(at)[-1], "ColoredTokens")


def test_facts_page_consistency_section(tiny_run, tmp_path):
    """The consistency section: a hint without consistency.json; with one (hand-made, en and
    de agreeing on every first choice), the clustered RankC matrix and the tables."""
    from mlneurons.data.facts import Fact
    from mlneurons.methods.consistency import consistency
    from mlneurons.methods.probing.result import ProbeResult, ranked_prediction

    assert "No consistency.json" in captions(clean(open_app(tiny_run, "facts")))
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    rows = [
        ranked_prediction(Fact(f"q{i}", lang, "P1", "s", "a"), ["a", "b", "c"], [0, -1, -2 - i])
        for i in range(3)
        for lang in ("en", "de")
    ]
    consistency(ProbeResult(["en", "de"], ["P1"], rows, {}, {})).save(run)
    at = clean(open_app(run, "facts"))
    assert "Consistency across languages" in [h.value for h in at.header]
    matrix = next(d.value for d in at.dataframe if list(d.value.columns) == ["en", "de"])
    assert matrix.loc["en", "de"] == pytest.approx(1.0)  # identical rankings
    assert "AC3" in captions(at)


def test_lrp2_page(tiny_run):
    at = clean(open_app(tiny_run, "lrp2"))
    assert at.header[0].value.startswith("Grid: de")
    summary = at.dataframe[0].value  # the command's table: intervals and the McNemar test
    assert "exact McNemar p" in summary.columns and "[" in summary["test P@1 before"][0]
    assert "exact McNemar" in captions(at) and "Runner-up (" not in captions(at)  # one pair
    tables = [d.value for d in at.dataframe if "probability" in d.value.columns]
    assert len(tables) == 2 and all(len(t) == 10 for t in tables)
    at.selectbox(key="lirp_de").set_value(1).run()  # LIRP after LSRP: refused, shown
    assert at.error and "LSRP must come after LIRP" in at.error[0].value
    assert not at.exception


def test_missing_results_name_their_command_and_the_first_page_follows(tiny_run, tmp_path):
    shutil.copy(tiny_run / "probe.json", tmp_path / "probe.json")
    at = clean(open_app(tmp_path))
    assert at.title[0].value.startswith("Facts")  # the only result there
    for page, command in (
        ("languages", "mlneurons lape"),
        ("interventions", "mlneurons lape"),
        ("lrp2", "mlneurons lrp2"),
    ):
        at.switch_page(f"views/{page}.py").run()
        clean(at)
        assert any(command in c.value for c in at.code), page


def test_model_errors_are_shown_not_raised(tiny_run):
    at = open_app(tiny_run, model="no-such-model-xyz")
    assert not at.exception
    assert any("Could not load model 'no-such-model-xyz'" in e.value for e in at.error)
    assert at.dataframe  # the saved results still show


def test_reproduce_uses_the_runs_config(tiny_run, tmp_path):
    """The "Reproduce" line is the command line of the config the run recorded (cfg.json)."""
    from mlneurons.interfaces.commands.lape import LapeConfig

    for name in ("stats.safetensors", "neurons.json", "neurons_meta.json", "summary.json"):
        shutil.copy(tiny_run / name, tmp_path / name)
    LapeConfig(languages=("en", "fr", "zh", "ja"), top_rate=0.05, seq_len=64).save(tmp_path)
    at = clean(open_app(tmp_path, live="false"))
    command = (
        f"mlneurons lape --languages en,fr,zh,ja --seq-len 64 --top-rate 0.05 --out {tmp_path}"
    )
    assert any(c.value == command for c in at.code)


def test_a_run_that_is_not_a_directory_is_named(tmp_path):
    at = open_app(tmp_path / "nowhere", live="false")
    assert not at.exception
    assert "is not a directory" in at.error[0].value
    assert any("mlneurons lape" in c.value for c in at.code)


def test_baselines_page_shows_the_steering_comparison(tiny_run, tmp_path):
    from test_steer_compare import _outcome

    from mlneurons.data.fact_questions import FactQuestion
    from mlneurons.methods.steering_comparison import UNSTEERED, SteeringComparison

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    n = 12  # unsteered never forced; lda always (McNemar 2/2^12); add on half the questions
    base = _outcome(UNSTEERED, [False] * n, [True] * 6 + [False] * 6, family="none")
    lda = _outcome("lda", [True] * n, [True] * 3 + [False] * 9, nll=[4.0] * n)
    add = _outcome("neurons-add", [True] * 2 + [False] * 10, [True] * 6 + [False] * 6)
    add = dataclasses.replace(add, family="neurons")
    questions = [FactQuestion(f"q{i}?", {"es": f"x{i}", "zh": f"y{i}"}) for i in range(n)]
    SteeringComparison.from_outcomes("es", "zh", questions, [base, lda, add]).save(run)
    at = clean(open_app(run, "baselines"))
    assert "Residual directions against neurons" in [h.value for h in at.header]
    scores = next(d.value for d in at.dataframe if "harmonic mean" in d.value.columns)
    assert list(scores["method"]) == [UNSTEERED, "lda", "neurons-add"]
    assert scores["forcing"][1] == "100.0% [75.8%, 100.0%]"  # Wilson 12/12: 12 / (12 + z^2)
    assert scores["relevance"][1].startswith("25.0% [")
    assert list(scores["family"]) == ["none", "direction", "neurons"]
    pairs = next(d.value for d in at.dataframe if "forcing a − b" in d.value.columns)
    forcing = dict(zip(zip(pairs["a"], pairs["b"]), pairs["forcing a − b"]))
    assert not forcing[(UNSTEERED, "lda")].endswith("n.s.)")  # 12 discordant, all one way
    assert forcing[(UNSTEERED, "neurons-add")].endswith("n.s.)")  # 2 discordant: p = 0.5
    assert at.get("image"), "the comparison plot is not shown"
    answers = at.dataframe[-1].value
    assert list(answers["answer"]) == [f"{UNSTEERED} {i}" for i in range(n)]
    at.selectbox(key="compare_method").set_value("lda").run()
    clean(at)
    answers = at.dataframe[-1].value
    assert list(answers["answer"])[:2] == ["lda 0", "lda 1"] and answers["forced"].all()
    assert answers["gold"][0] == "x0 / y0"
    assert "mlneurons steer-compare" in " ".join(c.value for c in at.code)


def test_languages_page_shows_the_script_controls(tiny_run, planted_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    corpus = tiny_run.parent / "corpus"
    argv = ["script-controls", "--model", str(planted_dir), "--corpus", str(corpus)]
    argv += ["--languages", "en,fr", "--tokens-per-language", "128", "--seq-len", "32"]
    assert cli_main([*argv, "--top-rate", "0.1", "--out", str(run)]) == 0  # Latin scripts only
    at = clean(open_app(run, live="false"))
    assert "Script and shuffle controls" in [h.value for h in at.header]
    table = next(f.value for f in at.dataframe if "controls" in f.value.columns)
    saved = json.loads((run / "script_controls.json").read_text())["neurons"]
    for _, row in table.iterrows():  # each shared count is the intersection of the saved sets
        a, b = row["controls"].split(" vs ")
        lang = row["language"]
        shared = {tuple(p) for p in saved[a][lang]} & {tuple(p) for p in saved[b][lang]}
        assert int(row["shared"]) == len(shared)
    assert len(table) == 2 * 2
    assert "mlneurons script-controls" in " ".join(e.label for e in at.expander)
