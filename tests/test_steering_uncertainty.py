"""Intervals and paired tests of steering, sweeps, fallback curves, SES and the logit lens,
on small hand-made results with hand-known answers (Wilson bounds from statsmodels,
McNemar p-values from the binomial by hand, bootstraps against a loop over resamples)."""

import json
import math

import numpy as np
import pytest
import torch
from statsmodels.stats.proportion import proportion_confint

from mlneurons.evaluation.langid import shares
from mlneurons.evaluation.uncertainty import MIN_RESAMPLED, Uncertainty, bootstrap, weights
from mlneurons.interfaces.commands import fallback as fallback_command
from mlneurons.interfaces.commands import logit_lens as lens_command
from mlneurons.interfaces.commands import ses as ses_command
from mlneurons.interfaces.commands import steer as steer_command
from mlneurons.interfaces.commands import steer_sweep as sweep_command
from mlneurons.interfaces.plots import (
    plot_fallback_curve,
    plot_latent_language,
    plot_sentence_similarity,
    plot_steering_sweep,
    save_figure,
)
from mlneurons.methods.readouts import LatentLanguage, SentenceSimilarity
from mlneurons.methods.steering import (
    FallbackCurve,
    FallbackPoint,
    SteeringResult,
    SteeringSweep,
    SweepPoint,
)


def wilson_text(k, n):
    lo, hi = proportion_confint(k, n, method="wilson")
    return f"{k / n:.1%} [{lo:.1%}, {hi:.1%}]"


def percentile_of_loop(statistic, n, how):
    """The percentile interval by a Python loop over the same resamples as the bootstrap."""
    draws = [statistic(row) for row in weights(n, how.samples, how.seed)]
    tail = (1 - how.confidence) / 2 * 100
    return tuple(np.percentile(draws, [tail, 100 - tail]))


# ---- steer ---------------------------------------------------------------------------------

# per question: (language before, language after); source es, target zh
PAIRS = [("es", "zh")] * 3 + [("en", "zh")] * 3 + [("en", "es"), ("en", "unknown")]


def steering_result(settings=None):
    samples = [
        {"prompt": f"q{i}", "before": "b", "after": "a", "lang_before": b, "lang_after": a}
        for i, (b, a) in enumerate(PAIRS)
    ]
    return SteeringResult.from_samples("es", "zh", samples, model={}, settings=settings or {})


def test_steering_paired_tests_by_hand(tmp_path):
    result = steering_result()
    target, source = result.test(), result.test("es")
    # zh: 0/8 -> 6/8, six wrong -> right and none back: p = 2 * (1/2)^6
    assert (target.b, target.c, target.p_value) == (0, 6, 2 / 64)
    assert target.after.text() == wilson_text(6, 8) and target.difference.value == 0.75
    # es: 3/8 -> 1/8, three right -> wrong, one back: p = 2 * P(Bin(4, 1/2) <= 1) = 10/16
    assert (source.b, source.c, source.p_value) == (3, 1, 0.625)
    lines = steer_command.describe(result)
    assert lines[1].startswith(f"answers in zh, before -> after: {wilson_text(0, 8)} -> ")
    assert "exact McNemar p = 0.031)" in lines[1] and "not significant" not in lines[1]
    assert lines[2].endswith("exact McNemar p = 0.625; not significant)")
    rows = steer_command.tables(result)[0].rows
    assert rows[0][-1] == "p = 0.031" and rows[1][-1] == "p = 0.625 n.s."
    assert rows[1][1:3] == [wilson_text(3, 8), wilson_text(1, 8)]
    # the JSON carries both tests; at a recorded 99% level p = 0.031 is no longer significant
    saved = json.loads(open(result.save(tmp_path)).read())
    interval = saved["intervals"]["target"]["after"]
    assert set(interval) == {"value", "lo", "hi", "n", "method", "confidence", "seed"}
    strict = steering_result({"uncertainty": Uncertainty(0.99).to_json()})
    assert "not significant" in steer_command.describe(strict)[1]
    # a result saved before intervals (no settings) loads and has them: every answer is kept
    old = {k: v for k, v in saved.items() if k != "intervals"}
    loaded = SteeringResult.from_json(old)
    assert loaded.test().p_value == target.p_value and loaded.uncertainty == Uncertainty()


def test_language_shares_are_wilson():
    found = shares(["zh", "zh", "en", "zh"], ["zh", "en", "ja"])
    assert list(found) == ["zh", "en", "ja"]
    assert found["zh"].text() == wilson_text(3, 4) and found["ja"].text() == wilson_text(0, 4)
    assert found["en"].method == "Wilson score" and found["en"].n == 4
    with pytest.raises(ValueError, match="no answers"):
        shares([])


# ---- sweep ---------------------------------------------------------------------------------

N = 8
BASE_NLL = [2.0, 3.0, 1.0, 4.0, 2.5, 2.0, 3.5, 1.5]
BASE_TOKENS = [2, 3, 1, 4, 2, 2, 3, 1]


def point(labels, alpha=None, mode="add", nll=BASE_NLL, tokens=BASE_TOKENS):
    counts = {
        "n": len(labels),
        "target": labels.count("zh"),
        "source": labels.count("fr"),
        "degenerate": labels.count("degenerate"),
        "empty": 0,
    }
    setting = {} if alpha is None else {"mode": mode, "alpha": alpha, "top_rate": 0.01}
    return SweepPoint(
        **setting,
        n_neurons=None if alpha is None else 10,
        target_rate=counts["target"] / N,
        source_rate=counts["source"] / N,
        degenerate_rate=counts["degenerate"] / N,
        empty_rate=0.0,
        fluency_ppl=math.exp(sum(nll) / sum(tokens)),
        answer_tokens=sum(tokens),
        counts=counts,
        labels=tuple(labels),
        nll=tuple(nll),
        tokens=tuple(tokens),
    )


def hand_sweep():
    steered_nll = [x * 2 for x in BASE_NLL]
    return SteeringSweep(
        "fr",
        "zh",
        ["fr", "zh"],
        point(["fr"] * 7 + ["degenerate"]),
        [
            point(["zh"] * 8, 1.0, nll=steered_nll),  # A
            point(["zh"] * 7 + ["fr"], 0.5, nll=steered_nll),  # B: 7/8, not told from A
            point(["fr"] * 6 + ["zh", "degenerate"], 2.0, "scale"),  # C: fluency as unsteered
            point(["zh"] * 8, 1.0, "diffmean", nll=steered_nll),  # D
            point(["fr"] * 8, 0.5, "diffmean"),  # E: 0/8, clearly below D
        ],
        settings={"n_questions": N},
    )


def test_sweep_tests_holm_and_runner_up_by_hand():
    sweep = hand_sweep()
    a, b, c, d, e = sweep.points
    assert [sweep.test(p).p_value for p in sweep.points] == [2 / 256, 2 / 128, 1.0, 2 / 256, 1.0]
    # Holm over five: 5 x 1/128, 4 x 1/128 (raised to the running max), 3 x 1/64, 2 x 1, 1
    assert sweep.adjusted_p_values() == [5 / 128, 3 * 2 / 128, 1.0, 5 / 128, 1.0]
    assert a.rate("target_rate").text() == wilson_text(8, 8)
    assert sweep.baseline.rate("degenerate_rate").text() == wilson_text(1, 8)
    assert sweep.best("add") is a and sweep.best("diffmean") is d
    runner, versus = sweep.versus_runner_up("add")
    assert runner is b and (versus.b, versus.c, versus.p_value) == (0, 1, 1.0)
    assert sweep.versus_runner_up("diffmean")[1].p_value == 2 / 256
    assert sweep.versus_runner_up("scale") is None  # one setting
    lines = sweep_command.describe(sweep)
    add = next(i for i, line in enumerate(lines) if line.startswith("best add"))
    assert "Holm-adjusted 0.039: significant" in lines[add]
    assert lines[add + 1].startswith("  not distinguishable by the target rate with alpha 0.5")
    scale = next(line for line in lines if line.startswith("best scale"))
    assert "Holm-adjusted 1.000: not significant" in scale
    assert lines[-1].startswith("best diffmean")  # told from its runner-up: no line after it
    best, every = sweep_command.tables(sweep)
    by_mode = {row[0]: row for row in best.rows}
    assert by_mode["add"][-1] == "alpha 0.5, top 0.01: p = 1.000 n.s."
    assert by_mode["diffmean"][-1] == "alpha 0.5, top 0.01: p = 0.008"
    assert by_mode["add"][-2] == "p = 0.008, Holm 0.039"
    assert every.rows[2][-2].endswith(" n.s.")  # C's fluency is the unsteered one: ratio 1
    assert every.rows[2][-1] == "p = 1.000, Holm 1.000 n.s."
    assert "Holm-adjusted over the 5 settings" in best.caption


def test_sweep_fluency_bootstrap_equals_a_loop():
    sweep = hand_sweep()
    how = Uncertainty(samples=300, seed=3)
    sweep.settings["uncertainty"] = how.to_json()
    base, a = sweep.baseline, sweep.points[0]
    nll, tokens = np.array(BASE_NLL), np.array(BASE_TOKENS, dtype=float)
    found = base.fluency(how)
    assert found.value == pytest.approx(math.exp(nll.sum() / tokens.sum()))
    # 8 questions are fewer than a bootstrap needs (uncertainty.MIN_RESAMPLED): no interval
    assert N < MIN_RESAMPLED and not found.has_interval
    ratio = sweep.fluency_change(a)
    assert ratio.value == pytest.approx(a.fluency_ppl / base.fluency_ppl)
    assert not ratio.has_interval
    # the same statistic on 16 questions: the vectorised bootstrap equals a loop
    nll16, tokens16 = np.tile(nll, 2), np.tile(tokens, 2)
    found = bootstrap(lambda w: np.exp((w @ nll16) / (w @ tokens16)), 2 * N, how)
    lo, hi = percentile_of_loop(
        lambda w: math.exp((w * nll16).sum() / (w * tokens16).sum()), 2 * N, how
    )
    assert (found.lo, found.hi) == pytest.approx((lo, hi), rel=1e-12)


def test_sweep_json_intervals_and_old_files(tmp_path):
    sweep = hand_sweep()
    saved = json.loads(open(sweep.save(tmp_path)).read())
    first = saved["points"][0]["intervals"]
    assert first["versus_unsteered"]["holm_p"] == 5 / 128
    assert first["target_rate"]["n"] == 8 and "fluency_ratio" in first
    assert saved["points"][0]["counts"] == {
        "n": 8,
        "target": 8,
        "source": 0,
        "degenerate": 0,
        "empty": 0,
    }
    loaded = SteeringSweep.load(tmp_path)
    assert loaded.points == sweep.points and loaded.baseline == sweep.baseline
    # a file written before intervals: rates alone, no tests, no made-up interval
    for p in [saved["baseline"], *saved["points"]]:
        for key in ("counts", "labels", "nll", "tokens", "intervals"):
            del p[key]
    old = SteeringSweep.from_json({**saved, "settings": {"n_questions": 8}})
    assert old.test(old.points[0]) is None and old.points[0].rate("target_rate") is None
    assert old.adjusted_p_values() == [None] * 5 and old.versus_runner_up("add") is None
    assert not any("[" in line for line in sweep_command.describe(old))
    best = sweep_command.tables(old)[0]
    assert best.rows[1][4] == "100.0%" and best.rows[1][-2:] == ["–", "–"]
    assert old.to_json()["points"][0]["intervals"] == {}
    save_figure(plot_steering_sweep(old), tmp_path / "old.png")


def test_sweep_plot(tmp_path):
    path = save_figure(plot_steering_sweep(hand_sweep()), tmp_path / "sweep.png")
    assert path.stat().st_size > 0


# ---- fallback ------------------------------------------------------------------------------


def fallback_point(share, labels):
    categories = ["zh", "en", "unknown", "degenerate"]
    counts = {c: labels.count(c) for c in categories}
    return FallbackPoint(
        share=share,
        n_deactivated=int(share * 4),
        degenerate_rate=counts["degenerate"] / len(labels),
        samples=(),
        seconds=0.1,
        distribution={c: k / len(labels) for c, k in counts.items()},
        counts=counts,
        labels=tuple(labels),
    )


def hand_curve():
    points = [
        fallback_point(0.0, ["zh"] * 8),
        fallback_point(0.5, ["en"] * 8),
        fallback_point(1.0, ["zh"] * 6 + ["en", "degenerate"]),
    ]
    categories = ["zh", "en", "unknown", "degenerate"]
    return FallbackCurve("zh", "lape", categories, points, settings={"n_questions": 8})


def test_fallback_shares_and_tests_by_hand(tmp_path):
    curve = hand_curve()
    half, full = curve.points[1:]
    assert curve.test(curve.points[0]) is None  # the reference itself
    assert curve.test(half).p_value == 2 / 256 and curve.test(full).p_value == 0.5
    assert curve.adjusted_p_values() == [None, 2 * 2 / 256, 0.5]
    assert full.interval("en").text() == wilson_text(1, 8)
    lines = fallback_command.describe(curve)
    assert f"en {wilson_text(8, 8)}" in lines[1] and "Holm-adjusted 0.016: significant" in lines[1]
    assert lines[2].endswith("Holm-adjusted 0.500: not significant")
    rows = fallback_command.tables(curve)[0].rows
    assert rows[0][-1] == "–" and not rows[1][-1].endswith("n.s.") and rows[2][-1].endswith("n.s.")
    assert rows[2][2:6] == [
        wilson_text(6, 8),
        wilson_text(1, 8),
        wilson_text(0, 8),
        wilson_text(1, 8),
    ]
    saved = json.loads(open(curve.save(tmp_path)).read())
    assert saved["points"][1]["intervals"]["versus_none_off"]["holm_p"] == 4 / 256
    assert saved["points"][2]["counts"]["zh"] == 6
    assert FallbackCurve.load(tmp_path).points == curve.points
    for p in saved["points"]:  # the layout before intervals
        for key in ("counts", "labels", "intervals"):
            del p[key]
    old = FallbackCurve.from_json(saved)
    assert old.points[1].interval("en") is None and old.test(old.points[1]) is None
    assert fallback_command.tables(old)[0].rows[1][2:4] == ["0.0%", "100.0%"]
    assert not any("[" in line for line in fallback_command.describe(old))
    save_figure(plot_fallback_curve(old), tmp_path / "old.png")
    assert save_figure(plot_fallback_curve(curve), tmp_path / "f.png").stat().st_size > 0


# ---- logit lens ----------------------------------------------------------------------------


def hand_lens(target_last=0.5):
    # 6 words x 3 layers: English leads at layer 0, no clear lead at layer 1, zh at layer 2
    english = torch.tensor([[0.5, 0.3, 0.1]] * 6)
    lead = torch.tensor([0.1, 0.1, 0.1, -0.1, -0.1, -0.12])
    target = torch.stack([torch.full((6,), 0.1), 0.3 + lead, torch.full((6,), target_last)], 1)
    words = [{"source": f"s{i}", "target": f"t{i}", "en": f"e{i}"} for i in range(6)]
    return LatentLanguage("fr", "zh", target, english, words, n_dropped=0)


def test_logit_lens_intervals_and_crossover(tmp_path):
    lens = hand_lens()
    how = lens.uncertainty
    assert how == Uncertainty()  # nothing recorded: the defaults
    found = lens.intervals()
    diff = (lens.item_p_target - lens.item_p_english).double().numpy()
    lo, hi = percentile_of_loop(lambda w: (w * diff[:, 1]).sum() / w.sum(), 6, how)
    assert (found["difference"][1].lo, found["difference"][1].hi) == pytest.approx((lo, hi))
    assert found["difference"][1].value == pytest.approx(-0.02 / 6)
    assert found["difference"][0].text(".1f") == "-0.4 [-0.4, -0.4]"
    # the mean lead at layer 1 is slightly English, so the crossover is layer 2; resamples
    # where zh leads at layer 1 put it at 1, and none at 0 or never
    assert lens.crossover_layer() == 2
    crossover = lens.crossover_interval()
    assert (crossover.value, crossover.lo, crossover.hi) == (2, 1, 2)
    lines = lens_command.describe(lens)
    assert "from layer 2 on (95% CI: layer 1 to layer 2, bootstrap over the 6 words)" in lines[1]
    assert lines[2].endswith("holds 0): 1")
    rows = lens_command.tables(lens)[0].rows
    assert rows[1][-1].endswith(" n.s.") and not rows[2][-1].endswith("n.s.")
    never = hand_lens(target_last=0.05)
    assert never.crossover_layer() is None
    assert never.crossover_interval().value == never.crossover_interval().lo == 3
    assert "never to never" in lens_command.describe(never)[1]
    lens.save(tmp_path)
    loaded = LatentLanguage.load(tmp_path)
    assert loaded.crossover_interval() == crossover
    save_figure(plot_latent_language(lens), tmp_path / "lens.png")


# ---- SES -----------------------------------------------------------------------------------


def hand_ses(with_items=True):
    # 5 sentences, 3 layers, 2 languages: layer 0 low, layers 1 and 2 alike and high
    off = torch.tensor(
        [
            [0.5, 0.90, 0.89],
            [0.6, 0.92, 0.93],
            [0.4, 0.88, 0.86],
            [0.5, 0.91, 0.92],
            [0.55, 0.9, 0.89],
        ]
    )
    items = torch.ones(5, 3, 2, 2)
    items[:, :, 0, 1] = items[:, :, 1, 0] = off
    return SentenceSimilarity(
        ["en", "zh"],
        items.mean(0),
        5,
        item_similarity=items if with_items else None,
    )


def test_ses_intervals_peak_and_old_files(tmp_path):
    ses = hand_ses()
    found = ses.mean_offdiagonal_intervals()
    values = ses.item_offdiagonal().numpy()
    lo, hi = percentile_of_loop(lambda w: (w * values[:, 0]).sum() / w.sum(), 5, ses.uncertainty)
    assert (found[0].lo, found[0].hi) == pytest.approx((lo, hi))
    assert found[0].value == pytest.approx(0.51)
    assert ses.peak() == (1, [2])  # layer 2 cannot be told from the peak, layer 0 can
    lines = ses_command.describe(ses)
    assert "highest at layer 1 (0.902 [" in lines[0]
    assert lines[1].endswith("paired bootstrap over sentences): 2")
    assert [row[2] for row in ses_command.tables(ses)[0].rows] == ["", "peak", "n.s. from the peak"]
    ses.save(tmp_path)
    assert SentenceSimilarity.load(tmp_path).peak() == (1, [2])
    save_figure(plot_sentence_similarity(ses), tmp_path / "ses.png")
    old = hand_ses(with_items=False)
    old.save(tmp_path / "old")
    old = SentenceSimilarity.load(tmp_path / "old")
    assert old.item_similarity is None and old.mean_offdiagonal_intervals() is None
    assert old.peak() == (1, [])
    assert not any("[" in line for line in ses_command.describe(old))
    assert ses_command.tables(old)[0].rows[1][1] == "0.902"
    save_figure(plot_sentence_similarity(old), tmp_path / "old.png")
