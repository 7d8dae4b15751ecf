"""Intervals, paired tests and chance levels against hand computations, reference
implementations (statsmodels, scipy: test-only) and coverage by simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import hypergeom
from statsmodels.stats.contingency_tables import mcnemar as reference_mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from mlneurons.evaluation import uncertainty as u


def test_wilson_by_hand_and_against_statsmodels() -> None:
    # 3 of 12 (LRP2's "zh 25.0%"): centre (p + z²/2n)/(1 + z²/n), half-width by hand
    z = 1.959963984540054
    p, n = 0.25, 12
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    estimate = u.wilson(3, 12)
    assert estimate.value == 0.25 and estimate.n == 12
    assert estimate.lo == pytest.approx(centre - half, abs=1e-12)
    assert estimate.hi == pytest.approx(centre + half, abs=1e-12)
    assert (round(estimate.lo, 4), round(estimate.hi, 4)) == (0.0889, 0.5323)
    for k, n, level in [(0, 7, 0.95), (7, 7, 0.95), (1, 20, 0.9), (13, 40, 0.99)]:
        lo, hi = proportion_confint(k, n, alpha=1 - level, method="wilson")
        got = u.wilson(k, n, level)
        assert (got.lo, got.hi) == pytest.approx((lo, hi), abs=1e-12)
    assert u.wilson(0, 7).lo == 0.0 and u.wilson(7, 7).hi == 1.0
    with pytest.raises(ValueError, match="n >= 1"):
        u.wilson(0, 0)
    assert u.wilson(3, 12).text() == "25.0% [8.9%, 53.2%]"


@pytest.mark.parametrize("n,p", [(80, 0.4), (60, 0.25), (150, 0.6)])
def test_wilson_covers_the_truth_in_93_to_97_percent(n: int, p: float) -> None:
    """2,000 samples of Binomial(n, p); the exact coverage of these (n, p) is 94.5-94.9%,
    so the simulated share is within 4 standard errors of the band's edges."""
    ks = np.random.default_rng(7).binomial(n, p, size=2000)
    covered = [u.wilson(int(k), n).lo <= p <= u.wilson(int(k), n).hi for k in ks]
    assert 0.93 <= np.mean(covered) <= 0.97


def test_bootstrap_covers_a_perplexity_in_93_to_97_percent() -> None:
    """A perplexity over 200 chunks (exp of summed NLL over summed tokens): the percentile
    bootstrap over chunks covers the true perplexity in 93-97% of 2,000 samples."""
    rng = np.random.default_rng(11)
    truth = math.exp(2.0)  # every token's NLL has mean 2
    hits = 0
    for i in range(2000):
        tokens = rng.integers(20, 60, size=200).astype(float)
        nll = rng.gamma(4.0, 0.5, size=200) * tokens  # mean 2 per token
        estimate = u.bootstrap(
            lambda w, nll=nll, tokens=tokens: np.exp((w @ nll) / (w @ tokens)),
            200,
            u.Uncertainty(samples=400, seed=i),
        )
        assert estimate.value == pytest.approx(math.exp(nll.sum() / tokens.sum()))
        hits += estimate.lo <= truth <= estimate.hi
    assert 0.93 <= hits / 2000 <= 0.97


def test_cluster_bootstrap_of_a_macro_rate_covers_the_truth() -> None:
    """Relations drawn with rates from Beta(2, 3) (mean 0.4), 20 facts each, 20 relations:
    the two-stage cluster bootstrap covers 0.4 in 93-97% of 2,000 samples. (With few
    facts per relation it is conservative: 97.8% at 40 relations x 5 facts.)"""
    rng = np.random.default_rng(3)
    hits = 0
    for i in range(2000):
        rates = rng.beta(2, 3, size=20)
        groups = [[bool(x) for x in rng.random(20) < r] for r in rates]
        estimate = u.macro_rate(groups, u.Uncertainty(seed=i))
        assert estimate.value == pytest.approx(np.mean([np.mean(g) for g in groups]))
        hits += estimate.lo <= 0.4 <= estimate.hi
    assert 0.93 <= hits / 2000 <= 0.97


@pytest.mark.parametrize(
    "before,after",
    [
        ([1, 1, 0, 0, 1], [1, 1, 0, 0, 1]),  # all concordant: p = 1
        ([1, 1, 1, 1, 0], [0, 0, 0, 0, 0]),  # one-sided: b = 4, c = 0, p = 2/16
        ([1] * 9 + [0] * 3 + [1] * 2, [0] * 9 + [1] * 3 + [1] * 2),  # b = 9, c = 3
        ([0] * 12 + [1], [1] * 12 + [1]),  # c = 12, b = 0
        ([1, 0] * 15, [0, 1] * 15),  # b = c = 15: p = 1
    ],
)
def test_exact_mcnemar_equals_statsmodels(before: list[int], after: list[int]) -> None:
    b, c, p = u.mcnemar([bool(x) for x in before], [bool(x) for x in after])
    both = sum(1 for x, y in zip(before, after) if x and y)
    neither = sum(1 for x, y in zip(before, after) if not x and not y)
    if b + c == 0:
        assert p == 1.0
    else:
        reference = reference_mcnemar([[both, b], [c, neither]], exact=True).pvalue
        assert p == pytest.approx(reference, rel=1e-12)
    if (b, c) == (4, 0):
        assert p == pytest.approx(0.125)


def test_paired_rates() -> None:
    before = [True] * 6 + [False] * 6
    after = [True] * 4 + [False] * 2 + [True] * 5 + [False]
    test = u.paired_rates(before, after)
    assert (test.b, test.c) == (2, 5)
    assert test.before.value == 0.5 and test.after.value == 0.75
    assert test.difference.value == pytest.approx(0.25)
    assert test.difference.lo < 0.25 < test.difference.hi
    assert test.difference.method == "Newcombe hybrid score (paired)"
    assert test.p_value == pytest.approx(2 * sum(math.comb(7, i) for i in range(3)) / 2**7)
    assert not test.significant()
    assert u.PairedTest.from_json(test.to_json()) == test


def test_jaccard_permutation_null_on_a_hand_checked_example() -> None:
    """Relation r1: a = (1, 0), b = (1, 0); r2: a = (1, 1), b = (0, 1). Permuting b within
    relations gives four equally likely tables with Jaccard 2/3, 2/3, 1/4, 1/4: the null
    mean is 11/24 and P(null >= 2/3) = 1/2."""
    a, b = [True, False, True, True], [True, False, False, True]
    strata = ["r1", "r1", "r2", "r2"]
    exact = []
    for first, second in itertools.product([(1, 0), (0, 1)], [(0, 1), (1, 0)]):
        shuffled = np.array(first + second, dtype=bool)
        exact.append((shuffled & np.array(a)).sum() / (shuffled | np.array(a)).sum())
    assert np.mean(exact) == pytest.approx(11 / 24)
    chance = u.jaccard_null(a, b, strata, u.Uncertainty(samples=20000, seed=1))
    assert chance.observed == pytest.approx(2 / 3)
    assert chance.expected == pytest.approx(11 / 24, abs=0.01)
    assert chance.p_value == pytest.approx(0.5, abs=0.01)
    # the null keeps each language's count of correct facts per relation
    fixed = u.jaccard_null([True, False], [True, False], ["r", "s"])
    assert fixed.expected == 1.0 and fixed.p_value == 1.0


def test_jaccard_bootstrap() -> None:
    a = [True] * 10 + [False] * 10
    b = [True] * 5 + [False] * 5 + [True] * 5 + [False] * 5
    estimate = u.jaccard(a, b)
    assert estimate.value == pytest.approx(5 / 15)
    assert estimate.lo < 1 / 3 < estimate.hi


def test_hypergeometric_overlap_by_hand_and_against_scipy() -> None:
    # 2 of 4 units and 2 of 4: overlap 2 only when the sets are equal, 1 of C(4, 2) = 6
    assert u.hypergeometric_tail(2, 4, 2, 2) == pytest.approx(1 / 6)
    chance = u.overlap_null(3, 2048, 40, 50)
    assert chance.expected == pytest.approx(40 * 50 / 2048)
    assert chance.p_value == pytest.approx(hypergeom.sf(2, 2048, 50, 40), rel=1e-9)
    assert u.overlap_null(0, 2048, 40, 50).p_value == 1.0
    with pytest.raises(ValueError, match="no overlap"):
        u.overlap_null(41, 2048, 40, 50)


def test_holm_equals_statsmodels() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.5, 0.04]
    assert u.holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))


def test_weights_and_settings() -> None:
    w = u.weights(7, 50, seed=3)
    assert w.shape == (50, 7) and (w.sum(1) == 7).all()
    assert (u.weights(7, 50, seed=3) == w).all()
    with pytest.raises(ValueError, match="confidence"):
        u.Uncertainty(confidence=1.0)
    assert u.Uncertainty.of({"uncertainty": {"confidence": 0.9}}).confidence == 0.9
    assert u.Uncertainty.of({}) == u.Uncertainty()


def test_newcombe_paired_difference_by_hand() -> None:
    """before/after table: both 3, right->wrong 1, wrong->right 4, neither 4 (n = 12)."""
    before = [True] * 3 + [True] + [False] * 4 + [False] * 4
    after = [True] * 3 + [False] + [True] * 4 + [False] * 4
    got = u.paired_difference(before, after)
    p1, p2 = u.wilson(4, 12), u.wilson(7, 12)
    association = max(3 * 4 - 1 * 4 - 12 / 2, 0)  # ad - bc - n/2 = 2
    phi = association / math.sqrt(4 * 8 * 7 * 5)
    lower = math.sqrt(
        (p2.value - p2.lo) ** 2
        - 2 * phi * (p2.value - p2.lo) * (p1.hi - p1.value)
        + (p1.hi - p1.value) ** 2
    )
    upper = math.sqrt(
        (p2.hi - p2.value) ** 2
        - 2 * phi * (p2.hi - p2.value) * (p1.value - p1.lo)
        + (p1.value - p1.lo) ** 2
    )
    assert got.value == pytest.approx(3 / 12)
    assert (got.lo, got.hi) == pytest.approx((3 / 12 - lower, 3 / 12 + upper), abs=1e-12)
    # no discordant pair: the difference is 0 with an interval of non-zero width
    same = u.paired_difference([True, False] * 6, [True, False] * 6)
    assert same.value == 0 and same.lo < 0 < same.hi


def test_paired_difference_covers_the_truth() -> None:
    """48 paired items, P(before) = 0.4, 30% of items redrawn with P = 0.6 after: the
    true difference is 0.06; the 95% interval covers it in 93-97% of 2,000 samples."""
    rng = np.random.default_rng(5)
    hits = 0
    for _ in range(2000):
        before = rng.random(48) < 0.4
        after = np.where(rng.random(48) < 0.7, before, rng.random(48) < 0.6)
        e = u.paired_difference([bool(x) for x in before], [bool(x) for x in after])
        hits += e.lo <= 0.3 * 0.2 <= e.hi
    assert 0.93 <= hits / 2000 <= 0.97


def test_macro_rate_over_few_fixed_relations_by_hand_and_by_coverage() -> None:
    """4 relations (the built-in facts): Price & Bonett's interval, by hand, and its
    coverage of the mean of 4 fixed rates with 6 facts each (2,000 samples)."""
    groups = [[True, True, False], [False] * 3, [True] * 3, [True, False, False, False]]
    got = u.macro_rate(groups)
    smooth = np.array([(2 + 0.5) / 4, 0.5 / 4, 3.5 / 4, 1.5 / 5])
    sd = math.sqrt((smooth * (1 - smooth) / np.array([4, 4, 4, 5])).sum()) / 4
    assert got.value == pytest.approx((2 / 3 + 0 + 1 + 1 / 4) / 4)
    assert got.lo == pytest.approx(smooth.mean() - 1.959963984540054 * sd)
    assert got.hi == pytest.approx(smooth.mean() + 1.959963984540054 * sd)
    assert got.method.startswith("Price-Bonett")
    rng = np.random.default_rng(2)
    rates = np.array([0.4, 0.62, 0.29, 0.34])
    hits = 0
    for _ in range(2000):
        sample = [[bool(x) for x in rng.random(6) < r] for r in rates]
        e = u.macro_rate(sample)
        hits += e.lo <= rates.mean() <= e.hi
    assert 0.93 <= hits / 2000 <= 0.97


def test_too_few_items_get_no_interval() -> None:
    e = u.bootstrap(lambda w: (w @ np.arange(4.0)) / w.sum(-1), 4)
    assert e.value == 1.5 and not e.has_interval and not e.excludes(0)
    assert e.text(".2f") == "1.50 [no interval: 4 items]"
    assert e.to_json()["lo"] is None and u.Estimate.from_json(e.to_json()).text(".2f") == e.text(
        ".2f"
    )
