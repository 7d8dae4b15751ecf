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
