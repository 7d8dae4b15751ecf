import pytest
import torch
from tiny import bos_ids, language_text

from mlneurons import MultilingualCorpus
from mlneurons.methods.interventions import intervene
from mlneurons.methods.lrp2 import LanguageVectors, language_vectors, projection
from mlneurons.models.hooks import hooks_attached


def _corpus():
    docs = {
        lang: [language_text(lang, n, seed=n) for n in (3, 7, 5, 9, 4)] for lang in ("en", "fr")
    }
    return MultilingualCorpus({lang: (lambda d=d: d) for lang, d in docs.items()}), docs


def test_vectors_equal_independent_mean_from_run_with_cache(planted_model, tmp_path):
    model = planted_model
    corpus, docs = _corpus()
    vectors = language_vectors(model, corpus, batch_size=2, progress=False)
    assert vectors.sentences == [5, 5]
    for li, lang in enumerate(("en", "fr")):
        pooled = []
        for doc in docs[lang]:  # one unpadded sentence at a time, BOS excluded from the mean
            ids = bos_ids(model, doc)
            _, cache = model.run_with_cache(
                ids, names_filter=lambda n: n.endswith("hook_resid_post")
            )
            pooled.append(
                torch.stack(
                    [cache[f"blocks.{layer}.hook_resid_post"][0, 1:].mean(0) for layer in range(2)]
                )
            )
        torch.testing.assert_close(
            vectors.vectors[li], torch.stack(pooled).mean(0), rtol=1e-5, atol=1e-5
        )
    vectors.save(tmp_path)
    back = LanguageVectors.load(tmp_path)
    assert back.languages == ["en", "fr"] and torch.equal(back.vectors, vectors.vectors)


def test_projection_adds_exactly_the_vector_differences(planted_model):
    model = planted_model
    torch.manual_seed(0)
    vectors = LanguageVectors(["en", "fr"], torch.randn(2, 2, model.cfg.d_model), [1, 1])
    tokens = bos_ids(model, language_text("fr", 6))
    names = lambda n: n.endswith("hook_resid_post") or n.endswith("hook_resid_pre")  # noqa: E731
    _, clean = model.run_with_cache(tokens, names_filter=names)
    with intervene(model, projection(vectors, "fr", lirp_layer=0, lsrp_layer=1)):
        _, hooked = model.run_with_cache(tokens, names_filter=names)
    lirp = vectors["en"][0] - vectors["fr"][0]
    torch.testing.assert_close(
        hooked["blocks.0.hook_resid_post"], clean["blocks.0.hook_resid_post"] + lirp
    )
    # block 1 sees the shifted residual; LSRP then adds v_fr^1 - v_en^1 to its output
    with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda a, *, hook: a + lirp)]):
        _, shifted = model.run_with_cache(tokens, names_filter=names)
    lsrp = vectors["fr"][1] - vectors["en"][1]
    torch.testing.assert_close(
        hooked["blocks.1.hook_resid_post"], shifted["blocks.1.hook_resid_post"] + lsrp
    )


def test_projecting_english_onto_itself_changes_nothing(planted_model):
    model = planted_model
    vectors = LanguageVectors(["en", "fr"], torch.randn(2, 2, model.cfg.d_model), [1, 1])
    tokens = bos_ids(model, language_text("en", 6))
    with intervene(model, projection(vectors, "en", lirp_layer=0, lsrp_layer=1)):
        hooked = model(tokens)
    torch.testing.assert_close(hooked, model(tokens), rtol=0, atol=0)


def test_bad_layers_are_rejected(planted_model):
    vectors = LanguageVectors(
        ["en", "fr"], torch.zeros(2, 2, 8), [1, 1], model={"name": "x", "hash": "1"}
    )
    with pytest.raises(ValueError, match="lirp_layer=1 is not below lsrp_layer=1"):
        projection(vectors, "fr", lirp_layer=1, lsrp_layer=1)
    with pytest.raises(ValueError, match="lsrp_layer=2 is out of range"):
        projection(vectors, "fr", lirp_layer=0, lsrp_layer=2)
    with pytest.raises(ValueError, match="no language vector for 'zh'"):
        projection(vectors, "zh", lirp_layer=0, lsrp_layer=1)
    with pytest.raises(ValueError, match="computed on model 'x'"):
        projection(vectors, "fr", lirp_layer=0, lsrp_layer=1, model=planted_model)


def test_evaluate_lrp2_selects_on_dev_and_reports_on_test(planted_model, tmp_path):
    from tiny import tiny_facts

    from mlneurons.methods.lrp2 import LRP2Result, evaluate_lrp2
    from mlneurons.methods.probing import probe

    model, facts = planted_model, tiny_facts()
    texts = {"en": [language_text("fr", 8), language_text("en", 8)], "de": [language_text("zh", 8)]}
    vectors = language_vectors(
        model, MultilingualCorpus({k: (lambda v=v: v) for k, v in texts.items()}), progress=False
    )
    result = evaluate_lrp2(model, facts, vectors, layers=[0, 1], k=3, progress=False)
    assert result.languages == ["de"] and result.pivot == "en"
    assert result.grid["de"][1][0] is None and result.grid["de"][0][1] is not None
    assert result.selected["de"] == [0, 1]
    dev, test = facts.split(0.5, seed=0)
    hooks = projection(vectors, "de", lirp_layer=0, lsrp_layer=1)

    def micro(part, interventions=()):
        """German micro P@1, probed independently of evaluate_lrp2's shared grid."""
        run = probe(model, part.subset(["de"]), interventions=interventions, progress=False)
        return run.p_at_1()["de"]["micro"]

    assert result.test_p_at_1["de"] == {"before": micro(test), "after": micro(test, hooks)}
    assert result.grid["de"][0][1] == micro(dev, hooks)
    result.save(tmp_path)
    assert LRP2Result.load(tmp_path) == result


def test_lrp2_cli(planted_dir, tmp_path, capsys):
    import json

    from tiny import tiny_facts

    from mlneurons.interfaces.cli import main

    tiny_facts().to_mlama(tmp_path / "mlama")
    args = [
        "lrp2",
        "--model",
        str(planted_dir),
        "--facts",
        f"mlama:{tmp_path / 'mlama'}",
        "--layers",
        "0,1",
        "--k",
        "3",
        "--sentences",
        "4",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    data = json.loads((tmp_path / "o" / "lrp2.json").read_text())
    assert {
        "languages",
        "pivot",
        "grid",
        "selected",
        "test_p_at_1",
        "trans",
        "neuron_overlap",
        "model",
    } <= set(data)
    assert (tmp_path / "o" / "lrp2_grid_de.png").exists()
    assert main([*args[:-2], "--pivot", "xx", "--out", str(tmp_path)]) == 2
    assert "pivot 'xx'" in capsys.readouterr().err


def test_evaluate_lrp2_grid_keeps_every_pair_and_selects_the_dev_best(tmp_path):
    from tiny import make_planted_llama, tiny_facts

    import mlneurons
    from mlneurons.methods.lrp2 import evaluate_lrp2

    model = mlneurons.load_model(str(make_planted_llama(tmp_path, n_layers=3)), device="cpu")
    torch.manual_seed(0)
    vectors = LanguageVectors(
        ["en", "de"],
        3 * torch.randn(2, 3, model.cfg.d_model),
        [1, 1],
        model=mlneurons.fingerprint(model),
    )
    result = evaluate_lrp2(
        model, tiny_facts(), vectors, layers=[0, 1, 2], k=3, dev_fraction=0.67, progress=False
    )
    grid = result.grid["de"]
    pairs = [(a, b) for a in range(3) for b in range(3) if a < b]
    assert len({grid[a][b] for a, b in pairs}) > 1  # the choice is not a tie
    assert all(grid[a][b] is not None for a, b in pairs)
    assert all(grid[a][b] is None for a in range(3) for b in range(3) if a >= b)
    best = max(grid[a][b] for a, b in pairs)
    first_best = next((a, b) for a, b in pairs if grid[a][b] == best)
    assert result.selected["de"] == list(first_best) != [0, 1]  # not merely the first pair
    # the per-fact data behind every number: the grid, test P@1 and Trans recomputed from it
    for key, correct in result.dev_correct["de"].items():
        i, j = map(int, key.split(","))
        assert sum(correct) / len(correct) == pytest.approx(grid[i][j])
    rows, trans = result.outcomes["de"], result.trans_intervals()["de"]
    for side in ("before", "after"):
        assert sum(r[side] for r in rows) / len(rows) == result.test_p_at_1["de"][side]
        expected = trans[side].value if side in trans else 0.0  # no correct fact: 0 by convention
        assert expected == pytest.approx(result.trans["de"][side])
    runner_up = result.runner_up["de"]
    ranked = sorted(pairs, key=lambda ab: (-grid[ab[0]][ab[1]], ab))
    assert runner_up["pair"] == list(ranked[1])
    assert runner_up["distinguishable"] == (runner_up["test"]["p_value"] < 0.05)
    assert result.settings["uncertainty"] == {"confidence": 0.95, "samples": 1000, "seed": 0}


def test_projection_holds_during_generation(planted_model):
    model = planted_model
    vectors = LanguageVectors(["en", "fr"], torch.randn(2, 2, model.cfg.d_model), [1, 1])
    prompt = bos_ids(model, language_text("fr", 4))
    lirp = vectors["en"][0] - vectors["fr"][0]
    seen = []

    def before(act, *, hook):
        seen.append(act.clone())

    def after(act, *, hook):
        torch.testing.assert_close(act, seen[-1] + lirp)  # every step, every position
        seen.append("checked")

    with intervene(
        model,
        [("blocks.0.hook_resid_post", before)],
        projection(vectors, "fr", lirp_layer=0, lsrp_layer=1),
        [("blocks.0.hook_resid_post", after)],
    ):
        model.generate(prompt, max_new_tokens=3, do_sample=False, verbose=False)
    assert seen.count("checked") >= 3


SENTENCES = ["fr1 fr2 fr5", "fr1 fr2 zh5", "fr1 fr2 en4 en6", "fr1 fr2 ja5 ja3 ja1", "fr1 fr2 de3"]


@pytest.fixture(scope="module", params=["llama", "gpt2", "bloom"])
def deep_model(request, tmp_path_factory):
    """A 5-block random model whose attention is live (the planted one's is zeroed)."""
    import tiny

    import mlneurons

    directory = tmp_path_factory.mktemp(request.param)
    makers = {"llama": tiny.make_random_llama, "gpt2": tiny.make_gpt2, "bloom": tiny.make_bloom}
    makers[request.param](directory, n_layers=5)
    return mlneurons.load_model(str(directory), device="cpu")


def test_shared_grid_equals_probing_under_projection_hooks(deep_model):
    from mlneurons.methods.lrp2 import projection_grid_scores
    from mlneurons.methods.probing.causal import candidate_scores

    model = deep_model
    torch.manual_seed(1)
    vectors = LanguageVectors(["en", "fr"], torch.randn(2, 5, model.cfg.d_model), [1, 1])
    pairs = [(0, 1), (0, 3), (0, 4), (1, 2), (2, 4), (3, 4)]
    shared = projection_grid_scores(model, SENTENCES, vectors, "fr", pairs, batch_size=2)
    assert set(shared) == set(pairs)
    plain = candidate_scores(model, SENTENCES, batch_size=2)
    for i, j in pairs:
        with intervene(model, projection(vectors, "fr", lirp_layer=i, lsrp_layer=j)):
            naive = candidate_scores(model, SENTENCES, batch_size=2)
        torch.testing.assert_close(shared[(i, j)], naive, rtol=1e-5, atol=1e-5)
        assert (naive - plain).abs().max() > 1e-2  # the projection matters here
    assert (shared[(0, 1)] - shared[(0, 4)]).abs().max() > 1e-2  # pairs differ
    assert not hooks_attached(model)
    with (
        pytest.raises(ValueError, match="hooks are attached"),
        intervene(model, projection(vectors, "fr", lirp_layer=0, lsrp_layer=1)),
    ):
        projection_grid_scores(model, SENTENCES, vectors, "fr", pairs)
    with pytest.raises(ValueError, match="pairs is empty"):
        projection_grid_scores(model, SENTENCES, vectors, "fr", [])
    shallow = LanguageVectors(["en", "fr"], vectors.vectors[:, :3], [1, 1])
    with pytest.raises(ValueError, match="vectors have 3 layers, the model 5"):
        projection_grid_scores(model, SENTENCES, shallow, "fr", [(0, 1)])


@torch.inference_mode()
def test_block_replay_leaves_no_hooks_or_overrides_even_on_error(deep_model):
    from mlneurons.models.hooks import unwrapped
    from mlneurons.models.replay import hf_blocks, recording

    model = deep_model
    blocks, _ = hf_blocks(model)
    hooks_before = [(dict(b._forward_pre_hooks), dict(b._forward_hooks)) for b in blocks]
    own_forward = blocks[4].forward  # an instance-level forward (as accelerate sets) survives
    blocks[4].forward = own_forward
    ids = torch.tensor([[1, 5, 6, 7]])
    with pytest.raises(RuntimeError, match="boom"), unwrapped(model):
        with recording(blocks, snapshot=[1], skip_after=2) as record:
            model.original_model.base_model(input_ids=ids, use_cache=True)
            raise RuntimeError("boom")
    assert sorted(record.calls) == [0, 1, 2, 3, 4] and sorted(record.caches) == [1]
    assert torch.equal(record.outputs[4], record.outputs[2])  # blocks 3, 4 were skipped
    assert [(dict(b._forward_pre_hooks), dict(b._forward_hooks)) for b in blocks] == hooks_before
    assert not any("forward" in block.__dict__ for block in blocks[:4])
    assert blocks[4].__dict__["forward"] is own_forward
    del blocks[4].forward
    # a replay from block 1's output with block 1's cache reproduces a full pass
    _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))
    with unwrapped(model), recording(blocks, snapshot=[1]) as record:
        model.original_model.base_model(input_ids=ids, use_cache=True)
    final, kept, _ = record.replay(record.outputs[1], 2, 4, record.caches[1], keep=[3])
    torch.testing.assert_close(final, cache["blocks.4.hook_resid_post"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kept[3], cache["blocks.3.hook_resid_post"], rtol=1e-5, atol=1e-5)


def test_probe_projection_grid_reuse_matches_naive(planted_model):
    from tiny import tiny_facts

    from mlneurons.methods.lrp2 import probe_projection_grid

    torch.manual_seed(2)
    vectors = LanguageVectors(
        ["en", "de"], 3 * torch.randn(2, 2, planted_model.cfg.d_model), [1, 1]
    )
    facts = tiny_facts().subset(["de"])
    runs = {
        reuse: probe_projection_grid(
            planted_model, facts, vectors, "de", [(0, 1)], reuse=reuse, progress=False
        )
        for reuse in (True, False)
    }
    fast, slow = runs[True][(0, 1)].predictions, runs[False][(0, 1)].predictions

    def outcome(rows):
        return [{k: v for k, v in row.items() if k != "scores"} for row in rows]

    assert outcome(fast) == outcome(slow)
    for a, b in zip(fast, slow):  # the kept scores (4 decimals) agree up to the rounding
        assert a["scores"] == pytest.approx(b["scores"], abs=2e-4)
    with pytest.raises(ValueError, match="LSRP must come after LIRP"):
        probe_projection_grid(planted_model, facts, vectors, "de", [(1, 0)], progress=False)
