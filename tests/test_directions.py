"""Residual-stream language directions: known answers on planted data, LDA against closed
forms, the steering hook against adding the vector by hand, and the comparison's scores."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from tiny import LANGS, language_text

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.methods import directions as dirs

AXIS = 3


def _planted(d: int = 12, n: int = 1500, shift: float = 3.0, seed: int = 0, scales=None):
    """Two Gaussian clouds whose means differ by ``shift`` along axis ``AXIS`` only."""
    g = torch.Generator().manual_seed(seed)
    sd = torch.ones(d) if scales is None else torch.as_tensor(scales, dtype=torch.float64)
    base = torch.randn(d, generator=g, dtype=torch.float64) * 5
    source = base + torch.randn(n, d, generator=g, dtype=torch.float64) * sd
    target = base + torch.randn(n, d, generator=g, dtype=torch.float64) * sd
    target[:, AXIS] += shift
    return source, target


@pytest.mark.parametrize("method", dirs.DIRECTION_METHODS)
def test_every_direction_recovers_the_planted_axis(method):
    source, target = _planted()
    unit = dirs.direction(method, source, target)
    assert math.isclose(float(unit.norm()), 1.0, rel_tol=1e-9)
    assert float(unit[AXIS]) > 0.99  # the cosine with the planted axis, sign included


@pytest.mark.parametrize("method", dirs.DIRECTION_METHODS)
def test_directions_point_from_source_to_target(method):
    source, target = _planted(seed=1)
    assert float(dirs.direction(method, target, source)[AXIS]) < -0.99


def test_lda_sees_through_a_noisy_axis_that_misleads_the_mean_difference():
    """With a mean shift along two axes, one of them noisy, Fisher's direction weights the
    quiet axis by 1/variance: exactly Σ⁻¹Δ, not Δ."""
    d, n = 4, 4000
    g = torch.Generator().manual_seed(0)
    sd = torch.tensor([1.0, 5.0, 1.0, 1.0], dtype=torch.float64)
    source = torch.randn(n, d, generator=g, dtype=torch.float64) * sd
    target = torch.randn(n, d, generator=g, dtype=torch.float64) * sd
    target[:, 0] += 3.0
    target[:, 1] += 3.0
    lda = dirs.lda_direction(source, target, shrinkage=0.0)
    expected = torch.tensor([1.0, 1 / 25, 0.0, 0.0], dtype=torch.float64)
    expected /= expected.norm()
    assert float(lda @ expected) > 0.999
    assert float(dirs.diffmean_direction(source, target) @ expected) < 0.8


def _lda_by_hand(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    """Ledoit-Wolf's intensity written from the paper's sums (one sample at a time), and
    Fisher's direction as the top generalised eigenvector of (ΔΔᵀ, Σ) (scipy)."""
    centred = np.vstack([source - source.mean(0), target - target.mean(0)])
    n, p = centred.shape
    cov = centred.T @ centred / n
    m = np.trace(cov) / p
    d2 = np.sum((cov - m * np.eye(p)) ** 2) / p
    b2 = sum(np.sum((np.outer(x, x) - cov) ** 2) / p for x in centred) / n**2
    gamma = min(b2, d2) / d2
    shrunk = (1 - gamma) * cov + gamma * m * np.eye(p)
    delta = target.mean(0) - source.mean(0)
    _, vectors = scipy.linalg.eigh(np.outer(delta, delta), shrunk)
    top = vectors[:, -1] / np.linalg.norm(vectors[:, -1])
    return gamma, top * np.sign(top @ delta)


@pytest.mark.parametrize("n", [30, 400])  # fewer sentences than dimensions, and more
def test_lda_equals_the_closed_form(n):
    g = torch.Generator().manual_seed(n)
    d = 50
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    source = torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing
    target = torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + 0.3
    gamma, expected = _lda_by_hand(source.numpy(), target.numpy())
    centred = torch.cat([source - source.mean(0), target - target.mean(0)])
    assert math.isclose(dirs.ledoit_wolf_shrinkage(centred), gamma, rel_tol=1e-9)
    assert 0 < gamma < 1
    lda = dirs.lda_direction(source, target)
    assert np.allclose(lda.numpy(), expected, atol=1e-8)


def test_probe_is_deterministic_and_separates():
    source, target = _planted(d=20, n=200, shift=1.0, seed=2)
    first = dirs.probe_direction(source, target)
    assert torch.equal(first, dirs.probe_direction(source, target))
    both = torch.cat([source, target])
    labels = torch.cat([torch.zeros(200), torch.ones(200)])
    threshold = float((source.mean(0) + target.mean(0)) / 2 @ first)
    accuracy = float(((both @ first > threshold).double() == labels).double().mean())
    assert accuracy > 0.65  # one axis at 1 sd: Bayes accuracy 69%


def test_pca_follows_the_larger_spread_when_the_language_shift_is_small():
    """The documented weakness: within-language variance competes with the contrast."""
    scales = [1.0] * 12
    scales[7] = 4.0
    source, target = _planted(shift=1.0, scales=scales)
    assert abs(float(dirs.pca_direction(source, target)[7])) > 0.9
    assert float(dirs.diffmean_direction(source, target)[AXIS]) > 0.9


def test_bad_inputs_are_one_line_errors():
    source, target = _planted(n=10)
    with pytest.raises(UserError, match="unknown direction method 'mean'; valid methods: diffmean"):
        dirs.direction("mean", source, target)
    with pytest.raises(UserError, match="at least 2 sentences"):
        dirs.direction("diffmean", source[:1], target)
    with pytest.raises(UserError, match="do not differ"):
        dirs.direction("diffmean", source, source.clone())
    with pytest.raises(UserError, match="shrinkage=2"):
        dirs.lda_direction(source, target, shrinkage=2)


# ----------------------------------------------------------------------------- on a model


def _corpus() -> MultilingualCorpus:
    texts = {
        lang: (lambda lang=lang: [language_text(lang, 12, seed=s) for s in range(10)])
        for lang in LANGS
    }
    return MultilingualCorpus(texts, seq_len=32)


def test_residual_samples_are_each_sentences_mean(planted_model):
    """The collector pass equals a plain forward with the cache, pooled by hand."""
    corpus = _corpus().subset(["fr", "zh"])
    samples = dirs.residual_samples(planted_model, corpus, layer=0, max_sentences=4, batch_size=3)
    assert samples.point == "blocks.0.hook_resid_post"
    norms = []
    for lang in ("fr", "zh"):
        expected = []
        for k in range(4):
            ids = planted_model.tokenizer(language_text(lang, 12, seed=k))["input_ids"]
            tokens = torch.tensor([ids])
            _, cache = planted_model.run_with_cache(tokens, names_filter=samples.point)
            resid = cache[samples.point][0, 1:].double()  # BOS left out
            expected.append(resid.mean(0))
            norms.append(resid.square().sum(-1).mean())
        assert torch.allclose(samples.vectors[lang], torch.stack(expected), atol=1e-5)
    assert math.isclose(samples.token_rms, float(torch.stack(norms).mean().sqrt()), rel_tol=1e-5)


def test_language_directions_on_the_planted_model_point_at_the_language_dims(planted_model):
    """The planted residual after block 0 marks a token's language in dims 0..3 (en, fr,
    zh, ja) and its planted neurons' output in dims 4..7: the fr -> zh direction is +zh
    and -fr there, by every method, and 0 on the dims of en and ja, which never vary."""
    found = dirs.language_directions(
        planted_model, _corpus(), source="fr", target="zh", layer=0, max_sentences=10
    )
    assert found.methods == list(dirs.DIRECTION_METHODS) and found.layer == 0
    n = len(LANGS)
    fr, zh = LANGS.index("fr"), LANGS.index("zh")
    others = [i for lang in ("en", "ja") for i in (LANGS.index(lang), n + LANGS.index(lang))]
    for method in found.methods:
        unit = found[method].double()
        assert float(unit[zh]) > 0 and float(unit[n + zh]) > 0, method
        assert float(unit[fr]) < 0 and float(unit[n + fr]) < 0, method
        assert float(unit[[fr, zh, n + fr, n + zh]].square().sum()) > 0.25, method
        assert float(unit[others].abs().max()) < 1e-6, method
    assert torch.allclose(torch.diagonal(found.cosines()), torch.ones(4, dtype=torch.float64))
    samples = dirs.residual_samples(planted_model, _corpus().subset(["fr", "zh"]), layer=0)
    difference = samples.vectors["zh"].mean(0) - samples.vectors["fr"].mean(0)
    _, hook = found.hooks("diffmean", 1.0)[0]  # alpha 1 adds the mean difference itself
    assert torch.allclose(hook.keywords["vector"].double(), difference, atol=1e-5)
    assert found.residual_norm == pytest.approx(samples.token_rms)


def test_steering_hook_equals_adding_the_vector_by_hand(planted_model):
    """Logits with the hook after block 0 equal the HF blocks run by hand on the residual
    plus α·r·d (forward hooks on the HF modules, no TransformerLens hook involved)."""
    found = dirs.language_directions(
        planted_model, _corpus(), source="fr", target="zh", layer=0, max_sentences=10
    )
    tokens = torch.tensor([planted_model.tokenizer(language_text("fr", 8))["input_ids"]])
    with torch.no_grad():
        with planted_model.hooks(fwd_hooks=found.hooks("lda", 2.0)):
            hooked = planted_model(tokens)
        delta = 2.0 * found.scale * found["lda"]
        hf = planted_model.original_model
        block = hf.model.layers[0]

        def add(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            hidden = hidden + delta.to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handle = block.register_forward_hook(add)
        try:
            by_hand = hf(tokens).logits
        finally:
            handle.remove()
        plain = planted_model(tokens)
    assert torch.allclose(hooked, by_hand, atol=1e-5)
    assert not torch.allclose(hooked, plain, atol=1e-3)  # the push changes the logits


def test_hooks_leave_no_trace_on_errors(planted_model):
    found = dirs.language_directions(
        planted_model, _corpus(), source="fr", target="zh", layer=1, point="pre", max_sentences=4
    )
    from mlneurons.methods.interventions import intervene

    with pytest.raises(RuntimeError, match="boom"):
        with intervene(planted_model, found.hooks("diffmean", 1.0)):
            raise RuntimeError("boom")
    assert not any(hp.fwd_hooks for hp in planted_model.hook_dict.values())


def test_directions_save_and_load(planted_model, tmp_path):
    found = dirs.language_directions(
        planted_model, _corpus(), source="fr", target="zh", layer=1, methods=["pca", "probe"]
    )
    found.save(tmp_path)
    loaded = dirs.LanguageDirections.load(tmp_path)
    assert torch.equal(loaded.directions, found.directions)
    assert loaded.methods == ["pca", "probe"] and loaded.scale == found.scale
    assert loaded.point == "blocks.1.hook_resid_post"


def test_language_directions_check_their_inputs_before_the_model(planted_model):
    corpus = _corpus()
    with pytest.raises(UserError, match="layer=2 is out of range: the model has blocks 0..1"):
        dirs.language_directions(planted_model, corpus, source="fr", target="zh", layer=2)
    with pytest.raises(UserError, match="point='mid' is not valid; choose from post, pre"):
        dirs.language_directions(
            planted_model, corpus, source="fr", target="zh", layer=0, point="mid"
        )
    with pytest.raises(UserError, match="both 'fr'"):
        dirs.language_directions(planted_model, corpus, source="fr", target="fr", layer=0)
    with pytest.raises(UserError, match="unknown direction method"):
        dirs.language_directions(
            planted_model, corpus, source="fr", target="zh", layer=0, methods=["x"]
        )
