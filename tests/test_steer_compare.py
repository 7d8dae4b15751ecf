"""Directions against neurons on the same questions: the fact questions, relevance, the
scores and paired tests with hand-computed values, and end to end on the planted model."""

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import LANGS, PLANTED, language_text

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.data.fact_questions import FactQuestion, fact_questions, mentions, relevant
from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import Uncertainty, holm, mcnemar, paired_permutation, wilson
from mlneurons.methods.steering_comparison import (
    UNSTEERED,
    MethodOutcome,
    SteeringComparison,
    compare_steering,
    harmonic_mean,
    steering_methods,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _first_word(texts):
    """The tiny model's language identifier: a word's language is its prefix."""
    return [t.split()[0][:2] if t.split() else "unknown" for t in texts]


# ----------------------------------------------------------------------------- questions


@pytest.mark.parametrize(
    "text, label, found",
    [
        ("La capitale est Paris.", "París", True),  # accents and case folded
        ("Es el idioma romano.", "Roma", False),  # a whole word in cased scripts
        ("法国的首都是巴黎。", "巴黎", True),  # any substring elsewhere
        ("フランスの首都はパリです。", "パリ", True),
        ("БЕРЛИН, конечно", "Берлин", True),
        ("", "Berlin", False),
    ],
)
def test_mentions(text, label, found):
    assert mentions(text, label) is found


def test_fact_questions_interleave_relations_and_hold_both_answers():
    questions = fact_questions("es", "zh", n=8)
    assert [q.relation for q in questions] == ["P30", "P36", "P37", "P38"] * 2
    capital = questions[1]
    assert capital.question == "¿Cuál es la capital de Francia?"
    assert capital.answers == {"es": "París", "zh": "巴黎"} and capital.uuid == "P36-FR"
    assert relevant("Creo que es París.", capital) and relevant("巴黎", capital)
    assert not relevant("Madrid", capital)
    # no question whose subject already names its answer (Singapore, capital Singapore)
    for q in fact_questions("en", "ja", relations=["P36"]):
        assert not any(mentions(q.question, label) for label in q.answers.values()), q


def test_fact_questions_errors_name_the_valid_values():
    with pytest.raises(UserError, match="no fact questions in 'xx'; languages with questions: ar"):
        fact_questions("xx", "zh")
    with pytest.raises(UserError, match="unknown relation 'P99'; valid relations: P30"):
        fact_questions("es", "zh", relations=["P99"])
    with pytest.raises(UserError, match=r"valid: 1\.\.\d+"):
        fact_questions("es", "zh", n=100000)


# ----------------------------------------------------------------------------- statistics


def test_paired_permutation_approaches_exact_mcnemar():
    """8 discordant pairs all one way: the sign-flip null of a mean difference is the exact
    McNemar test, 2 / 2^8."""
    a = [True] * 8 + [True, False] * 6
    b = [False] * 8 + [True, False] * 6
    _, _, exact = mcnemar(a, b)
    assert math.isclose(exact, 2 / 256)
    p = paired_permutation(lambda x: x.mean(-1), a, b, Uncertainty(samples=20000))
    assert abs(p - exact) < 0.003
    assert paired_permutation(lambda x: x.mean(-1), a, a) == 1.0


def test_paired_permutation_is_exact_on_few_items():
    """Up to 14 items every swap is enumerated: McNemar's exact p to the last digit, and
    p-values below the random floor 1 / (1 + samples)."""
    a = [True] * 10 + [True, False]
    b = [False] * 10 + [True, False]
    p = paired_permutation(lambda x: x.mean(-1), a, b, Uncertainty(samples=100))
    assert p == mcnemar(a, b)[2] == 2 / 2**10 < 1 / 101
    c = [True] * 3 + [False] * 9  # 3 discordant of 12, one way: 2^9 * 2 of 2^12 as extreme
    assert paired_permutation(lambda x: x.mean(-1), c, [False] * 12) == 2**10 / 2**12
    # a ratio statistic (log perplexity ratio, NLL / tokens) by hand: observed log(7/3 / 1);
    # swapping item 0 or 1 alone gives -+log(3/2), both together -log(7/3); item 2 is equal
    x = np.array([[4.0, 1.0], [2.0, 1.0], [1.0, 1.0]])
    stat = lambda v: np.log(v[..., 0].sum(-1) / v[..., 1].sum(-1))  # noqa: E731
    assert paired_permutation(stat, x, np.ones((3, 2))) == 4 / 8  # {}, {2}, {0,1}, {0,1,2}


def _outcome(name, forced, relevant_, nll=None, tokens=None, family="direction"):
    n = len(forced)
    return MethodOutcome(
        name=name,
        family=family,
        setting={"alpha": 1.0},
        answers=[f"{name} {i}" for i in range(n)],
        languages=["zh" if f else "es" for f in forced],
        forced=list(forced),
        relevant=list(relevant_),
        degenerate=[False] * n,
        nll=list(nll or [2.0] * n),
        tokens=list(tokens or [2] * n),
    )


def test_scores_and_pairs_by_hand():
    n = 12
    base = _outcome(UNSTEERED, [False] * n, [True] * 6 + [False] * 6, family="none")
    strong = _outcome("lda", [True] * n, [True] * 3 + [False] * 9, nll=[4.0] * n)
    weak = _outcome("diffmean", [True] * 6 + [False] * 6, [True] * 6 + [False] * 6)
    questions = [FactQuestion(f"q{i}", {"es": "x"}) for i in range(n)]
    result = SteeringComparison.from_outcomes("es", "zh", questions, [base, strong, weak])
    assert result.score("lda", "forcing") == wilson(12, 12)
    harmonic = result.score("diffmean", "harmonic")
    assert math.isclose(harmonic.value, 0.5)  # F = R = 1/2
    assert math.isclose(result.score("lda", "harmonic").value, 2 * 1 * 0.25 / 1.25)
    assert math.isclose(result.score(UNSTEERED, "harmonic").value, 0.0)
    assert math.isclose(result.score("lda", "fluency").value, math.exp(4.0 / 2))
    assert harmonic.has_interval and harmonic.lo < 0.5 < harmonic.hi
    pair = result.pair("lda", UNSTEERED)
    assert math.isclose(pair["forcing"]["difference"]["value"], 1.0)
    assert math.isclose(pair["fluency"]["difference"]["value"], 2.0 - 1.0)  # log ppl ratio
    p_forcing = [p["forcing"]["p"] for p in result.pairs]
    assert [p["forcing"]["p_holm"] for p in result.pairs] == holm(p_forcing)
    assert math.isclose(result.pair(UNSTEERED, "lda")["forcing"]["p"], 2 / 2**12)
    assert (UNSTEERED, "lda") in result.significant("forcing")
    assert result.best() == "diffmean" and result.best("forcing") == "lda"
    assert result.best("fluency") == "diffmean"  # the lower perplexity
    # every question's perplexity is higher under lda: exact p 2/2^12, Holm over 3 pairs
    assert math.isclose(result.pair(UNSTEERED, "lda")["fluency"]["p_holm"], 3 * 2 / 2**12)
    from mlneurons.interfaces.commands.steer_compare import describe

    fluency = next(line for line in describe(result) if line.startswith("fluency ppl:"))
    assert fluency.startswith("fluency ppl: unsteered < lda (p 0.0015)")  # perplexities
    assert np.allclose(harmonic_mean(np.array([0.0, 1.0]), np.array([0.0, 0.5])), [0.0, 2 / 3])


# ----------------------------------------------------------------------------- planted model


def _corpus() -> MultilingualCorpus:
    texts = {
        lang: (lambda lang=lang: [language_text(lang, 12, seed=s) for s in range(10)])
        for lang in LANGS
    }
    return MultilingualCorpus(texts, seq_len=32)


def _questions(n: int = 10) -> list[FactQuestion]:
    """The planted model answers fr0 fr1 fr4 fr5 unsteered and zh0 zh1 ... steered to zh."""
    return [
        FactQuestion(language_text("fr", 5, seed=s), {"fr": "fr7", "zh": "zh0"}, f"q{s}", "P1")
        for s in range(n)
    ]


def test_directions_force_the_planted_model_to_answer_in_the_target(planted_model, tmp_path):
    from mlneurons.methods.directions import language_directions

    directions = language_directions(
        planted_model, _corpus(), source="fr", target="zh", layer=0, max_sentences=10
    )
    methods = steering_methods(
        planted_model, source="fr", target="zh", directions=directions, direction_alpha=2.0,
        neuron_modes=(),
    )  # fmt: skip
    result = compare_steering(
        planted_model, _questions(), methods, source="fr", target="zh", template="{question}",
        max_new_tokens=4, identify=_first_word, progress=False,
    )  # fmt: skip
    assert result.methods == [UNSTEERED, "diffmean", "probe", "lda", "pca"]
    assert result.outcome(UNSTEERED).answers[0].split()[0] == "fr0"
    assert sum(result.outcome(UNSTEERED).forced) == sum(result.outcome(UNSTEERED).relevant) == 0
    for name in directions.methods:
        assert result.score(name, "forcing").value == 1.0
        assert result.score(name, "harmonic").value == 1.0
    # each direction vs unsteered: McNemar 2 / 2^10, Holm over 10 pairs, still significant
    assert sorted(result.significant("forcing")) == sorted(
        (UNSTEERED, m) for m in directions.methods
    )
    result.save(tmp_path)
    loaded = SteeringComparison.load(tmp_path)
    assert loaded.outcomes == result.outcomes and loaded.pairs == result.pairs


def test_steering_methods_check_their_inputs(planted_model):
    with pytest.raises(UserError, match="need the LAPE neurons and their statistics"):
        steering_methods(planted_model, source="fr", target="zh", neuron_modes=("add",))
    with pytest.raises(UserError, match="unknown steering mode 'push'"):
        steering_methods(planted_model, source="fr", target="zh", neuron_modes=("push",))
    with pytest.raises(UserError, match="nothing to compare"):
        steering_methods(planted_model, source="fr", target="zh", neuron_modes=())


def _planted_run(planted_model, directory):
    """Statistics and the planted neurons saved as ``mlneurons lape`` writes them."""
    import mlneurons
    from mlneurons.methods.lape import LanguageNeurons

    corpus = MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 200)]) for lang in LANGS}, seq_len=50
    )
    stats = mlneurons.collect_activation_stats(planted_model, corpus, progress=False)
    stats.save(directory)
    planted = {lang: torch.tensor(PLANTED[lang]) for lang in LANGS}
    LanguageNeurons(planted, 2, 32, model=stats.model).save(directory)


def test_example_and_command_on_the_planted_model(
    planted_dir, planted_model, tmp_path, monkeypatch, capsys
):
    """The example (directions and neuron modes) and ``mlneurons steer-compare`` with the
    tiny model's questions and text in place of the built-in ones."""
    from mlneurons.data import fact_questions as questions_module
    from mlneurons.interfaces.cli import main as cli_main
    from mlneurons.interfaces.commands import steer_compare

    _planted_run(planted_model, tmp_path)
    spec = importlib.util.spec_from_file_location(
        "direction_steering", EXAMPLES / "direction_steering.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    directions, result = example.directions_against_neurons(
        tmp_path, model_name=str(planted_dir), source="fr", target="zh", layer=0,
        direction_alpha=2.0, corpus=_corpus(), questions=_questions(4), template="{question}",
        max_new_tokens=4, identify=_first_word,
    )  # fmt: skip
    assert directions.layer == 0 and result.methods[-2:] == ["neurons-replace", "neurons-add"]
    for name in result.methods[1:]:  # every method moves every answer to zh words
        assert result.score(name, "forcing").value == 1.0, name

    monkeypatch.setattr(questions_module, "fact_questions", lambda *a, n, **k: _questions(n))
    monkeypatch.setattr(steer_compare, "direction_corpus", lambda source, target: _corpus())
    out = tmp_path / "cli"
    argv = [
        "steer-compare", "--neurons", str(tmp_path), "--source", "fr", "--target", "zh",
        "--layer", "0", "--direction-alpha", "2", "--directions", "diffmean,lda",
        "--neuron-modes", "add", "--n-questions", "4", "--max-new-tokens", "3",
        "--sentences", "8", "--out", str(out),
    ]  # fmt: skip
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 fact questions in fr" in printed and "highest harmonic mean" in printed
    saved = json.loads((out / "steer_compare.json").read_text())
    assert [o["name"] for o in saved["outcomes"]] == [UNSTEERED, "diffmean", "lda", "neurons-add"]
    assert (out / "steer_compare.png").exists() and (
        out / "language_directions.safetensors"
    ).exists()
    assert saved["settings"]["point"] == "blocks.0.hook_resid_post"


def test_command_errors_before_the_model(tmp_path, capsys):
    from mlneurons.interfaces.cli import main as cli_main

    common = ["steer-compare", "--neurons", str(tmp_path), "--source", "fr", "--target", "zh"]
    assert cli_main([*common, "--neuron-modes", "scale", "--out", str(tmp_path)]) == 2
    assert "neuron mode 'scale' with --neuron-alpha 1 changes nothing" in capsys.readouterr().err
    assert cli_main([*common, "--directions", "mean", "--out", str(tmp_path)]) == 2
    assert "choose from diffmean, probe, lda, pca" in capsys.readouterr().err
