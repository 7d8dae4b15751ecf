"""`mlneurons report` and `mlneurons app`, on the tiny planted model with tiny budgets."""

import dataclasses
import html
import json
import shlex
import sys

import pytest
from tiny import tiny_facts

from mlneurons.config import Config
from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.data.facts import FactSet
from mlneurons.interfaces import app_server, cli, report
from mlneurons.interfaces.cli import main as cli_main
from mlneurons.interfaces.commands import command

FACTS = "--languages en,de --batch-size 64"
TINY = {
    "lape": "--languages en,fr,zh --tokens-per-language 256 --seq-len 64 --top-rate 0.1",
    "ablate": "--tokens-per-language 64 --seq-len 32",
    "compare-methods": "--tokens-per-language 64 --seq-len 32",
    "steer": "--source fr --target zh --n-questions 2 --max-new-tokens 3",
    "steer-sweep": "--source fr --target zh --modes add --alphas 1 --top-rates 0.1 "
    "--n-questions 2 --max-new-tokens 3",
    "steer-compare": "--source fr --target zh --layer 0 --directions diffmean --neuron-modes add "
    "--n-questions 2 --max-new-tokens 3 --sentences 4",
    "fallback": "--language fr --shares 0,1 --n-questions 2 --max-new-tokens 3",
    "probe": FACTS,
    "fact-neurons": FACTS + " --k 3",
    "trace": FACTS,
    "consistency": FACTS,
    "knowledge-neurons": FACTS,
    "failure-modes": FACTS,
    "factors": FACTS,
    "lrp2": "--languages en,de --layers 0,1 --sentences 4 --k 3",
    "ses": "--languages en,de --sentences 4",
    "logit-lens": "--source fr --target zh --n-shots 2",
    "script-controls": "--languages en,fr --tokens-per-language 64 --seq-len 16 --top-rate 0.1",
    "heads": "--languages en,fr --tokens-per-language 64 --heldout-tokens-per-language 64 "
    "--seq-len 17 --control-draws 1",
}
COMMANDS = list(TINY)


def overrides(name: str, text: str) -> dict:
    """A budget written as options (``--top-rate 0.1``) as the config values it sets."""
    import dataclasses
    import shlex

    from mlneurons.config import flag_of
    from mlneurons.interfaces.commands import command

    spec = command(name)
    required = [item for item in dataclasses.fields(spec.config) if item.metadata["required"]]
    placeholders = [
        w for item in required if flag_of(item) not in text for w in (flag_of(item), "?")
    ]
    args = cli.build_parser([name]).parse_args(
        [name, *shlex.split(text), *placeholders, "--out", "o"]
    )
    cfg, default = spec.config.from_args(args).to_dict(), spec.config().to_dict()
    return {k: v for k, v in cfg.items() if v != default[k] and v != "?"}


def use_budgets(monkeypatch, budgets: dict[str, str]) -> None:
    """Make ``budgets`` (command -> options) the report's default budgets."""
    import dataclasses
    import importlib

    for name, text in budgets.items():
        module = importlib.import_module(f"mlneurons.interfaces.commands.{name.replace('-', '_')}")
        step = dataclasses.replace(module.SPEC.step, budgets={"default": overrides(name, text)})
        monkeypatch.setattr(module, "SPEC", dataclasses.replace(module.SPEC, step=step))


@pytest.fixture()
def tiny_budget(monkeypatch):
    """Tiny budgets, and the tiny fact set and words (which the tiny tokenizer knows) as built-in."""
    from mlneurons.data import parallel

    use_budgets(monkeypatch, TINY)
    from mlneurons.data import fact_questions
    from mlneurons.interfaces.commands import steer_compare

    monkeypatch.setattr(  # questions and text the tiny tokenizer knows
        fact_questions,
        "fact_questions",
        lambda source, target, n, **k: [
            fact_questions.FactQuestion(f"{source}{i} {source}{i + 1}", {target: f"{target}0"})
            for i in range(n)
        ],
    )
    monkeypatch.setattr(
        steer_compare,
        "direction_corpus",
        lambda source, target: MultilingualCorpus(
            {
                lang: lambda lang=lang: [f"{lang}{i} {lang}{i + 1} {lang}{i + 2}" for i in range(8)]
                for lang in (source, target)
            }
        ),
    )
    monkeypatch.setattr(
        parallel,
        "builtin_parallel_words",
        lambda languages: {lang: [f"{lang}{i}" for i in range(1, 7)] for lang in languages},
    )
    monkeypatch.setattr(
        FactSet,
        "builtin",
        classmethod(lambda cls, languages=None, relations=None: aligned_facts().subset(languages)),
    )


def aligned_facts() -> FactSet:
    """The tiny facts with one candidate list in both languages (de's), aligned by position
    as the built-in facts are, so the consistency step can compare the rankings."""
    facts = tiny_facts()
    pool = facts.candidates[("de", "P1")]
    return dataclasses.replace(facts, candidates={key: pool for key in facts.candidates})


def _count_calls(monkeypatch) -> tuple[list[str], set[str]]:
    """Wrap the report's steps: each call is recorded; steps put into the returned set are
    interrupted (as by Ctrl-C) instead of run."""
    calls, interrupt = [], set()
    original = report.run_command

    def wrapper(spec, cfg, out, models=None):
        calls.append(spec.name)
        if spec.name in interrupt:
            raise KeyboardInterrupt
        return original(spec, cfg, out, models)

    monkeypatch.setattr(report, "run_command", wrapper)
    return calls, interrupt


def test_report_writes_everything_and_resumes(
    planted_dir, tiny_budget, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    argv = ["report", "--model", str(planted_dir), "--out", str(out)]

    calls, interrupt = _count_calls(monkeypatch)
    interrupt.add("trace")
    assert cli_main(argv) == 130  # interrupted in the middle
    assert "run the same command again to resume" in capsys.readouterr().err
    record = json.loads((out / "report.json").read_text())
    assert record["steps"]["trace"]["status"] == "interrupted" and "lrp2" not in record["steps"]
    assert calls == list(COMMANDS)[: list(COMMANDS).index("trace") + 1]

    calls.clear()
    interrupt.clear()
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert calls == COMMANDS[COMMANDS.index("trace") :]  # the finished steps are skipped
    for step in TINY:  # every budget is printed as its command's options
        planned = report.step_config(command(step), "default", out, model=None, device=None)
        assert shlex.join(planned.to_argv()[1:]) in printed
    assert printed.rstrip().endswith(f"mlneurons app --run {out} --model {planted_dir}")

    for spec in report.steps():
        assert spec.saved(out), spec.name
    record = json.loads((out / "report.json").read_text())
    assert list(record["steps"]) == list(COMMANDS)
    for step, entry in record["steps"].items():
        assert entry["status"] == "done" and entry["wall_time_s"] >= 0
        assert entry["command"].startswith(f"mlneurons {step} ")
        assert entry["command"].endswith(f"--model {planted_dir} --out {out}")
        cfg = Config.load(out, method=step)  # the config each step recorded reproduces it
        assert entry["argv"] == [*cfg.to_argv(), "--out", str(out)]
        for field, value in overrides(step, TINY[step]).items():  # with the step's budget
            assert cfg.to_dict()[field] == value, (step, field)
    assert f"--neurons {out}" in record["steps"]["steer"]["command"]
    assert f"--probe {out}" in record["steps"]["trace"]["command"]
    configs = json.loads((out / "cfg.json").read_text())  # one config per command
    assert sorted(configs) == sorted(COMMANDS)
    assert json.loads((out / "steering.json").read_text())["config"]["method"] == "steer"

    page = (out / "index.html").read_text()
    for external in ("http://", "https://", 'src="//', "<script", "<link"):
        assert external not in page
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 25 and page.count('src="data:image/png;base64,') == len(pngs)
    for entry in record["steps"].values():
        assert html.escape(entry["command"]) in page
    assert record["steps"]["lape"]["command"].split()[1] == "lape"
    model = json.loads((out / "summary.json").read_text())["model"]
    assert model["hash"] in page and "transformer-lens" in page

    calls.clear()
    assert cli_main(argv) == 0  # all done: nothing runs
    assert calls == []
    (out / "probe.json").unlink()  # probing again makes its users run again
    assert cli_main(argv) == 0
    assert calls == [
        "probe",
        "fact-neurons",
        "trace",
        "consistency",
        "knowledge-neurons",
        "failure-modes",
        "factors",
    ]
    use_budgets(monkeypatch, {"ablate": "--tokens-per-language 32 --seq-len 32"})
    calls.clear()
    assert cli_main(argv) == 0  # another budget runs again
    assert calls == ["ablate"]


def test_report_step_user_error_is_recorded(planted_dir, monkeypatch, tmp_path, capsys):
    use_budgets(monkeypatch, {**TINY, "lape": "--languages en,xx"})
    out = tmp_path / "run"
    assert cli_main(["report", "--model", str(planted_dir), "--out", str(out)]) == 2
    assert "unknown language 'xx'" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["steps"]["lape"]["status"] == "failed"
    assert "failed" in (out / "index.html").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "--model", "/no/such/dir"], "unknown model"),
        (["report", "--device", "nosuchdevice"], "device"),
        (["report", "--full", "yes"], "unrecognized arguments"),
        (["app", "--run", "/no/such/run"], "is not a directory"),
        (["app", "--port", "70000"], "not a port"),
        (["app", "--port", "0"], "not an integer >= 1"),
    ],
)
def test_bad_options_exit_2(argv, message, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_app_runs_streamlit_on_the_run(monkeypatch, tmp_path, capsys):
    script = tmp_path / "app.py"
    script.write_text("")
    monkeypatch.setattr(app_server, "app_script", lambda: script)
    seen = []
    monkeypatch.setattr(app_server, "run_until_stopped", lambda command: seen.append(command) or 0)
    assert cli_main(["app", "--run", str(tmp_path), "--port", "8600"]) == 0
    assert seen == [
        [sys.executable, "-m", "streamlit", "run", str(script), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", "8600", "--browser.gatherUsageStats", "false", "--", "--run",
         str(tmp_path)]
    ]  # fmt: skip
    assert "http://127.0.0.1:8600" in capsys.readouterr().err


def test_app_user_errors(monkeypatch, tmp_path, capsys):
    import importlib.resources

    def missing(package):
        raise ModuleNotFoundError(package)

    monkeypatch.setattr(importlib.resources, "files", missing)
    assert cli_main(["app", "--run", str(tmp_path)]) == 2
    assert "app script" in capsys.readouterr().err
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert cli_main(["app", "--run", str(tmp_path)]) == 2
    assert "pip install 'mlneurons[app]'" in capsys.readouterr().err


def test_heatmap_of_languages_without_shared_facts(tmp_path):
    """fact-neurons' overlap is None for two languages without a shared correct fact (the
    default report's Japanese once had one correct fact): the plot marks the cell "–"."""
    from mlneurons.interfaces.plots import plot_heatmap, save_figure

    table = {"en": {"en": 1.0, "ja": None}, "ja": {"en": None, "ja": None}}
    figure = plot_heatmap(table, ["en", "ja"], title="overlap", colorbar="Jaccard")
    assert [t.get_text() for t in figure.axes[0].texts] == ["1.00", "–", "–", "–"]
    assert save_figure(figure, tmp_path / "overlap.png").stat().st_size > 1000


def test_report_loads_the_model_once(planted_dir, tiny_budget, tmp_path, monkeypatch):
    import mlneurons.models.loading

    loads = []
    original = mlneurons.models.loading.load_model
    monkeypatch.setattr(
        mlneurons.models.loading, "load_model", lambda *a, **k: loads.append(a) or original(*a, **k)
    )
    out = tmp_path / "run"
    assert cli_main(["report", "--model", str(planted_dir), "--out", str(out)]) == 0
    assert loads == [(str(planted_dir),)]  # seven steps, one model


def test_not_significant_findings_are_marked() -> None:
    from mlneurons.evaluation.uncertainty import flagged
    from mlneurons.interfaces.report import _table
    from mlneurons.interfaces.spec import Table

    assert flagged("zh: 25.0% -> 33.3% (not significant, exact McNemar p = 1)")
    assert flagged("n.s.") and flagged("Jaccard 0.22, not above chance")
    assert not flagged("zh: 25.0% -> 91.7% (significant, p = 0.004)")
    html = _table(Table(["pair", "change"], [["en-zh", "+8.3% n.s."], ["en-de", "+40.0%"]]))
    assert html.count("ns'") == 1 and "class='ns'>+8.3% n.s." in html
