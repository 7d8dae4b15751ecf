import json
import math

import pytest
import torch
from tiny import LANGS, PLANTED, language_text

import mlneurons
from mlneurons import LanguageNeurons, MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.interfaces.plots import plot_fallback_curve, plot_steering_sweep, save_figure
from mlneurons.methods import steering
from mlneurons.methods.steering import (
    FALLBACK_FILE,
    STEERING_MODES,
    SWEEP_FILE,
    AnswerSample,
    FallbackCurve,
    SteeringSweep,
    SweepPoint,
    answer_ids,
    answer_nll,
    fallback_curve,
    fallback_order,
    is_degenerate,
    steering_intervention,
    steering_sweep,
    steering_values,
)
from mlneurons.stats.activation import ActivationStats

TARGET = [(0, 3), (0, 7), (1, 2)]
SOURCE = [(0, 7), (1, 9)]  # (0, 7) is shared with the target
NAMES = ("mlp.hook_post", "mlp.in.hook_out")


def _tokens(model, lang="fr", n=12):
    return torch.tensor(
        [model.tokenizer(language_text(lang, n), add_special_tokens=False)["input_ids"]]
    )


def _no_hooks_left(model):
    return not any(hp.fwd_hooks for hp in model.hook_dict.values())


def _hand_stats(model, seed=0):
    """Statistics of three languages with random mean activations (some negative)."""
    g = torch.Generator().manual_seed(seed)
    n_layers, d_mlp = model.cfg.n_layers, model.cfg.d_mlp
    tokens = torch.tensor([100, 200, 50])
    sums = torch.randn(3, n_layers, d_mlp, generator=g, dtype=torch.float64) * tokens[:, None, None]
    fires = torch.randint(0, 50, (3, n_layers, d_mlp), generator=g)
    return ActivationStats(
        ["en", "fr", "zh"], fires, sums, tokens, model=mlneurons.fingerprint(model)
    )


def _hand_neurons(model):
    return LanguageNeurons(
        {"zh": torch.tensor(TARGET), "fr": torch.tensor(SOURCE), "en": torch.tensor([[1, 0]])},
        model.cfg.n_layers,
        model.cfg.d_mlp,
        model=mlneurons.fingerprint(model),
    )


def _cache(model, tokens, hooks):
    with model.hooks(fwd_hooks=list(hooks)):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith(NAMES))
    return cache


def _expected(mode, alpha, post, up, mu):
    """hook_post after steering by the stated formula on a = act_fn output."""
    if up is None:  # plain MLP: hook_post is a itself
        up = torch.ones_like(post)
    return {
        "replace": alpha * mu * up,
        "add": post + alpha * mu * up,
        "diffmean": post + alpha * mu * up,
        "scale": alpha * post,
    }[mode]


@pytest.mark.parametrize("mode", STEERING_MODES)
@pytest.mark.parametrize("model_fixture", ["planted_model", "gpt2_model"])
def test_each_mode_changes_exactly_the_chosen_neurons(mode, model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    stats, neurons, tokens = _hand_stats(model), _hand_neurons(model), _tokens(model)
    gated = bool(model.cfg.gated_mlp)
    alpha = 1.5
    hooks = steering_intervention(
        neurons, stats, source="fr", target="zh", mode=mode, alpha=alpha, model=model
    )
    mu = steering_values(stats, "zh", mode)
    hooked = _cache(model, tokens, hooks)
    for layer in range(model.cfg.n_layers):
        # the reference run carries the intervention of the layers before: same input here
        earlier = [(n, fn) for n, fn in hooks if int(n.split(".")[1]) < layer]
        ref = _cache(model, tokens, earlier)
        post, post_h = ref[f"blocks.{layer}.mlp.hook_post"], hooked[f"blocks.{layer}.mlp.hook_post"]
        up = ref[f"blocks.{layer}.mlp.in.hook_out"] if gated else None
        idx = [n for at, n in TARGET if at == layer]
        want = _expected(
            mode, alpha, post[..., idx], None if up is None else up[..., idx], mu[layer, idx]
        )
        torch.testing.assert_close(post_h[..., idx], want)
        others = [i for i in range(post.shape[-1]) if i not in idx]
        torch.testing.assert_close(post_h[..., others], post[..., others], rtol=0, atol=0)
        assert not torch.equal(post_h[..., idx], post[..., idx])
    assert _no_hooks_left(model)


@pytest.mark.parametrize("model_fixture", ["planted_model", "gpt2_model"])
def test_source_value_sets_the_source_only_neurons(model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    stats, neurons, tokens = _hand_stats(model), _hand_neurons(model), _tokens(model)
    mu = stats.mean_activation("zh")
    for value in (0.0, 0.5):
        hooks = steering_intervention(
            neurons, stats, source="fr", target="zh", mode="replace", source_value=value,
            model=model,
        )  # fmt: skip
        cache = _cache(model, tokens, hooks)
        ones = torch.ones_like(cache["blocks.0.mlp.hook_post"])
        gated = model.cfg.gated_mlp
        up0, up1 = (cache[f"blocks.{i}.mlp.in.hook_out"] if gated else ones for i in (0, 1))
        torch.testing.assert_close(cache["blocks.1.mlp.hook_post"][..., 9], value * up1[..., 9])
        # (0, 7) is shared with the target: it keeps the target's value
        torch.testing.assert_close(cache["blocks.0.mlp.hook_post"][..., 7], mu[0, 7] * up0[..., 7])


def test_steering_values_and_bad_input(planted_model):
    stats = _hand_stats(planted_model)
    means = stats.mean_activations
    torch.testing.assert_close(
        steering_values(stats, "zh", "diffmean"), means[2] - (means[0] + means[1]) / 2
    )
    torch.testing.assert_close(steering_values(stats, "ZH", "add"), means[2])
    neurons = _hand_neurons(planted_model)
    with pytest.raises(UserError, match="'bogus'.*replace, add, diffmean, scale"):
        steering_intervention(
            neurons, stats, source="fr", target="zh", mode="bogus", model=planted_model
        )
    with pytest.raises(UserError, match="unknown language 'xx'"):
        steering_intervention(neurons, stats, source="fr", target="xx", model=planted_model)


def test_answer_nll_is_the_hand_computed_log_softmax(planted_model):
    model = planted_model
    prompts = ["fr1 fr2 fr3", "zh4", "en1 en2"]
    answers = ["fr5 fr6", "zh1 zh2 zh3 zh9", ""]
    nll, counts = answer_nll(model, prompts, answers, batch_size=2)
    assert counts.tolist() == [2, 4, 0] and nll[2] == 0
    for k in range(2):
        prompt = model.tokenizer(prompts[k])["input_ids"]
        ids = prompt + answer_ids(model.tokenizer, answers[k])
        logp = torch.log_softmax(model(torch.tensor([ids]))[0].double(), -1)
        hand = -sum(logp[pos - 1, ids[pos]] for pos in range(len(prompt), len(ids)))
        assert nll[k].item() == pytest.approx(hand.item(), rel=1e-5)


def test_is_degenerate():
    assert is_degenerate("", [])
    assert is_degenerate("  1, 2 ...", [5, 6, 7])
    assert is_degenerate("la la la la", [1, 1, 1, 1])
    assert is_degenerate("a b a c", [1, 2, 1, 3])  # half of 4 tokens
    assert not is_degenerate("a b a", [1, 2, 1])  # fewer than 4 tokens
    assert not is_degenerate("Paris is in France", [1, 2, 3, 4])


@pytest.fixture(scope="module")
def planted_stats(planted_model):
    corpus = MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 300)]) for lang in LANGS}, seq_len=50
    )
    return mlneurons.collect_activation_stats(planted_model, corpus, progress=False)


def _first_word_language(texts):
    return [t.split()[0][:2] if t.split() else "unknown" for t in texts]


def test_sweep_measures_every_setting(planted_model, planted_stats, monkeypatch, tmp_path):
    model = planted_model
    calls = []
    generate = steering.generate_answers
    monkeypatch.setattr(
        steering, "generate_answers", lambda *a, **k: calls.append(1) or generate(*a, **k)
    )
    questions = [language_text("fr", 6, seed=s) for s in range(4)]
    sweep = steering_sweep(
        model,
        questions,
        stats=planted_stats,
        source="fr",
        target="zh",
        alphas={"replace": [20.0], "add": [20.0], "diffmean": [20.0], "scale": [1.0, 50.0]},
        top_rates=(0.125, 0.0625),
        source_value=0.0,
        template="{question}",
        max_new_tokens=3,
        batch_size=3,
        identify=_first_word_language,
        n_samples=2,
        progress=False,
    )
    assert len(sweep.points) == 2 * 5 and len(calls) == 1 + 10  # unsteered answers once
    assert sweep.baseline.target_rate == 0 and sweep.baseline.source_rate == 1
    assert sweep.baseline.mode is None and sweep.baseline.seconds > 0
    by = {(p.mode, p.alpha, p.top_rate): p for p in sweep.points}
    # LAPE at 12.5% of 64 neurons keeps the 8 planted neurons: 2 per language
    assert by["replace", 20.0, 0.125].n_neurons == 2
    assert by["replace", 20.0, 0.125].n_source_neurons == 2
    assert by["replace", 20.0, 0.125].target_rate == 1.0
    assert by["add", 20.0, 0.125].target_rate == 1.0
    # planted zh neurons are exactly 0 on French tokens: scaling them changes nothing
    assert by["scale", 50.0, 0.125].target_rate == 0.0
    # ... and with both fr neurons deactivated the model stops: empty answers, no fluency
    assert by["scale", 50.0, 0.125].empty_rate == 1.0
    assert by["scale", 50.0, 0.125].fluency_ppl is None
    for p in sweep.points:
        assert len(p.samples) == 2 and 0 <= p.degenerate_rate <= 1 and p.seconds > 0
        assert p.empty_rate == 1.0 or (p.fluency_ppl > 1 and p.answer_tokens > 0)
        assert isinstance(p.samples[0], AnswerSample)
    best = sweep.best("replace")
    assert best.mode == "replace" and best.target_rate == 1.0
    loaded = SteeringSweep.load(sweep.save(tmp_path))
    assert loaded.points == sweep.points and loaded.baseline == sweep.baseline
    saved = json.loads((tmp_path / SWEEP_FILE).read_text())  # earlier files' keys first
    assert list(saved["baseline"]) == [
        "target_rate",
        "source_rate",
        "degenerate_rate",
        "empty_rate",
        "fluency_ppl",
        "answer_tokens",
        "samples",
        "seconds",
        "counts",
        "labels",
        "nll",
        "tokens",
        "intervals",
    ]
    # raw counts and per-question outcomes agree with the rates and the fluency
    for p in [sweep.baseline, *sweep.points]:
        n = p.counts["n"]
        assert n == len(p.labels) == len(p.nll) == len(p.tokens) == 4
        assert p.counts["target"] == p.labels.count("zh") == round(p.target_rate * n)
        assert p.counts["source"] == p.labels.count("fr") == round(p.source_rate * n)
        assert (
            p.counts["degenerate"] == p.labels.count("degenerate") == round(p.degenerate_rate * n)
        )
        assert sum(p.tokens) == p.answer_tokens
        if p.answer_tokens:
            assert math.isclose(math.exp(sum(p.nll) / sum(p.tokens)), p.fluency_ppl)
    # unsteered 0/4 in zh, replace 4/4: four wrong -> right, exact McNemar p = 2 / 2^4
    test = sweep.test(by["replace", 20.0, 0.125])
    assert (test.b, test.c, test.p_value) == (0, 4, 0.125) and not test.significant()
    assert sweep.settings["uncertainty"] == {"confidence": 0.95, "samples": 1000, "seed": 0}
    assert list(saved["points"][0])[:5] == [
        "mode",
        "alpha",
        "top_rate",
        "n_neurons",
        "n_source_neurons",
    ]
    assert set(saved["points"][0]["samples"][0]) == {"prompt", "answer", "lang", "degenerate"}
    assert save_figure(plot_steering_sweep(sweep), tmp_path / "sweep.png").stat().st_size > 0
    assert "unsteered" in sweep.summary()
    assert _no_hooks_left(model)


def _point(alpha=None, target=0.0, ppl=None, degenerate=0.0):
    setting = {} if alpha is None else {"mode": "add", "alpha": alpha, "top_rate": 0.01}
    return SweepPoint(
        **setting,
        target_rate=target,
        source_rate=0.0,
        degenerate_rate=degenerate,
        empty_rate=0.0,
        fluency_ppl=ppl,
        answer_tokens=0,
    )


def test_best_skips_degenerate_and_breaks_ties_by_fluency():
    sweep = SteeringSweep(
        "fr",
        "zh",
        ["fr", "zh"],
        _point(),
        [_point(1, 0.5, 10.0), _point(2, 0.8, 30.0), _point(3, 0.8, 20.0), _point(4, 1.0, 5, 0.6)],
    )
    assert sweep.best("add").alpha == 3
    assert sweep.best("add", max_degenerate=1.0).alpha == 4
    assert sweep.best("scale") is None
    with pytest.raises(UserError, match="valid modes"):
        sweep.best("multiply")


def test_sweep_refuses_bad_input_before_generating(planted_model, planted_stats, monkeypatch):
    monkeypatch.setattr(steering, "generate_answers", lambda *a, **k: pytest.fail("generated"))
    common = dict(stats=planted_stats, source="fr", target="zh", progress=False)
    with pytest.raises(UserError, match="'boost'.*valid modes: replace, add, diffmean, scale"):
        steering_sweep(planted_model, ["fr1"], modes=["add", "boost"], **common)
    with pytest.raises(UserError, match="top_rate=2"):
        steering_sweep(planted_model, ["fr1"], top_rates=[2], **common)
    with pytest.raises(UserError, match="not swept"):
        steering_sweep(planted_model, ["fr1"], modes=["add"], alphas={"scale": [2.0]}, **common)
    with pytest.raises(UserError, match="no questions"):
        steering_sweep(planted_model, [], **common)


def test_hooks_are_removed_when_generation_fails(planted_model, planted_stats, monkeypatch):
    generate, calls = steering.generate_answers, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first steered generation
            assert not _no_hooks_left(planted_model)
            raise RuntimeError("boom")
        return generate(*args, **kwargs)

    monkeypatch.setattr(steering, "generate_answers", failing)
    with pytest.raises(RuntimeError, match="boom"):
        steering_sweep(
            planted_model,
            ["fr1 fr2"],
            stats=planted_stats,
            source="fr",
            target="zh",
            modes=["add"],
            alphas=[1.0],
            top_rates=[0.125],
            max_new_tokens=2,
            identify=_first_word_language,
            progress=False,
        )
    assert _no_hooks_left(planted_model)


def test_fallback_curve(planted_model, planted_stats, tmp_path):
    model = planted_model
    neurons = LanguageNeurons(
        {lang: torch.tensor(PLANTED[lang]) for lang in LANGS}, 2, 32, model=planted_stats.model
    )
    questions = [language_text("fr", 6, seed=s) for s in range(4)]
    curve = fallback_curve(
        model,
        questions,
        neurons=neurons,
        stats=planted_stats,
        language="fr",
        shares=(0.0, 0.5, 1.0),
        template="{question}",
        max_new_tokens=3,
        identify=_first_word_language,
        progress=False,
    )
    assert [p.n_deactivated for p in curve.points] == [0, 1, 2]
    assert curve.points[0].distribution["fr"] == 1.0
    assert curve.points[-1].distribution["fr"] < 1.0
    for p in curve.points:
        assert math.isclose(sum(p.distribution.values()), 1.0)
        assert set(p.distribution) == set(curve.categories)
    assert curve.categories[0] == "fr" and curve.categories[-2:] == ["unknown", "degenerate"]
    assert FallbackCurve.load(curve.save(tmp_path)).points == curve.points
    saved = json.loads((tmp_path / FALLBACK_FILE).read_text())  # earlier files' keys first
    assert list(saved["points"][0]) == [
        "share",
        "n_deactivated",
        "degenerate_rate",
        "samples",
        "seconds",
        "distribution",
        "counts",
        "labels",
        "intervals",
    ]
    for p in curve.points:  # the raw counts behind each share
        assert sum(p.counts.values()) == len(p.labels) == 4
        assert all(p.counts[c] / 4 == p.distribution[c] for c in curve.categories)
    assert curve.test(curve.points[-1]).b == 4 - curve.points[-1].counts["fr"]
    empty = LanguageNeurons({"fr": [], "zh": [[0, 1]]}, 2, 32, model=planted_stats.model)
    with pytest.warns(UserWarning, match="'fr' has no neurons to deactivate"):
        flat = fallback_curve(
            model, questions[:1], neurons=empty, stats=planted_stats, language="fr", progress=False
        )
    assert {p.n_deactivated for p in flat.points} == {0}
    assert save_figure(plot_fallback_curve(curve), tmp_path / "fallback.png").stat().st_size > 0
    assert _no_hooks_left(model)
    # orders: by firing probability on fr; random is a seeded permutation
    probs = planted_stats.activation_probs[planted_stats.index("fr")]
    ranked = fallback_order(neurons, planted_stats, "fr", order="probability")
    values = [float(probs[layer, n]) for layer, n in ranked.tolist()]
    assert values == sorted(values, reverse=True)
    shuffled = fallback_order(neurons, planted_stats, "fr", order="random", seed=1)
    assert sorted(shuffled.tolist()) == sorted(neurons["fr"].tolist())
    assert torch.equal(
        shuffled, fallback_order(neurons, planted_stats, "fr", order="random", seed=1)
    )
    with pytest.raises(UserError, match="valid orders: lape, probability, random"):
        fallback_order(neurons, planted_stats, "fr", order="best")
