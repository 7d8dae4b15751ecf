"""Coverage of mlneurons' 95% intervals by simulation, and the Wilson interval's exact coverage.

    python bench/interval_coverage.py [--samples 2000]

Draws data from known truths and prints the share of intervals that cover the truth
(target 0.95): Wilson for rates (with its exact coverage beside the simulated one), the
percentile bootstrap for a perplexity over chunks, a macro rate over relations (Price &
Bonett below 10 relations, the two-stage cluster bootstrap from 10), and Newcombe's interval for a difference of paired rates
(against the paired bootstrap it replaced).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from mlneurons.evaluation import uncertainty as u


def wilson_exact(n: int, p: float) -> float:
    """The exact coverage of the Wilson interval at (n, p): a sum over the binomial."""
    return sum(
        math.comb(n, k) * p**k * (1 - p) ** (n - k)
        for k in range(n + 1)
        if u.wilson(k, n).lo <= p <= u.wilson(k, n).hi
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000, help="simulated data sets per row")
    sims = parser.parse_args().samples
    rng = np.random.default_rng(0)
    print(f"{'interval':<46} {'coverage':>9}  (target 0.95, {sims} simulated data sets)")
    for n, p in [(12, 0.25), (24, 0.5), (80, 0.4), (200, 0.1)]:
        ks = rng.binomial(n, p, size=sims)
        hit = np.mean([u.wilson(int(k), n).lo <= p <= u.wilson(int(k), n).hi for k in ks])
        print(f"{f'Wilson, n={n}, p={p}':<46} {hit:>9.3f}  exact {wilson_exact(n, p):.3f}")
    for chunks in (20, 60, 200):
        hits = 0
        for i in range(sims):
            tokens = rng.integers(20, 60, size=chunks).astype(float)
            nll = rng.gamma(4.0, 0.5, size=chunks) * tokens
            e = u.bootstrap(
                lambda w, nll=nll, tokens=tokens: np.exp((w @ nll) / (w @ tokens)),
                chunks,
                u.Uncertainty(seed=i),
            )
            hits += e.lo <= math.exp(2.0) <= e.hi
        print(f"{f'bootstrap perplexity, {chunks} chunks':<46} {hits / sims:>9.3f}")
    for relations, facts in [(4, 3), (4, 6), (20, 20), (40, 5)]:
        hits = 0
        for i in range(sims):
            rates = rng.beta(2, 3, size=relations)
            groups = [[bool(x) for x in rng.random(facts) < r] for r in rates]
            e = u.macro_rate(groups, u.Uncertainty(seed=i))
            # fixed relations (Price-Bonett): their mean rate; resampled ones: the population's
            truth = rates.mean() if relations < u.MIN_RESAMPLED else 0.4
            hits += e.lo <= truth <= e.hi
        label = f"macro rate, {relations} rel x {facts} facts"
        print(f"{label:<46} {hits / sims:>9.3f}")
    for n in (12, 48):
        hits = boot = 0
        for i in range(sims):
            before = rng.random(n) < 0.4
            after = np.where(rng.random(n) < 0.7, before, rng.random(n) < 0.6)
            truth = 0.3 * (0.6 - 0.4)  # P(after) - P(before)
            e = u.paired_difference(list(map(bool, before)), list(map(bool, after)))
            hits += e.lo <= truth <= e.hi
            diff = after - before.astype(float)
            d = u.bootstrap(
                lambda w, x=diff: (w @ x) / w.sum(-1),
                n,
                u.Uncertainty(seed=i),
            )
            boot += d.lo <= truth <= d.hi
        print(
            f"{f'Newcombe paired difference, n={n}':<46} {hits / sims:>9.3f}  "
            f"paired bootstrap {boot / sims:.3f}"
        )


if __name__ == "__main__":
    main()
