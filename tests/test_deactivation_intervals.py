"""Intervals of the deactivation results: per-row losses, the paired bootstrap over rows,
the matched controls as the null, specificity, and their text (issue 19)."""

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from tiny import LANGS, PLANTED, language_text

import mlneurons
from mlneurons import LanguageNeurons, MultilingualCorpus
from mlneurons.evaluation.perplexity import masked_perplexities, sequence_nll
from mlneurons.evaluation.uncertainty import Estimate, Uncertainty, bootstrap
from mlneurons.interfaces.commands import ablate, compare_methods
from mlneurons.methods import deactivation
from mlneurons.methods.deactivation import (
    MethodComparison,
    PerplexityMatrix,
    bootstrap_p,
    perplexity_matrix,
)

HOW = Uncertainty(0.95, 1000, 0)


@pytest.fixture(autouse=True)
def few_rows_resampled(monkeypatch):
    """These tests check the bootstrap's arithmetic on 2-6 rows, small enough to enumerate;
    the library withholds intervals below MIN_RESAMPLED rows (tested with the real value in
    ``test_fewer_than_min_resampled_rows_show_values_alone``)."""
    monkeypatch.setattr(deactivation, "MIN_RESAMPLED", 2)


def _corpus():
    return MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 300, seed=9)]) for lang in LANGS}, seq_len=50
    )


def _planted(model):
    planted = {lang: torch.tensor(PLANTED[lang]) for lang in LANGS}
    return LanguageNeurons(planted, 2, 32, model=mlneurons.fingerprint(model))


def test_row_losses_sum_to_the_single_pass_perplexities_exactly(planted_model):
    model, corpus = planted_model, _corpus().subset(["fr", "zh"])
    masks = torch.zeros(3, 2, 32, dtype=torch.bool)
    masks[1, 0, 10] = masks[1, 1, 2] = True  # fr's planted neurons
    masks[2, 0, 21] = True
    losses = masked_perplexities(model, corpus, masks, batch_size=5, progress=False)
    assert losses.rows() == [6, 6] and losses.counts() == [6 * 49, 6 * 49]
    # the sums of the former single pass: 0.0 + row 0 + row 1 + ..., per condition
    total = torch.zeros(3, 2, dtype=torch.float64)
    for r in range(6):
        for c in range(3):
            total[c] = total[c] + losses.nll[c, :, r]
    assert torch.equal(losses.perplexities(), torch.exp(total / 294))
    # each row's NLL is that row's own forward pass (the slow path)
    rows = torch.cat(list(corpus.rows("zh", model.tokenizer)))
    alone = sequence_nll(model, rows)
    torch.testing.assert_close(losses.nll[0, 1], alone.double(), rtol=1e-5, atol=1e-5)


def test_planted_matrix_keeps_its_rows_and_tests_them(planted_model, tmp_path):
    model, neurons, corpus = planted_model, _planted(planted_model), _corpus().subset(["fr", "zh"])
    matrix = perplexity_matrix(model, neurons, corpus, batch_size=7, progress=False)
    assert matrix.uncertainty == HOW.to_json()
    # the perplexities are the per-row sums, exactly
    for lang in ("fr", "zh"):
        nll, tokens = matrix.row_nll["deactivated"]["fr"][lang], matrix.row_tokens[lang]
        total = 0.0
        for x in nll:
            total += x
        assert matrix.deactivated["fr"][lang] == math.exp(total / sum(tokens))
    own = matrix.own_changes()
    assert own is not None
    for lang in ("fr", "zh"):  # a planted language's own neurons: significant, far above uniform
        assert own[lang].own.significant() and own[lang].own.difference.lo > 0.05
        assert own[lang].versus_uniform is not None and own[lang].versus_uniform.significant()
    # another language's planted neurons are exactly 0 on fr tokens: no change at all,
    # every resample 0, not significant
    cell = matrix.change_intervals()["zh"]["fr"]
    assert (cell.value, cell.lo, cell.hi) == (0.0, 0.0, 0.0) and not cell.excludes(0)
    matrix.save(tmp_path)
    back = PerplexityMatrix.load(tmp_path)
    assert back == matrix and back.own_changes() == own
    saved = json.loads((tmp_path / "ppl_matrix.json").read_text())
    assert saved["intervals"]["own"]["fr"]["own"]["difference"]["n"] == 6
    assert Estimate.from_json(saved["intervals"]["change"]["deactivated"]["zh"]["fr"]) == cell


def _hand_matrix():
    """Two languages of two rows of 10 tokens; NLLs chosen so that every resample's value
    is known: with two rows, the 95% interval runs from the one row's value to the other's."""
    return PerplexityMatrix(
        languages=["a", "b"],
        baseline={"a": math.exp(30 / 20), "b": math.exp(60 / 20)},
        deactivated={
            "a": {"a": math.exp(35 / 20), "b": math.exp(60 / 20)},
            "b": {"a": math.exp(30 / 20), "b": math.exp(90 / 20)},
        },
        random_control={
            "a": {"a": math.exp(31 / 20), "b": math.exp(60 / 20)},
            "b": {"a": math.exp(30 / 20), "b": math.exp(62 / 20)},
        },
        tokens_per_language=20,
        row_nll={
            "baseline": {"a": [10.0, 20.0], "b": [30.0, 30.0]},
            "deactivated": {
                "a": {"a": [15.0, 20.0], "b": [30.0, 30.0]},
                "b": {"a": [10.0, 20.0], "b": [40.0, 50.0]},
            },
            "random_control": {
                "a": {"a": [10.5, 20.5], "b": [30.0, 30.0]},
                "b": {"a": [10.0, 20.0], "b": [31.0, 31.0]},
            },
        },
        row_tokens={"a": [10, 10], "b": [10, 10]},
        uncertainty=HOW.to_json(),
    )


def test_hand_computed_intervals_and_flags():
    matrix = _hand_matrix()
    own = matrix.own_changes()
    a, b = own["a"], own["b"]
    # a: row 1 rises by 5 nats over 10 tokens, row 2 not at all
    assert a.own.difference.value == pytest.approx(math.exp(5 / 20) - 1)
    assert (a.own.difference.lo, a.own.difference.hi) == pytest.approx((0, math.exp(0.5) - 1))
    assert not a.own.significant()  # a resample of row 2 alone changes nothing
    # b: +1 and +2 nats per token on its two rows
    assert (b.own.difference.lo, b.own.difference.hi) == pytest.approx(
        (math.e - 1, math.exp(2) - 1)
    )
    assert b.own.p_value == pytest.approx(2 / 1001) and b.own.adjusted == pytest.approx(4 / 1001)
    assert b.own.significant()
    # own - uniform, on the same resampled rows: a's rows differ by +0.45 and -0.05 nats/token
    diff = a.versus_uniform.difference
    assert (diff.lo, diff.hi) == pytest.approx(
        (math.exp(0) - math.exp(0.05), math.exp(0.5) - math.exp(0.05))
    )
    assert a.uniform.value == pytest.approx(math.exp(1 / 20) - 1)
    baseline = matrix.baseline_intervals()["a"]
    assert (baseline.lo, baseline.hi) == pytest.approx((math.exp(1), math.exp(2)))
    assert baseline.n == 2 and baseline.method.startswith("paired bootstrap over rows")
    # the text: value [lo, hi], the flag where the test fails and only there
    lines = ablate.describe(matrix)
    assert "baseline perplexity: a 4.5 [2.7, 7.4], b 20.1 [20.1, 20.1]" in lines[0]
    line_a = next(x for x in lines if x.startswith("a:"))
    line_b = next(x for x in lines if x.startswith("b:"))
    assert line_a.startswith("a: own neurons off +28.4% [+0.0%, +64.9%] not significant (p = ")
    assert line_b.startswith("b: own neurons off +348.2% [+171.8%, +638.9%]; uniform")
    assert "own - uniform +337.7 pp [+161.3, +628.4]" in line_b
    assert "not significant" not in line_b
    assert any("Holm-adjusted across the 2 languages" in x for x in lines)
    (table,) = ablate.tables(matrix)
    row_a, row_b = table.rows
    assert row_a[3].endswith(" n.s.") and not row_b[3].endswith("n.s.")
    assert row_b[1] == "20.1 [20.1, 20.1]" and "Holm-adjusted" in table.caption


def test_interval_equals_the_bootstrap_of_the_ratio_of_sums():
    rng = np.random.default_rng(3)
    base, off = rng.uniform(20, 40, 12), rng.uniform(20, 60, 12)
    tokens = rng.integers(5, 20, 12).astype(float)
    ppl = lambda x: math.exp(x.sum() / tokens.sum())  # noqa: E731
    matrix = PerplexityMatrix(
        languages=["a"],
        baseline={"a": ppl(base)},
        deactivated={"a": {"a": ppl(off)}},
        random_control={},
        tokens_per_language=int(tokens.sum()),
        row_nll={"baseline": {"a": base.tolist()}, "deactivated": {"a": {"a": off.tolist()}}},
        row_tokens={"a": tokens.astype(int).tolist()},
        uncertainty=Uncertainty(0.9, 500, 7).to_json(),
    )
    reference = bootstrap(
        lambda w: np.exp((w @ off - w @ base) / (w @ tokens)) - 1, 12, Uncertainty(0.9, 500, 7)
    )
    cell = matrix.change_intervals()["a"]["a"]
    assert (cell.lo, cell.hi, cell.n) == pytest.approx((reference.lo, reference.hi, 12))
    assert cell.value == pytest.approx(reference.value, rel=1e-12)


def _matched_matrix():
    """:func:`_hand_matrix` with two matched draws: for a, one hurts a more than a's own
    neurons (+6 nats on row 1), one not at all; for b, neither changes anything."""
    draws = {"a": {"a": [math.exp(36 / 20), math.exp(30 / 20)], "b": [math.exp(3)] * 2}}
    draws["b"] = {"a": [math.exp(1.5)] * 2, "b": [math.exp(3)] * 2}
    rows = {
        "a": {"a": [[16.0, 20.0], [10.0, 20.0]], "b": [[30.0, 30.0]] * 2},
        "b": {"a": [[10.0, 20.0]] * 2, "b": [[30.0, 30.0]] * 2},
    }
    matched = {"draws": 2, "bins": 4, "widened": []}
    matrix = replace(_hand_matrix(), matched_control=draws, matched=matched)
    matrix.row_nll["matched_control"] = rows
    return matrix


def test_matched_draws_are_the_null():
    matrix = _matched_matrix()
    own = matrix.own_changes()
    # a: one draw hurts more (+6 nats on row 1 against +5), one not at all
    assert own["a"].draws == 2 and own["a"].draws_as_large == 1
    assert own["b"].draws_as_large == 0
    matched = own["a"].matched
    assert matched.value == pytest.approx((math.exp(6 / 20) - 1) / 2)
    # own - matched mean per resample: row 1 twice: e^.5 - 1 - (e^.6 - 1) / 2; row 2: 0
    versus = own["a"].versus_matched.difference
    assert (versus.lo, versus.hi) == pytest.approx((0, math.exp(0.5) - 1 - (math.exp(0.6) - 1) / 2))
    assert not own["a"].versus_matched.significant() and own["b"].versus_matched.significant()
    line = next(x for x in ablate.describe(matrix) if x.startswith("a:"))
    assert "1 of 2 draws as large" in line and "own - matched" in line
    assert ablate.tables(matrix)[0].rows[0][6] == "1/2"


def test_old_results_and_single_rows_show_values_alone(tmp_path):
    old = replace(_hand_matrix(), row_nll={}, row_tokens={}, uncertainty={})
    record = old.to_json()
    assert "intervals" not in record and "row_nll" in record
    for key in ("row_nll", "row_tokens", "uncertainty"):
        del record[key]
    (tmp_path / "ppl_matrix.json").write_text(json.dumps(record))
    back = PerplexityMatrix.load(tmp_path)
    assert back.own_changes() is None and back.change_intervals() is None
    lines = ablate.describe(back)
    assert "a: own neurons off +28.4%; uniform control +5.1%" in lines
    assert lines[-1] == "no intervals: this result was saved without its per-row losses"
    assert not any("[" in cell for row in ablate.tables(back)[0].rows for cell in row)
    one = _hand_matrix()
    one.row_nll["baseline"]["a"] = [10.0]
    one.row_tokens["a"] = [10]
    assert one.own_changes() is None
    assert ablate.describe(one)[-1].startswith("no intervals: 1 held-out row per language")


def test_fewer_than_min_resampled_rows_show_values_alone(monkeypatch):
    """The core's rule: no bootstrap interval over fewer than MIN_RESAMPLED items."""
    from mlneurons.evaluation.uncertainty import MIN_RESAMPLED

    monkeypatch.setattr(deactivation, "MIN_RESAMPLED", MIN_RESAMPLED)
    assert MIN_RESAMPLED == 10
    matrix = _hand_matrix()  # two rows per language
    assert matrix.own_changes() is None and matrix.baseline_intervals() is None
    assert ablate.describe(matrix)[-1] == (
        "no intervals: 2 held-out rows per language, and a bootstrap needs 10 (its intervals "
        "come out too narrow below that); raise the held-out tokens per language or lower "
        "--seq-len for more rows"
    )
    wide = _hand_matrix()
    for lang in wide.languages:  # ten copies of each row: intervals again
        wide.row_tokens[lang] = wide.row_tokens[lang] * 5
        for rows in [wide.row_nll["baseline"], *wide.row_nll["random_control"].values(),
                     *wide.row_nll["deactivated"].values()]:  # fmt: skip
            rows[lang] = rows[lang] * 5
    assert wide.own_changes() is not None


def _comparison():
    """Methods m (specific) and flat (hurts both alike) on two languages of two rows."""
    nll = {
        "baseline": {"a": [10.0, 20.0], "b": [30.0, 30.0]},
        "deactivated": {
            "m": {
                "a": {"a": [20.0, 24.0], "b": [30.5, 30.0]},
                "b": {"a": [10.0, 21.0], "b": [50.0, 44.0]},
            },
            "flat": {
                "a": {"a": [12.0, 22.0], "b": [32.0, 32.0]},
                "b": {"a": [12.0, 21.0], "b": [31.0, 33.0]},
            },
        },
    }
    ppl = lambda rows, tokens=20: math.exp(sum(rows) / tokens)  # noqa: E731
    return MethodComparison(
        languages=["a", "b"],
        methods=["m", "flat"],
        baseline={c: ppl(v) for c, v in nll["baseline"].items()},
        deactivated={
            m: {r: {c: ppl(v) for c, v in row.items()} for r, row in rows.items()}
            for m, rows in nll["deactivated"].items()
        },
        counts={"m": {"a": 1, "b": 1}, "flat": {"a": 1, "b": 1}},
        tokens_per_language=20,
        row_nll=nll,
        row_tokens={"a": [10, 10], "b": [10, 10]},
        uncertainty=HOW.to_json(),
    )


def test_specificity_intervals_by_enumerating_the_resamples():
    result = _comparison()
    found = result.specificity_intervals()
    nll = result.row_nll

    def score(method, wa, wb):  # an independent computation on the saved rows
        w = {"a": np.array(wa), "b": np.array(wb)}
        mean = lambda rows, c: (w[c] @ np.array(rows)) / (w[c].sum() * 10)  # noqa: E731
        gain = {
            (r, c): max(
                0.0, mean(nll["deactivated"][method][r][c], c) - mean(nll["baseline"][c], c)
            )
            for r in "ab"
            for c in "ab"
        }
        own, others = (gain["a", "a"] + gain["b", "b"]) / 2, (gain["a", "b"] + gain["b", "a"]) / 2
        return own / (own + others)

    patterns = [(2, 0), (1, 1), (0, 2)]  # every resample of two rows; each extreme pair has
    # probability 1/16, so the 2.5% and 97.5% percentiles are the extremes themselves
    every = {
        method: [score(method, wa, wb) for wa, wb in itertools.product(patterns, patterns)]
        for method in ("m", "flat")
    }
    points = result.specificity()
    for method in ("m", "flat"):
        estimate = found[method].score
        assert estimate.value == points[method]["score"]
        assert (estimate.lo, estimate.hi) == pytest.approx((min(every[method]), max(every[method])))
        assert estimate.n == 4
    difference = [f - m for f, m in zip(every["flat"], every["m"])]
    versus = found["flat"].versus_first
    assert found["m"].versus_first is None
    assert (versus.difference.lo, versus.difference.hi) == pytest.approx(
        (min(difference), max(difference))
    )
    assert versus.significant() == (max(difference) < 0)
    lines = compare_methods.describe(result)
    assert f"specificity {found['m'].score.value:.2f} [{found['m'].score.lo:.2f}, " in lines[0]
    assert "flat - m" in lines[1]
    (table,) = compare_methods.tables(result)
    assert table.rows[1][-1].startswith(f"{versus.difference.value:+.2f} [")
    saved = result.to_json()
    assert saved["intervals"]["specificity"]["flat"]["versus_first"]["difference"]["n"] == 4
    old = MethodComparison.from_json({k: v for k, v in saved.items() if k != "row_nll"})
    assert old.specificity_intervals() is None and "[" not in compare_methods.describe(old)[0]


def test_bootstrap_p():
    assert bootstrap_p(np.zeros(99)) == 1.0
    assert bootstrap_p(np.ones(999)) == pytest.approx(2 / 1000)
    assert bootstrap_p(np.r_[-np.ones(10), np.ones(89)]) == pytest.approx(22 / 100)
    assert bootstrap_p(np.array([np.nan, np.inf])) == 1.0
