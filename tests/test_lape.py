import math

import pytest
import torch
from tiny import LANGS, PLANTED, language_text

import mlneurons
from mlneurons import LanguageNeurons, MultilingualCorpus
from mlneurons.methods import lape


def test_entropy_hand_computed():
    probs = torch.tensor([[[0.2, 0.0]], [[0.2, 0.5]]])  # 2 languages, 1 layer, 2 neurons
    entropy = lape.lape_entropy(probs)
    assert entropy[0, 0].item() == pytest.approx(math.log(2))
    assert entropy[0, 1].item() == 0.0


def test_select_hand_computed():
    # 3 languages, 1 layer, 10 neurons: 30 probabilities.
    probs = torch.full((3, 1, 10), 0.10)
    probs[:, 0, 0] = torch.tensor([0.90, 0.02, 0.01])  # en-specific, low entropy
    probs[:, 0, 1] = torch.tensor([0.80, 0.85, 0.01])  # en+fr, two languages above the bar
    probs[:, 0, 2] = torch.tensor([0.01, 0.01, 0.70])  # zh-specific
    probs[:, 0, 3] = torch.tensor([0.30, 0.30, 0.30])  # high but uniform: max entropy
    probs[:, 0, 4] = torch.tensor([0.05, 0.04, 0.06])  # specific-ish but never above tau
    # tau = kthvalue(round(0.77 * 30) = 23): sorted values 0.01 x4, 0.02, 0.04, 0.05, 0.06,
    # 0.1 x15 (positions 9..23), 0.3 x3, 0.7, 0.8, 0.85, 0.9 -> tau = 0.1, strictly above it:
    # the 0.3s, 0.7, 0.8, 0.85, 0.9. Neurons 4..9 have no language above tau.
    result = lape.select(
        probs, ["en", "fr", "zh"], top_rate=0.3, filter_rate=0.77, activation_bar_ratio=0.77
    )
    assert result.constants["threshold"] == pytest.approx(0.1)
    # Budget round(0.3 * 10) = 3 lowest entropies among neurons 0..3: H(0) and H(2) are small,
    # H(1) ~ 0.72, H(3) = ln 3, so 0, 2, 1 are kept and the uniform neuron 3 is not.
    assert result["en"].tolist() == [[0, 0], [0, 1]]
    assert result["fr"].tolist() == [[0, 1]]
    assert result["zh"].tolist() == [[0, 2]]
    assert result.constants["kept"] == 3


def test_select_excludes_filtered_neurons_even_under_budget():
    probs = torch.full((2, 1, 4), 0.5)
    probs[0, 0, 0] = 0.9
    # tau = kthvalue(round(0.5 * 8) = 4) = 0.5: only neuron 0 passes, although the budget is 4.
    result = lape.select(probs, ["a", "b"], top_rate=1.0, filter_rate=0.5, activation_bar_ratio=0.5)
    assert result.counts() == {"a": 1, "b": 0}


def test_select_rejects_bad_input():
    with pytest.raises(ValueError, match="2 names"):
        lape.select(torch.rand(3, 2, 4), ["a", "b"])
    with pytest.raises(ValueError, match="top_rate"):
        lape.select(torch.rand(2, 2, 4), ["a", "b"], top_rate=0)
    with pytest.raises(ValueError, match="probabilities"):
        lape.select(torch.rand(2, 2, 4) + 1, ["a", "b"])


def test_planted_neurons_recovered_end_to_end(planted_model):
    corpus = MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 3000)]) for lang in LANGS},
        seq_len=64,
    )
    stats = mlneurons.collect_activation_stats(planted_model, corpus, batch_size=4, progress=False)
    n_planted = sum(len(v) for v in PLANTED.values())
    total = stats.n_layers * stats.d_mlp
    neurons = lape.select(stats.activation_probs, stats.languages, top_rate=n_planted / total)
    for lang in LANGS:
        assert sorted(map(tuple, neurons[lang].tolist())) == sorted(PLANTED[lang]), lang
    assert neurons.overlap().tolist() == [[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0], [0, 0, 0, 2]]
    assert neurons.counts_per_layer().tolist() == [[1, 1]] * 4

    # The statistics carry their languages and fingerprint: the same selection, recorded.
    direct = lape.select(stats, top_rate=n_planted / total)
    assert direct.neurons.keys() == neurons.neurons.keys()
    assert all(torch.equal(direct[lang], neurons[lang]) for lang in LANGS)
    assert direct.model == stats.model and direct.model["hash"]
    two = lape.select(stats, ["FR", "zh"], top_rate=n_planted / total)
    assert two.languages == ["fr", "zh"]
    with pytest.raises(ValueError, match="needs the languages="):
        lape.select(stats.activation_probs, top_rate=0.1)

    # only(): a sub-selection that keeps the provenance
    fr = direct.only("FR")
    assert fr.languages == ["fr"] and torch.equal(fr["fr"], direct["fr"])
    assert fr.model == direct.model and fr.constants == direct.constants
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        direct.only("xx")


def test_language_neurons_save_load_and_reference_mask(tmp_path):
    neurons = LanguageNeurons(
        {
            "en": torch.tensor([[1, 5], [0, 2]]),
            "fr": torch.tensor([[0, 2]]),
            "zh": torch.empty(0, 2),
        },
        n_layers=3,
        d_mlp=8,
        constants={"top_rate": 0.01},
    )
    assert neurons["en"].tolist() == [[0, 2], [1, 5]]  # sorted
    neurons.save(tmp_path / "run")
    back = LanguageNeurons.load(tmp_path / "run")
    assert {k: v.tolist() for k, v in back.neurons.items()} == {
        k: v.tolist() for k, v in neurons.neurons.items()
    }
    assert (back.n_layers, back.d_mlp, back.constants) == (3, 8, {"top_rate": 0.01})

    mask_path = neurons.to_reference_mask(tmp_path / "x.neuron.pth")
    raw = torch.load(mask_path)
    assert len(raw) == 3 and all(len(layers) == 3 for layers in raw)
    assert raw[0][1].tolist() == [5] and raw[1][0].tolist() == [2]
    again = LanguageNeurons.from_reference_mask(mask_path, ["en", "fr", "zh"], d_mlp=8)
    assert {k: v.tolist() for k, v in again.neurons.items()} == {
        k: v.tolist() for k, v in neurons.neurons.items()
    }


def test_language_neurons_rejects_out_of_range():
    with pytest.raises(ValueError, match="layer 4"):
        LanguageNeurons({"en": torch.tensor([[4, 0]])}, n_layers=3, d_mlp=8)
    with pytest.raises(ValueError, match="index 9"):
        LanguageNeurons({"en": torch.tensor([[0, 9]])}, n_layers=3, d_mlp=8)


def test_reference_mask_must_fit_model(tmp_path, planted_model):
    path = LanguageNeurons({"en": torch.tensor([[0, 1]])}, n_layers=5, d_mlp=8).to_reference_mask(
        tmp_path / "m.pth"
    )
    with pytest.raises(ValueError, match="5 layers but the model has 2"):
        LanguageNeurons.from_reference_mask(path, ["en"], model=planted_model)
    wide = LanguageNeurons({"en": torch.tensor([[0, 40]])}, n_layers=2, d_mlp=64).to_reference_mask(
        tmp_path / "w.pth"
    )
    with pytest.raises(ValueError, match="index 40"):
        LanguageNeurons.from_reference_mask(wide, ["en"], model=planted_model)
    with pytest.raises(ValueError, match="holds 1 languages but 2"):
        LanguageNeurons.from_reference_mask(wide, ["en", "fr"])


PUBLISHED = "../shared/reference/lape-masks/LLaMA-2-7B.neuron.pth"


@pytest.mark.skipif(
    not __import__("os").path.exists(PUBLISHED), reason="shared/ not beside the repo"
)
def test_published_llama2_mask_counts():
    langs = ["en", "zh", "fr", "es", "vi", "id", "ja"]
    neurons = LanguageNeurons.from_reference_mask(PUBLISHED, langs, d_mlp=11008)
    assert neurons.n_layers == 32
    assert neurons.counts() == dict(zip(langs, [95, 583, 1022, 838, 836, 1068, 582]))
    union = neurons.masks().any(0)
    assert int(union.sum()) == 3523  # exactly 1% of 32 x 11008
    assert int((neurons.masks().sum(0) > 1).sum()) == 1127


def _identify_reference(activation_probs, top_rate, filter_rate, activation_bar_ratio):
    """A line-by-line transcription of the steps of the reference identify.py (methods.md §1),
    on [layer, neuron, language] as the original holds them."""
    probs = activation_probs.permute(1, 2, 0)
    normed = probs / probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_probs = torch.where(normed > 0, normed.log(), 0)
    entropy = -torch.sum(normed * log_probs, dim=-1)
    flattened = probs.flatten()
    top_prob_value = flattened.kthvalue(round(len(flattened) * filter_rate)).values.item()
    top_position = (probs > top_prob_value).sum(dim=-1)
    entropy[top_position == 0] = torch.inf
    flat_entropy = entropy.flatten()
    _, index = flat_entropy.topk(round(len(flat_entropy) * top_rate), largest=False)
    row, col = index // entropy.size(1), index % entropy.size(1)
    selected = probs[row, col].transpose(0, 1)
    bar = flattened.kthvalue(round(len(flattened) * activation_bar_ratio)).values.item()
    lang, which = torch.where(selected > bar)
    pairs = torch.stack((row, col), dim=-1)
    return [
        sorted(tuple(p) for p in pairs[which[lang == i]].tolist()) for i in range(probs.shape[-1])
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_matches_reference_identify(seed):
    g = torch.Generator().manual_seed(seed)
    # skewed firing rates so that many neurons pass the filter and some belong to several languages
    probs = torch.rand(5, 6, 200, generator=g) ** 3
    langs = ["en", "zh", "fr", "es", "vi"]
    ours = lape.select(probs, langs, top_rate=0.05)
    reference = _identify_reference(probs.double(), 0.05, 0.95, 0.95)
    assert ours.constants["kept"] == round(0.05 * 6 * 200)  # enough eligible neurons: same budget
    for i, lang in enumerate(langs):
        assert sorted(map(tuple, ours[lang].tolist())) == reference[i], lang
    assert int((ours.masks().sum(0) > 1).sum()) > 0  # some neurons belong to several languages


def test_select_threshold_and_bar_are_strict():
    # 2 languages, 1 layer, 4 neurons; sorted probabilities 0.0, 0.1, 0.2 x4, 0.5, 0.9.
    probs = torch.tensor([[[0.9, 0.5, 0.2, 0.2]], [[0.1, 0.0, 0.2, 0.2]]])
    # tau = kthvalue(round(0.875 * 8) = 7) = 0.5, held by neuron 1 itself (entropy 0, the
    # lowest): only a probability strictly above tau makes a neuron eligible, so neuron 1
    # is not, and only neuron 0 (0.9) is kept although the budget is 4.
    # bar = kthvalue(round(0.25 * 8) = 2) = 0.1: language b holds exactly the bar on
    # neuron 0 and so does not get it.
    result = lape.select(
        probs, ["a", "b"], top_rate=1.0, filter_rate=0.875, activation_bar_ratio=0.25
    )
    assert result.constants["threshold"] == pytest.approx(0.5)
    assert result.constants["activation_bar"] == pytest.approx(0.1)
    assert result.constants["kept"] == 1
    assert result["a"].tolist() == [[0, 0]]
    assert result["b"].tolist() == []
