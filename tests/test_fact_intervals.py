"""Intervals on the facts side (issue 19): P@1 (Wilson, cluster bootstrap), the Jaccard of
correct facts against its permutation null with Holm, the fact-neuron overlap against random
top-k sets, LRP2 before/after (exact McNemar, paired bootstrap) and its dev grid's tie rule
and runner-up test, on small hand-made results with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

from mlneurons.evaluation import uncertainty as u
from mlneurons.interfaces.commands import fact_neurons as fact_neurons_command
from mlneurons.interfaces.commands import lrp2 as lrp2_command
from mlneurons.interfaces.commands import probe as probe_command
from mlneurons.methods.lrp2 import TIE_RULE, LRP2Result, ranked_pairs
from mlneurons.methods.probeless import FactNeurons, topk_chance
from mlneurons.methods.probing.result import ProbeResult


def _probe(rows, languages=("en", "de", "fr"), relations=("P1", "P2"), settings=None):
    predictions = [
        {"uuid": uuid, "lang": lang, "relation": rel, "gold": "g", "predicted": "p", "correct": ok}
        for uuid, lang, rel, ok in rows
    ]
    return ProbeResult(list(languages), list(relations), predictions, {"name": "m"}, settings or {})


def _small():
    return _probe(
        [
            ("a", "en", "P1", True),
            ("b", "en", "P1", True),
            ("c", "en", "P2", False),
            ("d", "en", "P2", True),
            ("a", "de", "P1", True),
            ("b", "de", "P1", False),
            ("c", "de", "P2", True),
            ("a", "fr", "P1", False),
        ]
    )


def test_p_at_1_intervals_by_hand():
    result = _small()
    table = result.p_at_1_intervals()
    for lang, rel, k, n in [("en", "P1", 2, 2), ("en", "P2", 1, 2), ("de", "P1", 1, 2)]:
        lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
        assert (table[lang][rel].value, table[lang][rel].n) == (k / n, n)
        assert (table[lang][rel].lo, table[lang][rel].hi) == pytest.approx((lo, hi), abs=1e-12)
    # micro: 3 of 4 facts; the Wilson interval by hand
    z = 1.959963984540054
    centre = (0.75 + z * z / 8) / (1 + z * z / 4)
    half = z * math.sqrt(0.75 * 0.25 / 4 + z * z / 64) / (1 + z * z / 4)
    micro = table["en"]["micro"]
    assert (micro.value, micro.lo, micro.hi) == pytest.approx((0.75, centre - half, centre + half))
    assert micro.text() == "75.0% [30.1%, 95.4%]"
    # macro: the cluster bootstrap over the relations' groups, as the core computes it
    assert table["en"]["macro"] == u.macro_rate([[True, True], [False, True]], u.Uncertainty())
    assert table["en"]["macro"].value == result.p_at_1()["en"]["macro"] == 0.75
    assert "P2" not in table["fr"] and table["fr"]["micro"].n == 1
    # the recorded settings are the ones used
    tighter = _probe([("a", "en", "P1", True)] * 3 + [("b", "en", "P1", False)], ("en",))
    tighter.settings["uncertainty"] = u.Uncertainty(confidence=0.8).to_json()
    assert tighter.p_at_1_intervals()["en"]["micro"] == u.wilson(3, 4, 0.8)


def _agreeing():
    """en and de get the same 10 of 20 facts per relation right (far above chance); fr
    gets the other 10 (Jaccard 0 with en: at or below chance)."""
    rows = []
    for rel in ("P1", "P2"):
        for i in range(20):
            uuid = f"{rel}-{i:02d}"
            rows += [
                (uuid, "en", rel, i < 10),
                (uuid, "de", rel, i < 10),
                (uuid, "fr", rel, i >= 10),
            ]
    return _probe(rows)


def test_jaccard_tests_against_the_core_and_holm():
    result = _agreeing()
    tests = result.jaccard_tests()
    assert list(tests) == [("en", "de"), ("en", "fr"), ("de", "fr")]
    x, y, strata = result.shared("en", "de")
    assert len(x) == 40 and strata == ["P1"] * 20 + ["P2"] * 20
    how = u.Uncertainty()
    assert tests[("en", "de")].jaccard == u.jaccard(x, y, how)
    assert tests[("en", "de")].chance == u.jaccard_null(x, y, strata, how)
    assert tests[("en", "de")].jaccard.value == result.jaccard()["en"]["de"] == 1.0
    raw = [t.chance.p_value for t in tests.values()]
    assert [t.p_adjusted for t in tests.values()] == u.holm(raw)
    assert tests[("en", "de")].above_chance()
    # no shuffle within the two relations reproduces the same 10 of 20 twice (1 in
    # C(20, 10)^2): the raw p is the permutation floor 1 / 1001, then Holm times 3
    assert tests[("en", "de")].chance.p_value == 1 / 1001
    assert tests[("en", "de")].p_adjusted == pytest.approx(3 / 1001)
    assert not tests[("en", "fr")].above_chance() and tests[("en", "fr")].chance.p_value == 1.0
    assert tests[("en", "de")].family == 3


def test_probe_describe_and_tables_show_intervals_and_flag_chance():
    result = _agreeing()
    lines = probe_command.describe(result)
    en = next(line for line in lines if line.startswith("en: "))
    macro = u.macro_rate([[True] * 10 + [False] * 10] * 2).text()
    assert en == f"en: P@1 macro {macro}, micro 50.0% [35.2%, 64.8%] (40 facts)"
    assert u.wilson(20, 40).text() == "50.0% [35.2%, 64.8%]"
    de = next(line for line in lines if line.strip().startswith("de "))
    fr = next(line for line in lines if line.strip().startswith("fr "))
    assert de == "  de 1.00 [1.00, 1.00], above chance (null mean 0.34, Holm p = 0.003)"
    assert "0.00 [0.00, 0.00], not above chance" in fr and "Holm p = 1.00" in fr
    assert any("Holm-adjusted over 3 pairs" in line for line in lines)
    p_at_1, jaccard = probe_command.tables(result)
    assert p_at_1.header == ["language", "P1", "P2", "macro", "micro"]
    assert p_at_1.rows[0][1] == u.wilson(10, 20).text() == "50.0% [29.9%, 70.1%]"
    assert "Wilson" in p_at_1.caption and "cluster bootstrap" in p_at_1.caption
    verdicts = {row[0]: row[-1] for row in jaccard.rows}
    assert verdicts == {"en–de": "above chance", "en–fr": "n.s.", "de–fr": "n.s."}
    assert "Holm-adjusted over the 3 pairs" in jaccard.caption
    assert "permutation within relations" in jaccard.caption


def test_probe_json_carries_intervals_and_an_old_file_still_loads(tmp_path):
    result = _small()
    result.save(tmp_path)
    data = json.loads((tmp_path / "probe.json").read_text())
    micro = data["p_at_1_intervals"]["en"]["micro"]
    assert micro == u.wilson(3, 4).to_json() and micro["method"] == "Wilson score"
    assert {"languages", "jaccard", "chance", "p_adjusted", "above_chance"} <= set(
        data["jaccard_tests"][0]
    )
    # a file written before intervals: no interval keys, no uncertainty settings
    old = {k: data[k] for k in ("languages", "relations", "p_at_1", "predictions", "jaccard")}
    (tmp_path / "probe.json").write_text(json.dumps({**old, "model": {}, "settings": {}}))
    back = ProbeResult.load(tmp_path)
    assert back.uncertainty() == u.Uncertainty()  # the defaults
    assert back.p_at_1_intervals() == result.p_at_1_intervals()


def _lrp2(outcomes=None, **extra):
    grid = [[None, 0.5, 0.5], [None, None, 0.25], [None, None, None]]
    return LRP2Result(
        ["zh"],
        "en",
        [3, 9, 15],
        {"zh": grid},
        {"zh": [3, 9]},
        {"zh": {"before": 0.25, "after": 0.5}},
        {"zh": {"before": 0.2, "after": 0.4}},
        {"zh": {"before": None, "after": None}},
        {"name": "m"},
        outcomes=outcomes or {},
        **extra,
    )


def _rows(before, after, pivot):
    return [
        {"relation": "P1", "uuid": f"u{i:02d}", "before": b, "after": a, "pivot": p}
        for i, (b, a, p) in enumerate(zip(before, after, pivot))
    ]


def test_lrp2_paired_test_and_significance_flags():
    # 12 test facts: 3 right before; after, 2 more right (b = 0, c = 2): p = 2 * 1/4 = 0.5
    before = [True] * 3 + [False] * 9
    few = [True] * 5 + [False] * 7
    pivot = [True] * 6 + [False] * 6
    result = _lrp2({"zh": _rows(before, few, pivot)})
    test = result.p_at_1_tests()["zh"]
    assert (test.b, test.c, test.p_value) == (0, 2, 0.5) and not test.significant()
    assert test.before == u.wilson(3, 12) and test.after == u.wilson(5, 12)
    line = next(line for line in lrp2_command.describe(result) if line.startswith("zh:"))
    assert "25.0% [8.9%, 53.2%] -> 41.7%" in line
    assert "exact McNemar p = 0.50, not significant" in line
    # 9 more right (c = 9, b = 0): p = 2 / 2**9 < 0.05
    many = [True] * 12
    result = _lrp2({"zh": _rows(before, many, pivot)})
    test = result.p_at_1_tests()["zh"]
    assert test.p_value == pytest.approx(2 / 2**9) and test.significant()
    line = next(line for line in lrp2_command.describe(result) if line.startswith("zh:"))
    assert "exact McNemar p = 0.004, significant" in line and "not significant" not in line
    (table,) = lrp2_command.tables(result)
    assert table.rows[0][6] == "0.004" and "exact McNemar" in table.caption


def test_lrp2_trans_intervals_by_hand():
    # 12 facts, the last one missing in the pivot: 11 shared (a bootstrap needs 10 or more)
    before = [True, True, False, False, True, False] * 2
    after = [True, True, True, False, False, True] * 2
    pivot = [True, False, True, False, True, True] + [True, False, True, False, True, None]
    result = _lrp2({"zh": _rows(before, after, pivot)})
    ci = result.trans_intervals()["zh"]
    # over the 11 shared facts: before {0,1,4,6,7,10} vs pivot {0,2,4,5,6,8,10}: 4/9;
    # after {0,1,2,5,6,7,8} vs it: 5/9
    assert ci["before"].value == pytest.approx(4 / 9) and ci["after"].value == pytest.approx(5 / 9)
    assert ci["change"].value == pytest.approx(1 / 9)
    assert ci["before"] == u.jaccard(before[:11], pivot[:11], u.Uncertainty())
    # the change's interval, resample by resample: the same weights for both sides
    w = u.weights(11, 1000, 0)
    b, a, p = (np.array(x[:11], dtype=float) for x in (before, after, pivot))
    with np.errstate(invalid="ignore"):  # resamples without a correct fact: left out
        jac = [(w @ (x * p)) / (w @ np.maximum(x, p)) for x in (b, a)]
    draws = (jac[1] - jac[0])[np.isfinite(jac[1] - jac[0])]
    assert (ci["change"].lo, ci["change"].hi) == pytest.approx(
        tuple(np.percentile(draws, [2.5, 97.5]))
    )
    assert ci["change"].method.startswith("paired bootstrap")
    # no correct fact on either side: Trans is undefined, and no interval is made up
    empty = _lrp2({"zh": _rows([False] * 3, [False] * 3, [False] * 3)})
    assert empty.trans_intervals()["zh"] == {}


def test_lrp2_tie_rule_and_runner_up():
    nan = None
    grid = [[nan, 0.5, 0.5], [nan, nan, 0.5], [nan, nan, nan]]
    assert ranked_pairs([3, 9, 15], grid) == [(3, 9), (3, 15), (9, 15)]  # earlier LIRP, LSRP
    grid = [[nan, 0.25, 0.5], [nan, nan, 0.5], [nan, nan, nan]]
    assert ranked_pairs([3, 9, 15], grid) == [(3, 15), (9, 15), (3, 9)]
    assert "earlier LIRP layer" in TIE_RULE
    chosen = [True] * 6 + [False] * 6
    second = [True] * 3 + [False] * 9  # right on 3 fewer, never on another: b = 0, c = 3
    result = _lrp2(dev_correct={"zh": {"3,9": chosen, "3,15": second, "9,15": [False] * 12}})
    result.grid["zh"] = [[nan, 0.5, 0.25], [nan, nan, 0.0], [nan, nan, nan]]
    pair, test = result.selection_test("zh")
    assert pair == (3, 15) and (test.b, test.c, test.p_value) == (0, 3, 0.25)
    assert test.after.value == 0.5 and test.difference.value == 0.25
    result.runner_up["zh"] = {
        "pair": list(pair),
        "dev_p_at_1": 0.25,
        "test": test.to_json(),
        "distinguishable": test.significant(),
    }
    line = lrp2_command.describe(result)[-1]
    assert line == (
        "zh: the selected pair (3, 9) (dev P@1 50.0%) is not distinguishable from the "
        "runner-up (3, 15) (25.0%): exact McNemar p = 0.25 on 12 dev facts"
    )
    assert _lrp2().selection_test("zh") is None  # an old result: no dev data


def test_old_lrp2_result_loads_and_shows_values_alone(tmp_path):
    result = _lrp2()
    record = {
        k: v
        for k, v in result.to_json().items()
        if k
        in {
            "languages",
            "pivot",
            "layers",
            "grid",
            "selected",
            "test_p_at_1",
            "trans",
            "neuron_overlap",
            "model",
        }
    }
    (tmp_path / "lrp2.json").write_text(json.dumps(record))
    back = LRP2Result.load(tmp_path)
    assert back.p_at_1_tests() == {} and back.trans_intervals() == {} and back.runner_up == {}
    lines = lrp2_command.describe(back)
    assert lines[1] == "zh: layers [3, 9], test P@1 25.0% -> 50.0%, Trans 0.20 -> 0.40"
    assert "[" not in "".join(str(c) for c in lrp2_command.tables(back)[0].rows[0][3:])
    assert set(lrp2_command.figures(back, None, tmp_path)) == {"lrp2_grid_zh.png"}
    # and a new result round-trips with its per-fact data
    full = _lrp2({"zh": _rows([True, False], [True, True], [True, True])})
    full.save(tmp_path)
    assert LRP2Result.load(tmp_path) == full
    data = json.loads((tmp_path / "lrp2.json").read_text())
    assert data["p_at_1_tests"]["zh"]["test"] == "exact McNemar"
    assert data["trans_intervals"]["zh"]["before"]["n"] == 2


def test_topk_chance_by_hand():
    # 4 neurons, k = 2: the overlap X is 0, 1, 2 with chances 1/6, 4/6, 1/6
    chance = topk_chance(0.5, 4, 2, 4, 2)
    assert chance.expected == pytest.approx(0 / 6 + (1 / 3) * 4 / 6 + 1 * 1 / 6)  # E[X/(4-X)]
    assert chance.p_value == pytest.approx(1 / 36)  # both facts share both neurons
    assert topk_chance(0.5, 3, 2, 4, 2).p_value == pytest.approx(1 / 36 + 2 * (1 / 6) * (4 / 6))
    # one fact: the core's exact hypergeometric tail
    assert topk_chance(0.1, 3, 1, 50, 6).p_value == pytest.approx(
        u.hypergeometric_tail(3, 50, 6, 6)
    )
    assert topk_chance(0.0, 0, 5, 50, 6).p_value == 1.0


def _neurons(settings=None):
    def pairs(*flat):
        return torch.tensor([[0, n] for n in flat])

    neurons = {
        "en": {"a": pairs(0, 1), "b": pairs(2, 3), "c": pairs(0, 2)},
        "de": {"a": pairs(0, 1), "b": pairs(2, 3), "c": pairs(1, 3)},
        "fr": {"a": pairs(2, 3)},
    }
    return FactNeurons(["en", "de", "fr"], 2, neurons, 1, 4, {"name": "m"}, settings or {})


def test_fact_neuron_overlap_intervals_and_chance(tmp_path):
    result = _neurons()
    tests = result.overlap_tests()
    en_de = tests[("en", "de")]
    assert en_de.overlap == u.mean([1.0, 1.0, 0.0], u.Uncertainty())
    assert en_de.overlap.value == result.overlap()["en"]["de"] == pytest.approx(2 / 3)
    # total intersection 4 over 3 facts of random 2-sets out of 4 neurons
    assert en_de.chance == topk_chance(2 / 3, 4, 3, 4, 2)
    assert tests[("en", "fr")].overlap.value == 0.0 and tests[("en", "fr")].chance.p_value == 1.0
    assert [t.p_adjusted for t in tests.values()] == u.holm(
        [t.chance.p_value for t in tests.values()]
    )
    (table,) = fact_neurons_command.tables(result)
    assert table.rows[1][0] == "fr" and table.rows[1][2].startswith("n.s.")
    assert "hypergeometric" in table.caption and "Holm" in table.caption
    # an old file (no settings, no tests) still loads
    result.save(tmp_path)
    data = json.loads((tmp_path / "fact_neurons.json").read_text())
    assert data["overlap_tests"][0]["languages"] == ["en", "de"]
    del data["settings"], data["overlap_tests"]
    (tmp_path / "fact_neurons.json").write_text(json.dumps(data))
    assert FactNeurons.load(tmp_path).overlap_tests() == tests


def test_plots_draw_the_intervals():
    from matplotlib.collections import LineCollection
    from matplotlib.container import BarContainer

    from mlneurons.interfaces import plots

    result = _agreeing()
    fig = plots.plot_p_at_1(result)
    ax = fig.axes[0]
    intervals = result.p_at_1_intervals()
    bars = [c for c in ax.containers if isinstance(c, BarContainer)][0]  # P1, per language
    segments = bars.errorbar.lines[2][0].get_segments()
    for lang, segment in zip(result.languages, segments):
        e = intervals[lang]["P1"]
        assert segment[:, 1] == pytest.approx([100 * e.lo, 100 * e.hi])
    assert "95% CI" in ax.get_ylabel()
    texts = [t.get_text() for t in plots.plot_jaccard(result).axes[0].texts]
    assert "1.00\n[1.00, 1.00]" in texts and "0.00\n[0.00, 0.00] n.s." in texts
    before = [True] * 3 + [False] * 9
    lrp2 = _lrp2({"zh": _rows(before, [True] * 5 + [False] * 7, [True] * 12)})
    ax = plots.plot_lrp2_p_at_1(lrp2).axes[0]
    assert any(t.get_text() == "p = 0.50\nn.s." for t in ax.texts)
    lines = [c for c in ax.collections if isinstance(c, LineCollection)]
    after = u.wilson(5, 12)
    assert lines[1].get_segments()[0][:, 1] == pytest.approx([100 * after.lo, 100 * after.hi])
