"""Tang et al.'s baselines (LAP under both readings, capped LAP, LAVE, RS with and without
its exclusion, PV from fine-tuned checkpoints), matched controls and the method comparison."""

import json
import math

import pytest
import torch
from tiny import LANGS, PLANTED, language_text, make_planted_llama
from typecheck import REFUSED

import mlneurons
from mlneurons import LanguageNeurons, MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.evaluation.perplexity import perplexity
from mlneurons.methods.baselines import (
    lap,
    lave,
    matched_control,
    parameter_variation,
    probability_bins,
    random_selection,
    reading,
    relative_weight_change,
    select_with,
)
from mlneurons.methods.deactivation import MethodComparison, compare_methods, perplexity_matrix
from mlneurons.methods.interventions import deactivate
from mlneurons.stats.activation import ActivationStats


def _stats(probs, means=None, tokens=100):
    probs = torch.as_tensor(probs, dtype=torch.float64)
    means = probs if means is None else torch.as_tensor(means, dtype=torch.float64)
    n = probs.shape[0]
    return ActivationStats(
        [f"l{i}" for i in range(n)],
        (probs * tokens).round().long(),
        (means * tokens).float(),
        torch.full((n,), tokens),
    )


def test_lap_hand_computed():
    stats = _stats([[[0.99, 0.50, 0.96, 0.95]], [[0.20, 0.97, 0.96, 0.10]]])
    neurons = lap(stats)  # strictly above 0.95
    assert neurons["l0"].tolist() == [[0, 0], [0, 2]]
    assert neurons["l1"].tolist() == [[0, 1], [0, 2]]
    assert lap(stats, threshold=0.5)["l0"].tolist() == [[0, 0], [0, 2], [0, 3]]
    assert neurons.constants == {
        "method": "lap",
        "threshold_kind": "probability",
        "threshold": 0.95,
    }
    with pytest.raises(UserError, match="threshold=1.5"):
        lap(stats, threshold=1.5)
    with pytest.raises(REFUSED, match="rank"):
        lap(stats, threshold_kind="rank")


def _twenty():
    """20 probabilities 0, 0.05, ..., 0.95 spread over two languages and ten neurons."""
    return _stats(
        [
            [[0.90, 0.10, 0.50, 0.80, 0.30, 0.00, 0.20, 0.60, 0.05, 0.40]],
            [[0.70, 0.85, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.95]],
        ]
    )


def test_lap_quantile_reading_hand_computed():
    stats = _twenty()
    # sorted, the 20 values are 0, 0.05, ..., 0.95: the 0.8 quantile is the 16th, 0.75
    neurons = lap(stats, threshold=0.8, threshold_kind="quantile")
    assert neurons.constants["threshold"] == pytest.approx(0.75)
    assert (
        neurons.constants["quantile"] == 0.8 and neurons.constants["threshold_kind"] == "quantile"
    )
    assert neurons["l0"].tolist() == [[0, 0], [0, 3]]  # 0.90, 0.80
    assert neurons["l1"].tolist() == [[0, 1], [0, 9]]  # 0.85, 0.95
    # the 0.95 quantile is the 19th value, 0.90: only 0.95 is strictly above it
    high = lap(stats, threshold_kind="quantile")
    assert high.constants["threshold"] == pytest.approx(0.9)
    assert high["l0"].tolist() == [] and high["l1"].tolist() == [[0, 9]]
    # one bar for all languages, the very τ of LAPE's filter on the same statistics
    for q in (0.5, 0.8, 0.95):
        tau = mlneurons.lape.select(stats, filter_rate=q).constants["threshold"]
        mine = lap(stats, threshold=q, threshold_kind="quantile").constants["threshold"]
        assert mine == pytest.approx(tau, rel=1e-7)  # LAPE's probabilities are float32
    # the probability reading of the same "0.8" is another selection
    assert lap(stats, threshold=0.8)["l0"].tolist() == [[0, 0]]
    assert reading(high.constants) == (
        "P(fire) > 0.9, the 0.95 quantile of all probabilities (quantile reading)"
    )
    assert reading(lap(stats).constants) == "P(fire) > 0.95 (probability reading)"


def test_lap_capped_keeps_exactly_the_highest():
    stats = _stats(
        [
            [[0.99, 0.97, 0.98, 0.97, 0.50, 0.96]],
            [[0.99, 0.97, 0.98, 0.97, 0.50, 0.96]],
        ]
    )
    capped = lap(stats, threshold=0.9, cap={"l0": 3, "l1": 0})
    # l0 has 5 above 0.9; the 3 highest: 0.99, 0.98 and the first 0.97 (tie: lower index)
    assert capped["l0"].tolist() == [[0, 0], [0, 1], [0, 2]]
    assert capped["l1"].tolist() == []
    assert capped.constants["method"] == "lap-capped"
    assert capped.constants["cap"] == {"l0": 3, "l1": 0}
    assert capped.constants["uncapped"] == {"l0": 5, "l1": 5}
    assert "capped at LAPE's count per language (before the cap: l0 5, l1 5)" in reading(
        capped.constants
    )
    loose = lap(stats, threshold=0.9, cap={"l0": 9, "l1": 2})
    assert loose["l0"].tolist() == lap(stats, threshold=0.9)["l0"].tolist()
    assert loose["l1"].tolist() == [[0, 0], [0, 2]]
    with pytest.raises(UserError, match=r"cap names no count for \['l1'\]"):
        lap(stats, cap={"l0": 1})


def test_lave_hand_computed():
    # mean activation values; neuron 4 is negative everywhere (clamped to 0, excluded)
    means = [
        [[4.0, 0.0, 1.0, 2.0, -1.0, 3.0, 0.5, 0.0, 0.0, 0.0]],
        [[0.0, 4.0, 1.0, 0.0, -1.0, 1.0, 0.5, 0.0, 0.0, 0.0]],
    ]
    probs = torch.full((2, 1, 10), 0.5)  # LAPE would see no difference at all
    stats = _stats(probs, means)
    # tau = 10th of 20 clamped values = 0: neurons 0,1,2,3,5,6 are eligible; entropies
    # n0 = n1 = n3 = 0, n5 = H(.75,.25), n2 = n6 = ln 2; the 3 lowest are kept, and a
    # language gets those whose value exceeds the bar (the 10th value, 0).
    neurons = lave(stats, top_rate=0.3, filter_rate=0.5, activation_bar_ratio=0.5)
    assert neurons["l0"].tolist() == [[0, 0], [0, 3]]
    assert neurons["l1"].tolist() == [[0, 1]]
    assert neurons.constants["method"] == "lave" and neurons.constants["kept"] == 3
    four = lave(stats, top_rate=0.4, filter_rate=0.5, activation_bar_ratio=0.5)
    assert [0, 5] in four["l0"].tolist() and [0, 5] in four["l1"].tolist()  # H(.75,.25) next
    with pytest.raises(UserError, match="at least two languages"):
        lave(stats, ["l0"])


def test_select_with_every_method(planted_model):
    corpus = MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 3000)]) for lang in LANGS}, seq_len=64
    )
    stats = mlneurons.collect_activation_stats(planted_model, corpus, batch_size=4, progress=False)
    rate = 8 / (stats.n_layers * stats.d_mlp)
    lape_neurons = select_with("lape", stats, top_rate=rate)
    lave_neurons = select_with("lave", stats, top_rate=rate)
    lap_neurons = select_with("lap", stats)
    for lang in LANGS:  # planted neurons fire on all tokens of their language only
        assert sorted(map(tuple, lape_neurons[lang].tolist())) == sorted(PLANTED[lang]), lang
        assert sorted(map(tuple, lap_neurons[lang].tolist())) == sorted(PLANTED[lang]), lang
        # LAVE ranks raw magnitudes: the layer-0 plant (mean ~4.8) is found, the layer-1
        # plant (mean ~0.65, under the value bar) is missed, as the paper's critique says
        mine = set(map(tuple, lave_neurons[lang].tolist()))
        assert PLANTED[lang][0] in mine and PLANTED[lang][1] not in mine, lang
    rs = select_with("rs", stats, top_rate=rate)
    assert rs.counts_per_layer().tolist() == lape_neurons.counts_per_layer().tolist()
    assert not (rs.masks() & lape_neurons.masks().any(0)).any()
    assert select_with("lap", stats, threshold=0.5).constants["threshold"] == 0.5
    seeded = select_with("rs", stats, top_rate=rate, seed=5)
    assert seeded.constants["seed"] == 5 and not torch.equal(seeded.masks(), rs.masks())
    capped = select_with("lap-capped", stats, top_rate=rate)
    assert capped.counts() == lape_neurons.counts() and capped.constants["method"] == "lap-capped"
    # the quantile reading's bar is LAPE's filter threshold τ on the same statistics
    quantile = select_with("lap", stats, threshold_kind="quantile")
    tau = lape_neurons.constants["threshold"]
    assert quantile.constants["threshold"] == pytest.approx(tau, rel=1e-7)
    above = stats.activation_probs.double() > tau  # the neurons above LAPE's own τ
    assert torch.equal(quantile.masks(), above)
    free = select_with("rs", stats, top_rate=rate, exclude_language_neurons=False)
    assert free.constants["exclude_language_neurons"] is False
    assert free.counts_per_layer().tolist() == lape_neurons.counts_per_layer().tolist()
    with pytest.raises(UserError, match="method='lapx' is not valid; choose from lape, lap, lap-c"):
        select_with("lapx", stats)
    with pytest.raises(UserError, match="call parameter_variation"):
        select_with("pv", stats)


def test_random_selection_same_layers_no_language_neurons():
    neurons = LanguageNeurons(
        {"a": torch.tensor([[0, 1], [0, 2], [1, 3]]), "b": torch.tensor([[1, 0]])}, 2, 8
    )
    control = random_selection(neurons, seed=3)
    assert control.counts_per_layer().tolist() == neurons.counts_per_layer().tolist()
    assert not (control.masks() & neurons.masks().any(0)).any()
    assert torch.equal(control.masks(), random_selection(neurons, seed=3).masks())
    assert not torch.equal(control.masks(), random_selection(neurons, seed=4).masks())
    assert control.constants["layer_matched"] and control.constants["exclude_language_neurons"]
    assert "this project's choices, not the paper's" in reading(control.constants)


def test_random_selection_with_and_without_the_exclusion():
    # layer 0: a has 0 and 1, so with the exclusion its draw there is exactly {2, 3}
    neurons = LanguageNeurons({"a": [[0, 0], [0, 1]], "b": [[1, 0]]}, 2, 4)
    hit = set()
    for seed in range(12):
        excluded = random_selection(neurons, seed=seed)
        assert excluded["a"].tolist() == [[0, 2], [0, 3]]
        assert excluded["b"][:, 0].tolist() == [1] and excluded["b"][0, 1] != 0
        drawn = random_selection(neurons, seed=seed, exclude_language_neurons=False)
        assert drawn.counts_per_layer().tolist() == neurons.counts_per_layer().tolist()
        assert drawn.constants["exclude_language_neurons"] is False
        hit |= {tuple(p) for p in drawn["a"].tolist()} & {(0, 0), (0, 1)}
    assert hit == {(0, 0), (0, 1)}  # without it, language neurons are drawn too
    assert "language neurons included" in reading(drawn.constants)


def _bins_by_hand(probs_layer, bins):
    """Independent bins: sort by probability (ties by index), cut into equal counts."""
    order = sorted(range(len(probs_layer)), key=lambda i: (probs_layer[i], i))
    return {neuron: rank * bins // len(order) for rank, neuron in enumerate(order)}


def test_matched_controls_fall_in_the_same_bins():
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 40, generator=generator, dtype=torch.float64).round(decimals=2)
    stats = _stats(probs)
    top = probs[0].argsort(-1, descending=True)  # l0's neurons: 3 high and 1 low per layer
    neurons = LanguageNeurons(
        {
            "l0": [
                [layer, int(n)] for layer in range(3) for n in [*top[layer, :3], top[layer, -1]]
            ],
            "l1": [[1, int(probs[1, 1].argmax())]],
        },
        3,
        40,
    )
    for seed in range(4):
        control = matched_control(neurons, stats, bins=4, seed=seed)
        assert control.constants["widened"] == {"l0": 0, "l1": 0}
        assert not (control.masks() & neurons.masks().any(0)).any()
        for i, lang in enumerate(["l0", "l1"]):
            for layer in range(3):
                by_hand = _bins_by_hand(probs[i, layer].tolist(), 4)
                mine = sorted(by_hand[n] for l_, n in neurons[lang].tolist() if l_ == layer)
                theirs = sorted(by_hand[n] for l_, n in control[lang].tolist() if l_ == layer)
                assert mine == theirs, (seed, lang, layer)
        assert torch.equal(
            control.masks(), matched_control(neurons, stats, bins=4, seed=seed).masks()
        )
    assert probability_bins(stats, "l0", bins=4)[0].tolist() == [
        _bins_by_hand(probs[0, 0].tolist(), 4)[n] for n in range(40)
    ]


def test_matched_control_widens_to_the_nearest_bin_and_says_so():
    probs = torch.linspace(0, 1, 8, dtype=torch.float64).reshape(1, 1, 8).repeat(2, 1, 1)
    stats = _stats(probs)
    # bins of 2 neurons: {0,1} {2,3} {4,5} {6,7}; l0 has 6 and 7, l1 has 5, so bin 3 has
    # no free neuron: l0 takes 4 (bin 2, the only free one there), then 2 or 3 (bin 1)
    neurons = LanguageNeurons({"l0": [[0, 6], [0, 7]], "l1": [[0, 5]]}, 1, 8)
    control = matched_control(neurons, stats, bins=4, seed=0)
    assert control.constants["widened"] == {"l0": 2, "l1": 0}
    low, high = sorted(n for _, n in control["l0"].tolist())
    assert high == 4 and low in (2, 3)
    assert control["l1"].tolist() == [[0, 4]]
    with pytest.raises(UserError, match="bins=9 must be an integer in 1..8"):
        matched_control(neurons, stats, bins=9)


def _planted(model):
    return LanguageNeurons(
        {lang: torch.tensor(PLANTED[lang]) for lang in LANGS},
        2,
        32,
        model=mlneurons.fingerprint(model),
    )


def _corpus():
    return MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 300, seed=9)]) for lang in LANGS}, seq_len=50
    )


def test_matched_controls_in_the_perplexity_matrix(planted_model):
    model, neurons, corpus = planted_model, _planted(planted_model), _corpus()
    stats = mlneurons.collect_activation_stats(model, corpus, batch_size=4, progress=False)
    matrix = perplexity_matrix(
        model, neurons, corpus, stats=stats, matched_draws=2, bins=4, batch_size=7, progress=False
    )
    assert matrix.matched["draws"] == 2 and len(matrix.matched_control["fr"]["zh"]) == 2
    # each draw equals deactivating that draw's neurons alone (the slow path)
    for draw in range(2):
        control = matched_control(neurons, stats, bins=4, seed=draw)
        alone = perplexity(
            model, corpus.subset(["zh"]), interventions=deactivate(control["fr"]), progress=False
        )
        assert matrix.matched_control["fr"]["zh"][draw] == pytest.approx(alone["zh"], rel=1e-5)
    draws = matrix.matched_draws()
    assert draws.shape == (2, 4, 4)
    assert torch.allclose(matrix.relative_change("matched_control"), draws.mean(0))
    assert matrix.relative_change("matched_control").diagonal().abs().max() < 0.05
    again = type(matrix).from_json(matrix.to_json())
    assert again.matched_control == matrix.matched_control and again.matched == matrix.matched


def test_compare_methods_equals_one_condition_at_a_time(planted_model):
    model, neurons, corpus = planted_model, _planted(planted_model), _corpus()
    control = random_selection(neurons, seed=1)
    result = compare_methods(
        model, {"planted": neurons, "rs": control}, corpus.subset(["fr", "zh"]), progress=False
    )
    assert result.methods == ["planted", "rs"] and result.counts["planted"] == {"fr": 2, "zh": 2}
    alone = perplexity(
        model, corpus.subset(["zh"]), interventions=deactivate(control["fr"]), progress=False
    )
    assert result.deactivated["rs"]["fr"]["zh"] == pytest.approx(alone["zh"], rel=1e-5)
    assert result.constants["rs"]["method"] == "rs"  # which reading ran is recorded
    assert type(result).from_json(result.to_json()).constants == result.constants
    scores = result.specificity()
    assert scores["planted"]["own"] > 0.05 and scores["planted"]["others"] < 0.005
    assert scores["planted"]["score"] > 0.95
    with pytest.raises(UserError, match="no neurons for languages"):
        compare_methods(model, {"fr only": neurons.only("fr")}, corpus, progress=False)


def test_specificity_hand_computed():
    result = MethodComparison(
        languages=["a", "b"],
        methods=["m", "flat"],
        baseline={"a": 10.0, "b": 20.0},
        deactivated={
            "m": {"a": {"a": 15.0, "b": 22.0}, "b": {"a": 11.0, "b": 40.0}},
            "flat": {"a": {"a": 10.0, "b": 20.0}, "b": {"a": 9.0, "b": 20.0}},
        },
        counts={"m": {"a": 1, "b": 1}, "flat": {"a": 1, "b": 1}},
        tokens_per_language=10,
    )
    scores = result.specificity()
    # relative: own (0.5 + 1.0) / 2, others (0.1 + 0.1) / 2; in nats: log 1.5, log 2, log 1.1
    assert scores["m"]["own"] == pytest.approx(0.75)
    assert scores["m"]["others"] == pytest.approx(0.1)
    own, others = (math.log(1.5) + math.log(2)) / 2, math.log(1.1)
    assert scores["m"]["own_nats"] == pytest.approx(own)
    assert scores["m"]["score"] == pytest.approx(own / (own + others))
    # nothing got worse (a decrease counts as 0): no score
    assert scores["flat"]["score"] is None and scores["flat"]["others"] == pytest.approx(-0.05)
    with pytest.raises(UserError, match="'x' is not in this comparison"):
        result.relative_change("x")


# ---- PV: parameter variation from fine-tuned checkpoints --------------------------------

SHARED = (0, 0)  # changed in every checkpoint: in every language's top, so in none's PV


def _tuned(directory, changes, *, seed=0):
    """A "fine-tuned" copy of the tiny model in ``directory``: every MLP weight moved by
    0.1% noise, and the neurons of ``changes`` ((layer, neuron) -> factor) scaled."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(directory)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if ".mlp." in name:
                weight.mul_(1 + 1e-3 * torch.randn(weight.shape, generator=generator))
        for (layer, neuron), factor in changes.items():
            mlp = model.model.layers[layer].mlp
            mlp.up_proj.weight[neuron] *= factor
            mlp.gate_proj.weight[neuron] *= factor
            mlp.down_proj.weight[:, neuron] *= factor
    return model


def _by_hand(base, tuned):
    """PV's score from the two Hugging Face state dicts, matrix by matrix."""
    change, norm = torch.zeros(2, 32, dtype=torch.float64), torch.zeros(2, 32, dtype=torch.float64)
    for layer in range(2):
        for name, neuron_axis in (("up_proj", 0), ("gate_proj", 0), ("down_proj", 1)):
            key = f"model.layers.{layer}.mlp.{name}.weight"
            b, t = base[key].double(), tuned[key].double()
            change[layer] += (t - b).norm(dim=1 - neuron_axis)
            norm[layer] += b.norm(dim=1 - neuron_axis)
    return change / norm


def test_pv_finds_planted_weight_changes_exactly(planted_dir, planted_model, tmp_path):
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    planted = {"en": [(0, 3), (1, 17)], "fr": [(1, 2), (0, 10)], "zh": [(1, 5), (0, 21)]}
    checkpoints = {}
    for i, (lang, chosen) in enumerate(planted.items()):
        tuned = _tuned(planted_dir, {SHARED: 3.0, **{n: 1.5 for n in chosen}}, seed=i)
        checkpoints[lang] = tmp_path / lang
        tuned.save_pretrained(checkpoints[lang])
    # 64 neurons, top 3 per language: its two plants and the shared neuron
    neurons = parameter_variation(planted_model, checkpoints, top_rate=3 / 64)
    for lang, chosen in planted.items():
        assert sorted(map(tuple, neurons[lang].tolist())) == sorted(chosen), lang
    assert neurons.constants["top_k"] == 3 and neurons.constants["shared"] == {
        "en": 1,
        "fr": 1,
        "zh": 1,
    }
    assert neurons.constants["checkpoints"]["fr"] == str(tmp_path / "fr")
    assert neurons.model == mlneurons.fingerprint(planted_model)
    # a neuron in two languages' tops belongs to neither; alone, a language keeps it
    alone = parameter_variation(planted_model, {"en": checkpoints["en"]}, top_rate=3 / 64)
    assert sorted(map(tuple, alone["en"].tolist())) == sorted([SHARED, *planted["en"]])

    # the score, against an independent computation on the Hugging Face weights
    base = AutoModelForCausalLM.from_pretrained(planted_dir).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(checkpoints["fr"]).state_dict()
    scores = relative_weight_change(planted_model, checkpoints["fr"])
    assert torch.allclose(scores, _by_hand(base, tuned), rtol=1e-6)
    assert scores[1, 2] == pytest.approx(0.5, rel=1e-2)  # weights x 1.5: change 0.5
    # the same checkpoint as a safetensors file, a .pt state dict, a dict in memory
    save_file(tuned, str(tmp_path / "fr.safetensors"))
    torch.save(tuned, tmp_path / "fr.pt")
    for form in (tmp_path / "fr.safetensors", tmp_path / "fr.pt", tuned):
        assert torch.equal(relative_weight_change(planted_model, form), scores)


def test_pv_checkpoint_errors(planted_model, tmp_path):
    from mlneurons.methods.baselines import checkpoint_paths

    wider = make_planted_llama(tmp_path / "wider", d_mlp=48)
    with pytest.raises(
        UserError,
        match=r"^checkpoint 'fr' does not match the base model: model.layers.0.mlp.up_proj.weight "
        r"has shape \(48, 26\), the base model's \(32, 26\)$",
    ):
        parameter_variation(planted_model, {"fr": wider})
    with pytest.raises(UserError, match="checkpoint 'en' has no model.layers.0.mlp.up_proj.weight"):
        relative_weight_change(planted_model, {"lm_head.weight": torch.zeros(1)}, language="en")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds none of model.safetensors"):
        relative_weight_change(planted_model, tmp_path / "empty")
    assert checkpoint_paths([f" FR ={wider}"], ["fr"]) == {"fr": wider}
    with pytest.raises(UserError, match="'fr' is not LANG=PATH"):
        checkpoint_paths(["fr"], ["fr"])
    with pytest.raises(UserError, match=r"no pv checkpoint for \['zh'\]"):
        checkpoint_paths([f"fr={wider}"], ["fr", "zh"])
    with pytest.raises(UserError, match="does not exist"):
        checkpoint_paths([f"fr={tmp_path / 'nowhere'}"], ["fr"])


def test_pv_reads_gpt2_conv1d_weights(tmp_path):
    from tiny import make_gpt2
    from transformers import AutoModelForCausalLM

    directory = make_gpt2(tmp_path / "gpt2")
    model = mlneurons.load_model(str(directory), device="cpu")
    tuned = AutoModelForCausalLM.from_pretrained(directory)
    with torch.no_grad():  # Conv1D: c_fc is [d_model, d_mlp], c_proj [d_mlp, d_model]
        tuned.transformer.h[1].mlp.c_fc.weight[:, 5] *= 2.0
        tuned.transformer.h[1].mlp.c_proj.weight[5, :] *= 2.0
    scores = relative_weight_change(model, tuned.state_dict())
    assert scores[1, 5] == pytest.approx(1.0)  # both weight slices doubled
    others = scores.clone()
    others[1, 5] = 0
    assert others.abs().max() == 0
    found = parameter_variation(model, {"en": tuned.state_dict()}, top_rate=0.01)
    assert found["en"].tolist() == [[1, 5]]


def test_compare_methods_cli_prints_which_reading_ran(planted_dir, planted_model, tmp_path, capsys):
    from mlneurons.interfaces.cli import main

    corpus = MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 600)]) for lang in LANGS}, seq_len=50
    )
    stats = mlneurons.collect_activation_stats(planted_model, corpus, progress=False)
    run = tmp_path / "n"
    stats.save(run)
    _planted(planted_model).save(run)
    for lang, chosen in (("en", [(0, 3), (1, 17)]), ("fr", [(0, 10), (1, 2)])):
        _tuned(planted_dir, {SHARED: 3.0, **{n: 1.5 for n in chosen}}).save_pretrained(
            tmp_path / lang
        )
    common = ["compare-methods", "--neurons", str(run), "--model", str(planted_dir)]
    common += ["--languages", "en,fr", "--tokens-per-language", "49", "--seq-len", "50"]
    pv = ["--pv-checkpoints", f"en={tmp_path / 'en'},fr={tmp_path / 'fr'}", "--pv-top-rate"]
    argv = [*common, "--methods", "lap,lap-capped,rs,pv", "--lap-threshold-kind", "quantile"]
    argv += ["--rs-include-language-neurons", *pv, str(3 / 64), "--out", str(tmp_path / "c")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "c" / "methods.json").read_text())
    tau = saved["constants"]["lap"]["threshold"]
    assert tau == pytest.approx(lap(stats, threshold_kind="quantile").constants["threshold"])
    assert f"  lap: P(fire) > {tau:.4g}, the 0.95 quantile of all probabilities" in printed
    assert "  lap-capped: P(fire) >" in printed and "capped at LAPE's count" in printed
    assert "  rs: random, as many per layer as LAPE, language neurons included" in printed
    assert "specificity: own / (own + others)" in printed and "not the paper's" in printed
    assert saved["counts"]["lap-capped"] == {"en": 2, "fr": 2}
    assert saved["counts"]["pv"] == {"en": 2, "fr": 2}
    assert saved["constants"]["rs"]["exclude_language_neurons"] is False
    assert saved["constants"]["pv"]["top_k"] == 3
    # PV and its checkpoints go together; a checkpoint must fit the base model
    out = ["--out", str(tmp_path / "d")]
    assert main([*common, "--methods", "lape,pv", *out]) == 2
    assert "--pv-checkpoints LANG=PATH,... and pv in --methods go together" in (
        capsys.readouterr().err
    )
    assert main([*common, "--methods", "pv", "--pv-checkpoints", f"en={tmp_path / 'en'}", *out])
    assert "no pv checkpoint for ['fr']" in capsys.readouterr().err
    wider = make_planted_llama(tmp_path / "wider", d_mlp=48)
    bad = f"en={tmp_path / 'en'},fr={wider}"
    assert main([*common, "--methods", "pv", "--pv-checkpoints", bad, *out]) == 2
    assert "checkpoint 'fr' does not match the base model" in capsys.readouterr().err
