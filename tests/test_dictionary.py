"""Dictionary features (SAEs, transcoders) as hook points, and Deng et al.'s ν.

The known answer: a dictionary whose encoder and decoder are the identity on one layer's
MLP neurons (GPT-2: ``mlp.hook_post`` is the GELU output LAPE reads; activation
``identity``, since GELU outputs can be negative and a ReLU would clip them) gives exactly
the neuron results of that layer: statistics, LAPE selection, deactivation perplexities
and steered logits, bit for bit.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tiny import LANGS, language_text

import mlneurons
from mlneurons import LanguageNeurons, MultilingualCorpus, lape
from mlneurons.errors import UserError
from mlneurons.methods.baselines import random_selection
from mlneurons.methods.deactivation import perplexity_matrix
from mlneurons.methods.interventions import deactivate, intervene
from mlneurons.methods.monolinguality import monolinguality, select_monolingual
from mlneurons.methods.steering import steering_intervention
from mlneurons.models.dictionary import Dictionary, load_dictionary, splice, spliced
from mlneurons.models.hooks import hooks_attached
from mlneurons.stats.activation import ActivationStats

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _corpus(n_words=400, seq_len=40, seed=0):
    return MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, n_words, seed=seed)]) for lang in LANGS},
        seq_len=seq_len,
    )


def _identity(width, hook_name):
    eye = torch.eye(width)
    zeros = torch.zeros(width)
    return Dictionary(eye, zeros, eye.clone(), zeros.clone(), hook_name, activation="identity")


def _random(d_in, d_sae, hook_name, seed=0, **kwargs):
    g = torch.Generator().manual_seed(seed)
    return Dictionary(
        torch.randn(d_in, d_sae, generator=g) / d_in**0.5,
        torch.randn(d_sae, generator=g) * 0.1,
        torch.randn(d_sae, kwargs.pop("d_out", d_in), generator=g) / d_sae**0.5,
        torch.randn(kwargs.pop("d_b_dec", d_in), generator=g) * 0.1,
        hook_name,
        **kwargs,
    )


def _clean(model):
    return (
        not hooks_attached(model)
        and not spliced(model)
        and not any(name.endswith("hook_sae_acts_post") for name in model.hook_dict)
    )


# ----------------------------------------------------------------------------- the known answer


def test_identity_dictionary_gives_exactly_the_neuron_results(gpt2_model, tmp_path):
    model, layer = gpt2_model, 1
    corpus = _corpus()
    neurons_stats = mlneurons.collect_activation_stats(model, corpus, batch_size=3, progress=False)
    dictionary = load_dictionary(_identity(48, f"blocks.{layer}.mlp.hook_post").save(tmp_path))
    with splice(model, dictionary) as points:
        assert points == [f"blocks.{layer}.mlp.hook_post.hook_sae_acts_post"]
        stats = mlneurons.collect_activation_stats(
            model, corpus, batch_size=3, progress=False, points=points
        )
        # statistics: the same counts and sums, bit for bit
        assert stats.points == points and stats.model["units"]["points"] == points
        assert torch.equal(stats.fire_counts[:, 0], neurons_stats.fire_counts[:, layer])
        assert torch.equal(stats.activation_sums[:, 0], neurons_stats.activation_sums[:, layer])
        assert torch.equal(stats.token_counts, neurons_stats.token_counts)

        # LAPE: the same selection
        one_layer = ActivationStats(
            neurons_stats.languages,
            neurons_stats.fire_counts[:, layer : layer + 1],
            neurons_stats.activation_sums[:, layer : layer + 1],
            neurons_stats.token_counts,
            neurons_stats.model,
        )
        features = lape.select(stats, top_rate=0.2)
        expected = lape.select(one_layer, top_rate=0.2)
        assert features.counts() == expected.counts() and sum(features.counts().values()) > 3
        assert all(torch.equal(features[lang], expected[lang]) for lang in LANGS)
        assert features.feature_points == points and expected.feature_points == []
        assert random_selection(features, seed=1).feature_points == points  # controls too
        saved = LanguageNeurons.load(features.save(tmp_path / "features"))
        assert saved.feature_points == points

        # the same units as MLP neurons of the model without the dictionary
        as_neurons = LanguageNeurons(
            {lang: features[lang] + torch.tensor([layer, 0]) for lang in LANGS},
            2,
            48,
            mlneurons.fingerprint(model),
        )
        feature_ppl = perplexity_matrix(
            model, features, _corpus(150, seed=3), random_control=False, progress=False
        )
        hooks = {
            mode: steering_intervention(
                features,
                stats,
                source="fr",
                target="zh",
                mode=mode,
                alpha=2.0,
                source_value=0.0,
                model=model,
            )  # fmt: skip
            for mode in ("replace", "add", "scale")
        }
        tokens = torch.tensor([[1, *range(4, 40, 3)]])
        feature_logits = {}
        for mode, mode_hooks in hooks.items():
            assert all(name == points[0] for name, _ in mode_hooks)
            with intervene(model, mode_hooks):
                feature_logits[mode] = model(tokens)
    assert _clean(model)

    neuron_ppl = perplexity_matrix(
        model, as_neurons, _corpus(150, seed=3), random_control=False, progress=False
    )
    assert neuron_ppl.baseline == feature_ppl.baseline
    assert neuron_ppl.deactivated == feature_ppl.deactivated
    assert any(
        neuron_ppl.deactivated[lang][lang] != neuron_ppl.baseline[lang] for lang in LANGS
    )  # the deactivation did something
    base = model(tokens)
    for mode, logits in feature_logits.items():
        neuron_hooks = steering_intervention(
            as_neurons, neurons_stats, source="fr", target="zh", mode=mode, alpha=2.0,
            source_value=0.0, model=model,
        )  # fmt: skip
        assert all(name == f"blocks.{layer}.mlp.hook_post" for name, _ in neuron_hooks)
        with intervene(model, neuron_hooks):
            assert torch.equal(model(tokens), logits), mode
        assert not torch.equal(logits, base), mode


def test_a_relu_identity_counts_the_same_fires_but_clips_the_sums(gpt2_model):
    """The pre/post question: at ``hook_post`` of a GELU MLP a ReLU identity fires exactly
    where the neuron does, but its sums drop the negative GELU outputs."""
    model, corpus = gpt2_model, _corpus(150)
    neurons = mlneurons.collect_activation_stats(model, corpus, progress=False)
    relu = Dictionary(**{**vars(_identity(48, "blocks.0.mlp.hook_post")), "activation": "relu"})
    with splice(model, relu) as points:
        stats = mlneurons.collect_activation_stats(model, corpus, progress=False, points=points)
    assert torch.equal(stats.fire_counts[:, 0], neurons.fire_counts[:, 0])
    assert (stats.activation_sums[:, 0] > neurons.activation_sums[:, 0]).any()


# ----------------------------------------------------------------------------- splicing


def test_splicing_a_random_dictionary_leaves_the_model_unchanged(planted_model):
    model = planted_model
    tokens = torch.tensor([[1, *range(4, 60, 5)]])
    base = model(tokens)
    dictionary = _random(26, 64, "blocks.0.hook_resid_post", activation="relu")
    with splice(model, dictionary) as points:
        assert torch.equal(model(tokens), base)
        _, cache = model.run_with_cache(tokens, names_filter=[points[0], "blocks.0.hook_out"])
        resid = cache["blocks.0.hook_out"]
        assert torch.allclose(cache[points[0]], dictionary.encode(resid), atol=1e-6)
        assert (cache[points[0]] > 0).float().mean() < 0.9  # a sparse code, not all on

        def same(acts, hook):
            return acts.clone()  # edited in form, not in value: error term keeps the output

        def zero(acts, hook):
            return torch.zeros_like(acts)  # only the error term remains

        assert torch.allclose(
            model.run_with_hooks(tokens, fwd_hooks=[(points[0], same)]), base, atol=1e-5
        )
        with model.hooks(fwd_hooks=[(points[0], zero)]):
            _, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_out")
        expected = resid - dictionary.decode(dictionary.encode(resid)) + dictionary.b_dec
        assert torch.allclose(cache["blocks.0.hook_out"], expected, atol=1e-5)
        # a hook that fails inside the with block: everything is removed all the same
        with (
            pytest.raises(RuntimeError, match="boom"),
            splice(model, _random(32, 8, "blocks.1.mlp.hook_post")),
        ):
            raise RuntimeError("boom")
        assert list(spliced(model)) == points
    assert _clean(model)
    assert torch.equal(model(tokens), base)


def test_a_transcoder_replaces_the_mlp_only_where_edited(gpt2_model):
    model = gpt2_model
    tokens = torch.tensor([[1, *range(5, 50, 4)]])
    base, cache = model.run_with_cache(tokens, names_filter="blocks.0.hook_mlp_out")
    transcoder = _random(
        32, 16, "blocks.0.ln2.hook_normalized", hook_name_out="blocks.0.hook_mlp_out",
        activation="relu",
    )  # fmt: skip
    with splice(model, transcoder) as points:
        assert torch.equal(model(tokens), base)

        def drop(acts, hook):
            out = acts.clone()
            out[..., 3] = 0
            return out

        with model.hooks(fwd_hooks=[(points[0], drop)]):
            _, edited = model.run_with_cache(
                tokens, names_filter=["blocks.0.hook_mlp_out", "blocks.0.ln2.hook_normalized"]
            )
        f = transcoder.encode(edited["blocks.0.ln2.hook_normalized"])
        assert (f[..., 3] > 0).any()
        change = edited["blocks.0.hook_mlp_out"] - cache["blocks.0.hook_mlp_out"]
        assert torch.allclose(change, -f[..., 3:4] * transcoder.W_dec[3], atol=1e-5)
    assert _clean(model)
    backwards = _random(
        32, 16, "blocks.0.hook_mlp_out", hook_name_out="blocks.0.ln2.hook_normalized"
    )
    with pytest.raises(UserError, match="comes before"):
        with splice(model, backwards):
            pass
    assert _clean(model)


def test_encoders_hand_computed():
    x = torch.tensor([[1.0, -2.0]])
    w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]])  # pre = [1, -2, 0] + b
    b = torch.tensor([0.5, 0.0, 0.1])  # pre = [1.5, -2, 0.1]
    dec, bias = torch.ones(3, 2), torch.zeros(2)
    relu = Dictionary(w, b, dec, bias, "h")
    assert relu.encode(x).tolist() == [[1.5, 0.0, pytest.approx(0.1)]]
    jump = Dictionary(
        w, b, dec, bias, "h", activation="jumprelu", threshold=torch.tensor([1.0, 0, 0.2])
    )
    assert jump.encode(x).tolist() == [[1.5, 0.0, 0.0]]
    top = Dictionary(w, b - 1.0, dec, bias, "h", activation="topk", k=2)  # pre = [0.5, -3, -0.9]
    assert top.encode(x).tolist() == [[0.5, 0.0, 0.0]]  # the second largest is negative
    shifted = Dictionary(w, b, dec, torch.tensor([1.0, 0.0]), "h", apply_b_dec_to_input=True)
    assert shifted.encode(x).tolist() == [
        [0.5, 0.0, 0.0]
    ]  # x - b_dec = [0, -2]: pre [.5, -2, -1.9]
    assert relu.decode(torch.tensor([[1.0, 2.0, 0.0]])).tolist() == [[3.0, 3.0]]


# ----------------------------------------------------------------------------- errors


def test_loading_and_splicing_errors_are_one_line(gpt2_model, tmp_path):
    model = gpt2_model
    with pytest.raises(UserError, match="no cfg.json in .*SAELens layout"):
        load_dictionary(tmp_path / "nothing")
    good = _random(32, 8, "blocks.0.hook_resid_post").save(tmp_path / "good")
    cfg = json.loads((good / "cfg.json").read_text())

    def variant(name, **changes):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "sae_weights.safetensors").write_bytes(
            (good / "sae_weights.safetensors").read_bytes()
        )
        (directory / "cfg.json").write_text(json.dumps({**cfg, **changes}))
        return directory

    with pytest.raises(UserError, match="no sae_weights.safetensors"):
        (tmp_path / "cfg-only").mkdir()
        (tmp_path / "cfg-only" / "cfg.json").write_text("{}")
        load_dictionary(tmp_path / "cfg-only")
    with pytest.raises(UserError, match=r"W_enc is \[32, 8\] but cfg.json says d_in=32, d_sae=16"):
        load_dictionary(variant("wide", d_sae=16))
    with pytest.raises(UserError, match="unknown activation function 'gelu'; supported: relu"):
        load_dictionary(variant("gelu", activation_fn="gelu"))
    with pytest.raises(UserError, match="architecture 'gated' is not supported"):
        load_dictionary(variant("gated", architecture="gated"))
    with pytest.raises(UserError, match="lacks threshold"):
        load_dictionary(variant("jump", architecture="jumprelu"))
    with pytest.raises(UserError, match="normalize_activations='layer_norm' is not supported"):
        load_dictionary(variant("norm", normalize_activations="layer_norm"))
    with pytest.raises(UserError, match="names no hook_name"):
        load_dictionary(variant("nohook", hook_name=None, metadata={}))
    old = load_dictionary(
        variant("old", hook_name=None, metadata={}, hook_point="blocks.1.hook_resid_post")
    )
    assert old.hook_name == "blocks.1.hook_resid_post" and old.apply_b_dec_to_input is False
    assert load_dictionary(good).hash and load_dictionary(good).hash == old.hash

    with pytest.raises(UserError, match=r"has 48 dims at blocks.0.hook_resid_post, but .* has 32"):
        with splice(model, _identity(48, "blocks.0.hook_resid_post")):
            pass
    with pytest.raises(UserError, match="lacks; did you mean 'blocks.0.hook_resid_post'"):
        with splice(model, _identity(32, "blocks.0.hook_resid_pots")):
            pass
    with pytest.raises(UserError, match="has a dictionary already"):
        with splice(model, _identity(32, "blocks.0.hook_resid_post")):
            with splice(model, _random(32, 4, "blocks.0.hook_resid_post")):
                pass
    assert _clean(model)
    features = LanguageNeurons(
        {"fr": [[0, 1]]},
        1,
        48,
        {
            "units": {
                "points": ["blocks.1.mlp.hook_post.hook_sae_acts_post"],
                "dictionaries": [
                    {"point": "blocks.1.mlp.hook_post.hook_sae_acts_post", "source": "d"}
                ],
            }
        },
    )
    with pytest.raises(UserError, match="features of dictionary 'd' .* splice it first"):
        deactivate(features, model=model)


# ----------------------------------------------------------------------------- ν


def test_monolinguality_hand_computed():
    # 3 languages, 1 layer, 3 units; 10 tokens each; means = sums / 10
    means = torch.tensor([[[1.0, 0.2, 0.0]], [[0.0, 0.2, 0.4]], [[0.0, 0.2, 0.5]]])
    stats = ActivationStats(
        ["en", "fr", "zh"], torch.zeros(3, 1, 3, dtype=torch.long), (means * 10).double(),
        torch.full((3,), 10),
    )  # fmt: skip
    nu = monolinguality(stats)
    # en: unit 0: 1 - (0 + 0)/2 = 1; unit 2: 0 - (0.4 + 0.5)/2 = -0.45
    # fr: unit 2: 0.4 - (0 + 0.5)/2 = 0.15; zh: unit 2: 0.5 - 0.2 = 0.3; unit 1 is 0 everywhere
    expected = torch.tensor(
        [[[1.0, 0.0, -0.45]], [[-0.5, 0.0, 0.15]], [[-0.5, 0.0, 0.3]]], dtype=torch.float64
    )
    assert torch.allclose(nu, expected)
    picked = select_monolingual(stats, top_k=1)
    assert picked["en"].tolist() == [[0, 0]] and picked["fr"].tolist() == [[0, 2]]
    assert picked["zh"].tolist() == [[0, 2]]
    assert select_monolingual(stats, top_k=None, threshold=0.2)["fr"].tolist() == []
    assert select_monolingual(stats, ["en", "fr"], top_k=None).counts() == {"en": 1, "fr": 1}
    assert picked.constants == {"method": "monolinguality", "top_k": 1, "threshold": 0.0}
    with pytest.raises(UserError, match="top_k=0"):
        select_monolingual(stats, top_k=0)


def test_nu_and_lape_find_planted_language_features(planted_model):
    """Features 7, 20, 33, 46 read the language marker dims of the planted model's
    embedding (1 on their language's tokens, 0 elsewhere); the others read noise."""
    d_model, d_sae = 26, 64
    planted = {lang: 7 + 13 * i for i, lang in enumerate(LANGS)}
    g = torch.Generator().manual_seed(0)
    w_enc = torch.zeros(d_model, d_sae)
    w_enc[9:] = torch.randn(d_model - 9, d_sae, generator=g) * 0.1
    for i, lang in enumerate(LANGS):
        w_enc[:, planted[lang]] = 0
        w_enc[i, planted[lang]] = 1.0
    dictionary = Dictionary(
        w_enc, torch.zeros(d_sae), torch.randn(d_sae, d_model, generator=g), torch.zeros(d_model),
        "blocks.0.hook_resid_pre",
    )  # fmt: skip
    with splice(planted_model, dictionary) as points:
        stats = mlneurons.collect_activation_stats(
            planted_model, _corpus(300), progress=False, points=points
        )
    nu = monolinguality(stats)
    for i, lang in enumerate(LANGS):
        assert nu[i, 0, planted[lang]] == pytest.approx(1.0)
    picked = select_monolingual(stats, top_k=1)
    assert {lang: picked[lang].tolist() for lang in LANGS} == {
        lang: [[0, planted[lang]]] for lang in LANGS
    }
    assert picked.feature_points == points
    chosen = lape.select(stats, top_rate=4 / d_sae)
    assert {lang: chosen[lang].tolist() for lang in LANGS} == {
        lang: [[0, planted[lang]]] for lang in LANGS
    }


# ----------------------------------------------------------------------------- CLI, example


def _text_dir(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for lang in LANGS:
        (folder / f"{lang}.txt").write_text(language_text(lang, 1200) + "\n")
    return folder


def _planted_dictionary(directory):
    """Features 0, 2, 4, 6 mark en, fr, zh, ja tokens (the planted model's marker dims);
    the other 28 read noise."""
    w_enc = torch.randn(26, 32, generator=torch.Generator().manual_seed(1)) * 0.1
    w_enc[:9] = 0
    for i in range(len(LANGS)):
        w_enc[:, 2 * i] = 0
        w_enc[i, 2 * i] = 1.0
    zeros = torch.zeros(32, 26)
    return Dictionary(
        w_enc, torch.zeros(32), zeros, torch.zeros(26), "blocks.0.hook_resid_pre"
    ).save(directory)


def test_cli_lape_over_dictionary_features(planted_dir, tmp_path, capsys):
    from mlneurons.interfaces.cli import main

    dictionary = _planted_dictionary(tmp_path / "sae")
    out = tmp_path / "run"
    common = ["lape", "--model", str(planted_dir), "--corpus", str(_text_dir(tmp_path))]
    argv = [*common, "--languages", ",".join(LANGS), "--tokens-per-language", "600",
            "--seq-len", "60", "--top-rate", "0.125", "--dictionary", str(dictionary), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "language-specific features" in printed
    neurons = LanguageNeurons.load(out)
    assert neurons.feature_points == ["blocks.0.hook_resid_pre.hook_sae_acts_post"]
    assert {lang: neurons[lang].tolist() for lang in LANGS} == {
        lang: [[0, 2 * i]] for i, lang in enumerate(LANGS)
    }
    assert ActivationStats.load(out).points == neurons.feature_points
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["lape"]["dictionary"] == [str(dictionary)]
    # re-selection from the saved statistics needs no dictionary (nor a model)
    assert (
        main(["lape", "--stats", str(out), "--top-rate", "0.125", "--out", str(tmp_path / "re")])
        == 0
    )
    assert LanguageNeurons.load(tmp_path / "re").feature_points == neurons.feature_points
    assert main([*common, "--dictionary", str(tmp_path / "none")]) == 2
    assert "no cfg.json" in capsys.readouterr().err
    assert main(["lape", "--stats", str(out), "--dictionary", str(dictionary)]) == 2
    assert "--dictionary" in capsys.readouterr().err


def test_dictionary_features_example(planted_dir, tmp_path):
    spec = importlib.util.spec_from_file_location("ex", EXAMPLES / "dictionary_features.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    dictionary = _planted_dictionary(tmp_path / "sae")
    lape_features, nu_features = example.main(
        ["--model", str(planted_dir), "--dictionary", str(dictionary), "--corpus",
         str(_text_dir(tmp_path)), "--languages", ",".join(LANGS), "--tokens-per-language", "600",
         "--top-rate", "0.125", "--top-k", "1"]
    )  # fmt: skip
    for i, lang in enumerate(LANGS):
        assert lape_features[lang].tolist() == [[0, 2 * i]]
        assert nu_features[lang].tolist() == [[0, 2 * i]]


# ----------------------------------------------------------------------------- Gemma 3 270M


@pytest.mark.slow
def test_splices_on_the_built_in_model(gemma):
    """On a real gated model: a random SAE in the residual stream changes no logit, and the
    identity dictionary on ``mlp.hook_post`` deactivates exactly as the neuron hooks do."""
    text = "The official language of Brazil is Portuguese, and its capital is Brasília."
    tokens = torch.tensor([gemma.tokenizer(text)["input_ids"]])
    base = gemma(tokens)
    sae = _random(640, 2560, "blocks.6.hook_resid_post", activation="relu")
    identity = _identity(2048, "blocks.11.mlp.hook_post")
    chosen = torch.tensor([[0, 5], [0, 77], [0, 1500]])
    with splice(gemma, sae, identity) as points:
        assert points == [sae.point, identity.point]
        assert torch.equal(gemma(tokens), base)
        with intervene(gemma, deactivate(chosen, points=points[1:])):
            features = gemma(tokens)
    assert _clean(gemma)
    with intervene(gemma, deactivate(chosen + torch.tensor([11, 0]))):
        assert torch.equal(gemma(tokens), features)
    assert not torch.equal(features, base)
