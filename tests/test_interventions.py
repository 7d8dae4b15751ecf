import math

import pytest
import torch
from tiny import LANGS, PLANTED, language_text

import mlneurons
from mlneurons import ActivationStats, LanguageNeurons, MultilingualCorpus
from mlneurons.evaluation.perplexity import perplexity, sequence_nll
from mlneurons.methods.deactivation import perplexity_matrix
from mlneurons.methods.interventions import activate, deactivate, intervene


def _tokens(model, lang="fr", n=20):
    return torch.tensor(
        [model.tokenizer(language_text(lang, n), add_special_tokens=False)["input_ids"]]
    )


def _cache(model, tokens, hooks=()):
    with model.hooks(fwd_hooks=list(hooks)):
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: "mlp" in n or "resid" in n)
    return cache


def _no_hooks_left(model):
    return not any(hp.fwd_hooks for hp in model.hook_dict.values())


@pytest.mark.parametrize("model_fixture", ["planted_model", "gpt2_model"])
def test_deactivate_changes_exactly_the_chosen_neurons(model_fixture, request):
    model = request.getfixturevalue(model_fixture)
    tokens = _tokens(model)
    chosen = [(0, 3), (0, 7), (1, 2)]
    clean, hooked = _cache(model, tokens), _cache(model, tokens, deactivate(chosen, model=model))
    for layer in range(model.cfg.n_layers):
        post, post_h = (
            clean[f"blocks.{layer}.mlp.hook_post"],
            hooked[f"blocks.{layer}.mlp.hook_post"],
        )
        idx = [n for (at, n) in chosen if at == layer]
        assert (post_h[..., idx] == 0).all()
        others = [i for i in range(post.shape[-1]) if i not in idx]
        if layer == 0:  # nothing upstream of the first intervention changes
            torch.testing.assert_close(post_h[..., others], post[..., others], rtol=0, atol=0)
            torch.testing.assert_close(
                hooked["blocks.0.hook_resid_mid"], clean["blocks.0.hook_resid_mid"], rtol=0, atol=0
            )
    assert _no_hooks_left(model)


def test_composition_equals_applying_both(planted_model):
    model, tokens = planted_model, _tokens(planted_model, "en")
    a, b = deactivate([(0, 3)]), activate([(1, 17)], 2.5, model=model)
    with intervene(model, a + b):
        both = model(tokens)
    with model.hooks(fwd_hooks=a), model.hooks(fwd_hooks=b):
        nested = model(tokens)
    with intervene(model, a, b):
        separate = model(tokens)
    torch.testing.assert_close(both, nested)
    torch.testing.assert_close(both, separate)
    assert not torch.allclose(both, model(tokens))


def test_activate_sets_act_fn_output_in_gated_and_plain_mlps(planted_model, gpt2_model):
    # Gated: hook_post = act_fn(gate) * up, so act_fn(gate) = v means hook_post = v * up.
    tokens = _tokens(planted_model)
    cache = _cache(
        planted_model,
        tokens,
        activate([(0, 5), (1, 9)], torch.tensor([1.5, -0.5]), model=planted_model),
    )
    up0, up1 = cache["blocks.0.mlp.in.hook_out"], cache["blocks.1.mlp.in.hook_out"]
    torch.testing.assert_close(cache["blocks.0.mlp.hook_post"][..., 5], 1.5 * up0[..., 5])
    torch.testing.assert_close(cache["blocks.1.mlp.hook_post"][..., 9], -0.5 * up1[..., 9])
    # Plain: hook_post is the act_fn output itself.
    grid = torch.zeros(2, gpt2_model.cfg.d_mlp)
    grid[1, 4] = 0.75
    cache = _cache(gpt2_model, _tokens(gpt2_model), activate([(1, 4)], grid, model=gpt2_model))
    assert (cache["blocks.1.mlp.hook_post"][..., 4] == 0.75).all()


def test_hooks_are_gone_after_an_exception(planted_model):
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(
            planted_model, deactivate([(0, 1)]), activate([(1, 2)], 1.0, model=planted_model)
        ):
            assert not _no_hooks_left(planted_model)
            raise RuntimeError("boom")
    assert _no_hooks_left(planted_model)


def test_activation_holds_during_generation(planted_model):
    model, prompt = planted_model, _tokens(planted_model, "fr", 5)
    steps = []  # (act_fn output via hook_post / up) of neuron (1, 11) at every forward step

    def record_up(act, *, hook):
        steps.append({"up": act[..., 11].clone()})

    def record_post(act, *, hook):
        steps[-1]["post"] = act[..., 11].clone()

    record = [("blocks.1.mlp.in.hook_out", record_up), ("blocks.1.mlp.hook_post", record_post)]
    with intervene(model, activate([(1, 11)], 3.0, model=model), record):
        model.generate(prompt, max_new_tokens=4, do_sample=False, verbose=False)
    assert len(steps) >= 4 and steps[1]["up"].shape[-1] == 1  # decode steps see one position
    for step in steps:  # act_fn(gate) = 3 at every position of every step
        torch.testing.assert_close(step["post"], 3.0 * step["up"])
    assert _no_hooks_left(model)


def test_bad_intervention_input(planted_model):
    with pytest.raises(ValueError, match="got shape \\(3,\\)"):
        activate([(0, 1), (1, 2)], torch.ones(3), model=planted_model)
    with pytest.raises(ValueError, match="do not fit"):
        deactivate([(5, 1)], model=planted_model)
    other = LanguageNeurons(
        {"fr": torch.tensor([[0, 1]])}, 2, 32, model={"name": "x", "hash": "abc"}
    )
    with pytest.raises(ValueError, match="selected on model 'x'"):
        deactivate(other, model=planted_model)
    with pytest.raises(ValueError, match="pick one language"):
        deactivate(
            LanguageNeurons({"a": torch.tensor([[0, 1]]), "b": torch.tensor([[0, 2]])}, 2, 32)
        )


def test_perplexity_is_exp_mean_nll(planted_model):
    model = planted_model
    corpus = MultilingualCorpus({"fr": lambda: [language_text("fr", 200)]}, seq_len=33)
    ppl = perplexity(model, corpus, batch_size=2, progress=False)["fr"]
    rows = torch.cat(list(corpus.rows("fr", model.tokenizer)))
    logits = model(rows)  # full forward with logits, independent of sequence_nll
    logp = torch.log_softmax(logits[:, :-1].double(), -1)
    nll = -logp.gather(-1, rows[:, 1:, None]).mean()
    assert ppl == pytest.approx(math.exp(nll.item()), rel=1e-5)
    assert sequence_nll(model, rows, chunk_tokens=7).sum().item() == pytest.approx(
        (nll * rows[:, 1:].numel()).item(), rel=1e-5
    )


def test_planted_deactivation_hits_its_own_language(planted_model):
    model = planted_model
    neurons = LanguageNeurons(
        {lang: torch.tensor(PLANTED[lang]) for lang in LANGS},
        2,
        32,
        model=mlneurons.fingerprint(model),
    )
    corpus = MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 300, seed=9)]) for lang in LANGS}, seq_len=50
    )
    matrix = perplexity_matrix(model, neurons, corpus, batch_size=7, progress=False)
    assert matrix.diagonal_dominance() == {lang: True for lang in LANGS}
    change = matrix.relative_change()
    for i in range(len(LANGS)):
        assert change[i, i] > 0.05
        assert change[i, i] > 10 * change[i].abs().sort().values[-2]
    assert matrix.relative_change("random_control").abs().max() < change.diagonal().min()
    # batched conditions equal one run per condition
    alone = perplexity(
        model, corpus.subset(["zh"]), interventions=deactivate(neurons["fr"]), progress=False
    )
    assert matrix.deactivated["fr"]["zh"] == pytest.approx(alone["zh"], rel=1e-5)
    base = perplexity(model, corpus.subset(["ja"]), progress=False)
    assert matrix.baseline["ja"] == pytest.approx(base["ja"], rel=1e-5)


def test_steering_switches_the_output_language(planted_model):
    from mlneurons.methods.steering import steer

    model = planted_model
    questions = [language_text("fr", 6, seed=s) for s in range(5)]
    zh_neurons = torch.tensor(PLANTED["zh"])

    def first_word_language(texts):
        return [t.split()[0][:2] if t.split() else "unknown" for t in texts]

    result = steer(
        model,
        questions,
        source="fr",
        target="zh",
        template="{question}",
        intervention=activate(zh_neurons, 20.0, model=model)
        + deactivate(torch.tensor(PLANTED["fr"])),
        identify=first_word_language,
        max_new_tokens=3,
        batch_size=2,
        progress=False,
    )
    assert result.accuracy_before == 0.0 and result.source_rate("before") == 1.0
    assert result.accuracy_after == 1.0 and result.source_rate("after") == 0.0
    assert len(result.samples) == 5 and result.samples[0]["lang_after"] == "zh"
    with pytest.raises(ValueError, match="no questions"):
        steer(model, [], source="fr", target="zh", intervention=[], progress=False)


def test_ablate_and_steer_cli_write_their_schemas(planted_dir, planted_model, tmp_path, capsys):
    import json

    from mlneurons.interfaces.cli import main

    stats = mlneurons.collect_activation_stats(
        planted_model,
        MultilingualCorpus(
            {lang: (lambda lang=lang: [language_text(lang, 300)]) for lang in LANGS}, seq_len=50
        ),
        progress=False,
    )
    stats.save(tmp_path / "n")
    neurons = LanguageNeurons(
        {lang: torch.tensor(PLANTED[lang]) for lang in LANGS}, 2, 32, model=stats.model
    )
    neurons.save(tmp_path / "n")
    # The built-in text is all <unk> for the tiny tokenizer: this checks the plumbing only.
    common = ["--neurons", str(tmp_path / "n"), "--model", str(planted_dir)]
    assert (
        main(
            [
                "ablate",
                *common,
                "--languages",
                "en,fr",
                "--tokens-per-language",
                "100",
                "--seq-len",
                "10",
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    ppl = json.loads((tmp_path / "a" / "ppl_matrix.json").read_text())
    assert set(ppl) == {
        "languages",
        "baseline",
        "deactivated",
        "random_control",
        "tokens_per_language",
        "model",
        "seed",
        "matched_control",
        "matched",
        "row_nll",
        "row_tokens",
        "uncertainty",
        "intervals",
        "config",
    }
    rows = ppl["row_tokens"]  # rows of 9 predicted tokens, at least 10: a bootstrap's least
    assert set(rows) == {"en", "fr"} and all(n == 9 for r in rows.values() for n in r)
    assert min(len(r) for r in rows.values()) >= 10
    assert ppl["uncertainty"] == {"confidence": 0.95, "samples": 1000, "seed": 0}
    assert set(ppl["intervals"]["own"]["fr"]) >= {"own", "matched", "versus_matched"}
    assert ppl["matched"]["draws"] == 3 and len(ppl["matched_control"]["en"]["fr"]) == 3
    assert ppl["seed"] == 0 and ppl["config"]["method"] == "ablate"
    assert ppl["config"]["tokens_per_language"] == 100
    assert ppl["languages"] == ["en", "fr"] and set(ppl["deactivated"]["en"]) == {"en", "fr"}
    assert (
        ppl["tokens_per_language"] == 9 * len(rows["en"])
        and (tmp_path / "a" / "ppl_matrix.png").exists()
    )
    assert "matched control (3 draws)" in capsys.readouterr().out

    compare = ["compare-methods", *common, "--languages", "en,fr", "--tokens-per-language", "100"]
    assert main([*compare, "--seq-len", "10", "--out", str(tmp_path / "c")]) == 0  # 10+ rows
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert all(
        any(line.startswith(f"{m} ") for line in lines) for m in ("lape", "lap", "lave", "rs")
    )
    methods = json.loads((tmp_path / "c" / "methods.json").read_text())
    assert methods["methods"] == ["lape", "lap", "lave", "rs"]
    assert methods["counts"]["lape"] == {"en": 2, "fr": 2} and methods["counts"]["rs"] == {
        "en": 2,
        "fr": 2,
    }
    assert (tmp_path / "c" / "methods.png").stat().st_size > 1000
    assert (tmp_path / "c" / "specificity.png").stat().st_size > 1000
    assert set(methods["intervals"]["specificity"]["lape"]) == {
        "own",
        "others",
        "score",
        "versus_first",
    }
    assert main([*compare, "--methods", "lape,lapx", "--out", str(tmp_path / "c")]) == 2
    assert (
        "--methods 'lapx' is not valid; choose from lape, lap, lap-capped, lave, rs, pv"
        in capsys.readouterr().err
    )
    no_stats = ["ablate", "--neurons", str(tmp_path / "o"), "--out", str(tmp_path)]

    assert (
        main(
            [
                "steer",
                *common,
                "--source",
                "fr",
                "--target",
                "zh",
                "--n-questions",
                "3",
                "--max-new-tokens",
                "2",
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 0
    )
    steering = json.loads((tmp_path / "s" / "steering.json").read_text())
    assert {"source", "target", "accuracy_before", "accuracy_after", "samples"} <= set(steering)
    assert set(steering["samples"][0]) == {"prompt", "before", "after", "lang_before", "lang_after"}
    assert len(steering["samples"]) == 3
    assert steering["config"]["n_questions"] == 3 and steering["config"]["scale"] == 1.0
    assert steering["config"]["mode"] == "replace"

    sweep = ["steer-sweep", *common, "--source", "fr", "--target", "zh", "--modes", "add,scale"]
    sweep += ["--alphas", "1", "--top-rates", "0.1", "--n-questions", "2", "--max-new-tokens", "2"]
    assert main([*sweep, "--out", str(tmp_path / "w")]) == 0
    printed = capsys.readouterr().out
    assert "best add: alpha 1, top_rate 0.1" in printed or "best add: none" in printed
    saved = json.loads((tmp_path / "w" / "steering_sweep.json").read_text())
    assert [(p["mode"], p["alpha"], p["top_rate"]) for p in saved["points"]] == [
        ("add", 1.0, 0.1),
        ("scale", 1.0, 0.1),
    ]
    assert (
        saved["config"]["source_value"] == 0.0 and (tmp_path / "w" / "steering_sweep.png").exists()
    )
    fallback = ["fallback", *common, "--language", "fr", "--shares", "0,1", "--n-questions", "2"]
    assert main([*fallback, "--max-new-tokens", "2", "--out", str(tmp_path / "f")]) == 0
    curve = json.loads((tmp_path / "f" / "fallback.json").read_text())
    assert [p["share"] for p in curve["points"]] == [0.0, 1.0]
    assert curve["points"][1]["n_deactivated"] == 2 and (tmp_path / "f" / "fallback.png").exists()
    assert main([*sweep[:-6], "--modes", "mult", "--out", str(tmp_path)]) == 2
    assert "--modes 'mult' is not valid" in capsys.readouterr().err

    assert main(["steer", *common, "--source", "xx", "--target", "zh", "--out", str(tmp_path)]) == 2
    assert "unknown language 'xx'" in capsys.readouterr().err
    other = LanguageNeurons({"fr": torch.tensor([[0, 1]])}, 2, 32, model={"name": "m", "hash": "0"})
    other.save(tmp_path / "o")
    assert main(no_stats) == 2
    assert "no statistics at" in capsys.readouterr().err
    foreign = ActivationStats.load(tmp_path / "n")
    foreign.model = {**foreign.model, "name": "other", "hash": "0"}
    foreign.save(tmp_path / "foreign.safetensors")
    argv = [
        "ablate",
        *common,
        "--stats",
        str(tmp_path / "foreign.safetensors"),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2  # matched controls binned on another model's statistics: refused
    assert "the statistics" in capsys.readouterr().err
    assert (
        main(
            [
                "ablate",
                "--neurons",
                str(tmp_path / "o"),
                "--model",
                str(planted_dir),
                "--control-draws",
                "0",
                "--out",
                str(tmp_path),
            ]
        )
        == 2
    )
    assert "was computed on model 'm'" in capsys.readouterr().err
