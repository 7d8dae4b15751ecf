"""`mlneurons report` and `mlneurons app`, on the tiny planted model with tiny budgets."""

import html
import json
import sys

import pytest
from tiny import tiny_facts

from mlneurons.data.facts import FactSet
from mlneurons.interfaces import app_server, cli, report
from mlneurons.interfaces.cli import main as cli_main

FACTS = "--languages en,de --batch-size 64"
TINY = {
    "lape": "--languages en,fr,zh --tokens-per-language 256 --seq-len 64 --top-rate 0.1",
    "ablate": "--tokens-per-language 64 --seq-len 32",
    "compare-methods": "--tokens-per-language 64 --seq-len 32",
    "steer": "--source fr --target zh --n-questions 2 --max-new-tokens 3",
    "steer-sweep": "--source fr --target zh --modes add --alphas 1 --top-rates 0.1 "
    "--n-questions 2 --max-new-tokens 3",
    "fallback": "--language fr --shares 0,1 --n-questions 2 --max-new-tokens 3",
    "probe": FACTS,
    "fact-neurons": FACTS + " --k 3",
    "trace": FACTS,
    "lrp2": "--languages en,de --layers 0,1 --sentences 4 --k 3",
    "ses": "--languages en,de --sentences 4",
    "logit-lens": "--source fr --target zh --n-shots 2",
}
COMMANDS = {
    "lape": "cmd_lape",
    "ablate": "cmd_ablate",
    "compare-methods": "cmd_compare_methods",
    "steer": "cmd_steer",
    "steer-sweep": "cmd_steer_sweep",
    "fallback": "cmd_fallback",
    "probe": "cmd_probe",
    "fact-neurons": "cmd_fact_neurons",
    "trace": "cmd_trace",
    "lrp2": "cmd_lrp2",
    "ses": "cmd_ses",
    "logit-lens": "cmd_logit_lens",
}


@pytest.fixture()
def tiny_budget(monkeypatch):
    """Tiny budgets, and the tiny fact set and words (which the tiny tokenizer knows) as built-in."""
    from mlneurons.data import parallel

    monkeypatch.setitem(report.BUDGETS, "default", TINY)
    monkeypatch.setattr(
        parallel,
        "builtin_parallel_words",
        lambda languages: {lang: [f"{lang}{i}" for i in range(1, 7)] for lang in languages},
    )
    monkeypatch.setattr(
        FactSet,
        "builtin",
        classmethod(lambda cls, languages=None, relations=None: tiny_facts().subset(languages)),
    )


def _count_calls(monkeypatch) -> tuple[list[str], set[str]]:
    """Wrap the step commands: each call is recorded; steps put into the returned set are
    interrupted (as by Ctrl-C) instead of run."""
    calls, interrupt = [], set()
    for step, name in COMMANDS.items():
        original = getattr(cli, name)

        def wrapper(args, step=step, original=original):
            calls.append(step)
            if step in interrupt:
                raise KeyboardInterrupt
            return original(args)

        monkeypatch.setattr(cli, name, wrapper)
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
    assert calls == ["trace", "lrp2", "ses", "logit-lens"]  # the finished steps are skipped
    for budget in TINY.values():  # every budget is printed
        assert budget in printed
    assert printed.rstrip().endswith(f"mlneurons app --run {out} --model {planted_dir}")

    for step in report.STEPS:
        for name in step.outputs:
            assert (out / name).exists(), name
    record = json.loads((out / "report.json").read_text())
    assert list(record["steps"]) == list(COMMANDS)
    for step, entry in record["steps"].items():
        assert entry["status"] == "done" and entry["wall_time_s"] >= 0
        assert entry["command"].startswith(f"mlneurons {step} {TINY[step]}")
        assert entry["command"].endswith(f"--model {planted_dir} --out {out}")
    assert f"--neurons {out}" in record["steps"]["steer"]["command"]
    assert f"--probe {out}" in record["steps"]["trace"]["command"]
    configs = json.loads((out / "cfg.json").read_text())  # one config per command
    assert sorted(configs) == sorted(COMMANDS)
    assert json.loads((out / "steering.json").read_text())["config"]["method"] == "steer"

    page = (out / "index.html").read_text()
    for external in ("http://", "https://", 'src="//', "<script", "<link"):
        assert external not in page
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 13 and page.count('src="data:image/png;base64,') == len(pngs)
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
    assert calls == ["probe", "fact-neurons", "trace"]
    monkeypatch.setitem(TINY, "ablate", "--tokens-per-language 32 --seq-len 32")
    calls.clear()
    assert cli_main(argv) == 0  # another budget runs again
    assert calls == ["ablate"]


def test_report_step_user_error_is_recorded(planted_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(report.BUDGETS, "default", {**TINY, "lape": "--languages en,xx"})
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
