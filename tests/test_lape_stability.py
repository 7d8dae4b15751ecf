"""LAPE with its uncertainty: shared neurons against chance, and the selection's stability
under bootstrap resamples of the corpus rows (known answers, hand-made statistics)."""

import itertools
import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from tiny import LANGS, PLANTED, language_text

import mlneurons
from mlneurons import LanguageNeurons, MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import Uncertainty, holm, hypergeometric_tail, overlap_null
from mlneurons.interfaces.commands import lape as command
from mlneurons.methods import lape
from mlneurons.stats.activation import ActivationStats, BlockStats, collect_block_stats

# ------------------------------------------------------------------ shared neurons vs chance


def test_hypergeometric_and_layered_null_by_hand():
    # 2 of 4 and 2 of 4: P(0) = 1/6, P(1) = 4/6, P(2) = 1/6
    assert lape.hypergeometric_pmf(4, 2, 2).tolist() == pytest.approx([1 / 6, 4 / 6, 1 / 6])
    # with a second layer, 1 of 4 and 1 of 4 (P(0) = 3/4, P(1) = 1/4), the total's law is
    # 0: 1/8, 1: 13/24, 2: 7/24, 3: 1/24; an observed 2: p = 8/24, expectation 1 + 1/4
    chance = lape.layered_overlap_null(2, [(4, 2, 2), (4, 1, 1)])
    assert chance.expected == pytest.approx(1.25)
    assert chance.p_value == pytest.approx(1 / 3)
    assert lape.layered_overlap_null(0, [(4, 2, 2), (4, 1, 1)]).p_value == pytest.approx(1.0)
    assert lape.layered_overlap_null(3, [(4, 2, 2), (4, 1, 1)]).p_value == pytest.approx(1 / 24)
    # one layer: the exact hypergeometric tail of the core
    for k in range(6):
        one = lape.layered_overlap_null(k, [(40, 7, 5)])
        assert one.p_value == pytest.approx(hypergeometric_tail(k, 40, 7, 5), rel=1e-12)
        assert one.expected == overlap_null(k, 40, 7, 5).expected
    with pytest.raises(ValueError, match="impossible"):
        lape.layered_overlap_null(4, [(4, 2, 2), (4, 1, 1)])


def test_layered_null_against_enumeration():
    """Every pair of subsets enumerated, layer by layer: the exact law of the total."""
    strata = [(6, 2, 3), (5, 3, 2), (4, 1, 2)]
    laws = []
    for population, a, b in strata:
        law: dict[int, Fraction] = {}
        subsets = [
            (set(x), set(y))
            for x in itertools.combinations(range(population), a)
            for y in itertools.combinations(range(population), b)
        ]
        for x, y in subsets:
            law[len(x & y)] = law.get(len(x & y), Fraction(0)) + Fraction(1, len(subsets))
        laws.append(law)
    total: dict[int, Fraction] = {0: Fraction(1)}
    for law in laws:
        combined: dict[int, Fraction] = {}
        for (i, p), (j, q) in itertools.product(total.items(), law.items()):
            combined[i + j] = combined.get(i + j, Fraction(0)) + p * q
        total = combined
    for k in range(max(total) + 1):
        tail = sum(p for i, p in total.items() if i >= k)
        assert lape.layered_overlap_null(k, strata).p_value == pytest.approx(float(tail), rel=1e-12)
    mean = sum(i * p for i, p in total.items())
    assert lape.layered_overlap_null(0, strata).expected == pytest.approx(float(mean))


def hand_neurons() -> LanguageNeurons:
    """a and b share 6 of their 6 layer-0 neurons (chance: 1.8); a and c share 1 neuron in
    layer 1 (chance 0.1); b and c share nothing and could not (b has none in layer 1)."""
    return LanguageNeurons(
        {
            "a": [[0, i] for i in range(6)] + [[1, 0]],
            "b": [[0, i] for i in range(6)],
            "c": [[1, 0], [1, 1]],
        },
        n_layers=2,
        d_mlp=20,
    )


def test_overlap_chance_by_hand():
    chance = hand_neurons().overlap_chance()
    assert chance.pairs == [("a", "b"), ("a", "c"), ("b", "c")]
    assert [c.observed for c in chance.overall] == [6, 1, 0]
    assert [c.expected for c in chance.overall] == pytest.approx([6 * 6 / 20, 0.1, 0.0])
    # a-b: all 6 of b's layer-0 neurons among a's 6: 1 / C(20, 6); layer 1: b has none
    p_ab = 1 / math.comb(20, 6)
    assert [c.p_value for c in chance.overall] == pytest.approx([p_ab, 0.1, 1.0])
    assert chance.p_holm == pytest.approx([3 * p_ab, 0.2, 1.0])
    assert chance.p_holm == pytest.approx(holm([p_ab, 0.1, 1.0]))
    assert chance.significant(0.05) == [True, False, False]
    assert chance.significant(0.5) == [True, True, False]
    # per layer: a-c share their one neuron in layer 1, nothing in layer 0
    assert [c.observed for c in chance.layers[1]] == [0, 1]
    assert [c.expected for c in chance.layers[1]] == pytest.approx([0.0, 0.1])
    assert chance.layers[1][1].p_value == pytest.approx(0.1)
    again = lape.OverlapChance.from_json(json.loads(json.dumps(chance.to_json())))
    assert again == chance


def hand_result(tmp_path=None) -> lape.LapeResult:
    neurons = hand_neurons()
    stats = ActivationStats(
        ["a", "b", "c"],
        torch.zeros(3, 2, 20, dtype=torch.int64),
        torch.zeros(3, 2, 20, dtype=torch.float64),
        torch.tensor([100, 100, 100]),
    )
    return lape.LapeResult(stats, neurons, lape.summarize(stats, neurons))


def test_not_significant_flags_where_they_must_be_and_only_there():
    result = hand_result()
    line = next(x for x in command.describe(result) if x.startswith("Shared neurons vs chance"))
    assert "1 of 3 pairs above chance" in line and "Holm" in line
    assert "a-b 6 vs 1.8," in line  # no flag
    assert "a-c 1 vs 0.1 (n.s.)" in line and "b-c 0 vs 0.0 (n.s.)" in line
    _, pairs, per_layer = command.tables(result)
    assert [row[0] for row in pairs.rows] == ["a-b", "a-c", "b-c"]
    assert [row[-1] for row in pairs.rows] == ["", "n.s.", "n.s."]
    assert pairs.rows[0][1:5] == ["6", "1.80", "3.3", f"{3 / math.comb(20, 6):.2g}"]
    assert "hypergeometric" in pairs.caption and "Holm-adjusted" in pairs.caption
    assert per_layer.details and ["a-b", 0, "6", "1.80"] == per_layer.rows[0][:4]


def test_old_summaries_still_load_without_the_new_fields(tmp_path):
    result = hand_result()
    result.save(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["uncertainty"] == Uncertainty().to_json()
    assert summary["overlap"]["pairs"][0]["p_holm"] == pytest.approx(3 / math.comb(20, 6))
    for key in ("overlap", "stability", "uncertainty"):
        del summary[key]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    old = lape.LapeResult.load(tmp_path)
    assert old.summary.overlap is None and old.selection_stability() is None
    assert old.overlap_chance() == result.overlap_chance()  # from the neurons: exact
    lines = command.describe(old)
    assert not any("stability" in x for x in lines)
    assert command.tables(old)[0].header == ["language", "tokens", "neurons"]


# ------------------------------------------------------------------ stability: hand-made blocks


def borderline_blocks(k: int = 4) -> BlockStats:
    """Two languages, ``k`` blocks of 100 tokens each, one layer of 10 neurons.

    Neuron 0 fires on every token of language a, never on b: strongly specific. Neuron 1
    fires on a's tokens in a's block 0 only: specific to a when block 0 is drawn, else
    it never fires. Neurons 2..9 fire on 10% of every language's tokens.
    """
    fires = torch.full((2 * k, 1, 10), 10, dtype=torch.int64)
    fires[:, 0, :2] = 0
    fires[:k, 0, 0] = 100
    fires[0, 0, 1] = 100
    return BlockStats(
        ["a", "b"],
        torch.tensor([0] * k + [1] * k),
        fires,
        fires.double(),
        torch.full((2 * k,), 100),
    )


# top_rate 0.2 keeps 2 of 10; tau = the 10th of 20 probabilities = 0.1 (16 of them); the
# neurons at 0.1 are not above it, so only neurons 0 and 1 can be kept, each for a.
CONSTANTS = dict(top_rate=0.2, filter_rate=0.5, activation_bar_ratio=0.5)


def test_borderline_neuron_is_unstable_and_the_specific_one_is_not():
    blocks = borderline_blocks()
    full = lape.select(blocks.total(), **CONSTANTS)
    assert full["a"].tolist() == [[0, 0], [0, 1]] and full.counts()["b"] == 0
    resamples = 200
    result = lape.stability(blocks, resamples, **CONSTANTS, uncertainty=Uncertainty(seed=3))
    # by hand: a resample keeps neuron 1 exactly when it draws a's block 0 at least once;
    # then a's set is the full one (Jaccard 1), else {neuron 0} (Jaccard 1/2)
    drawn = lape.block_weights(blocks, resamples, 3)[0][:, 0] > 0
    assert result.draws["a"] == [1.0 if d else 0.5 for d in drawn]
    assert result.frequency["a"] == [1.0, drawn.mean()]
    assert 0.6 < drawn.mean() < 0.78  # 1 - (3/4)^4 = 0.68
    assert result.share_stable() == {"a": 0.5, "b": None}
    estimate = result.jaccard["a"]
    assert estimate.value == pytest.approx(1 - 0.5 * (1 - drawn.mean()))
    assert (estimate.lo, estimate.hi) == (0.5, 1.0)
    assert estimate.n == 4 and estimate.confidence == 0.95 and estimate.seed == 3
    assert "200 bootstrap resamples of 4 blocks" in estimate.method
    # b has no neurons in any resample: identical empty sets, Jaccard 1
    assert result.draws["b"] == [1.0] * resamples and result.frequency["b"] == []
    again = lape.SelectionStability.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result


def test_jaccard_of_sets_by_hand():
    """A resample's set {0} against the full {0, 1}: 1/2; the same seed, the same draws."""
    blocks = borderline_blocks(k=2)
    one = lape.stability(blocks, 50, **CONSTANTS, uncertainty=Uncertainty(seed=1))
    assert set(one.draws["a"]) == {0.5, 1.0}
    assert (
        one.to_json()
        == lape.stability(blocks, 50, **CONSTANTS, uncertainty=Uncertainty(seed=1)).to_json()
    )
    other = lape.stability(blocks, 50, **CONSTANTS, uncertainty=Uncertainty(seed=2))
    assert other.draws["a"] != one.draws["a"]


def random_blocks(seed: int = 0) -> BlockStats:
    g = torch.Generator().manual_seed(seed)
    language_of = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    tokens = torch.randint(50, 300, (9,), generator=g)
    fires = (torch.rand(9, 3, 16, generator=g) * tokens[:, None, None]).long()
    return BlockStats(["en", "fr", "zh"], language_of, fires, fires.double(), tokens)


def test_resampled_probabilities_are_exact():
    blocks = random_blocks()
    ones = [np.ones((1, len(blocks.blocks(lang)))) for lang in blocks.languages]
    assert torch.equal(lape.resampled_probs(blocks, ones)[0], blocks.total().activation_probs)
    # one resample against the slow path: the drawn blocks' integer counts added up
    weights = lape.block_weights(blocks, 5, seed=7)
    fast = lape.resampled_probs(blocks, weights)
    for b in range(5):
        fires = torch.zeros(3, 3, 16, dtype=torch.int64)
        tokens = torch.zeros(3, dtype=torch.int64)
        for i, lang in enumerate(blocks.languages):
            for block, count in zip(blocks.blocks(lang).tolist(), weights[i][b].tolist()):
                for _ in range(int(count)):
                    fires[i] += blocks.fire_counts[block]
                    tokens[i] += blocks.token_counts[block]
        slow = ActivationStats(blocks.languages, fires, fires.double(), tokens)
        assert torch.equal(fast[b], slow.activation_probs)
    assert all(
        w.sum(1).tolist() == [len(blocks.blocks(lang))] * 5
        for w, lang in zip(weights, blocks.languages)
    )


def test_stability_refuses_no_resamples():
    with pytest.raises(UserError, match="at least one resample"):
        lape.stability(random_blocks(), 0)


# ------------------------------------------------------------------ the planted model


@pytest.fixture(scope="module")
def planted_corpus():
    return MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, 800)]) for lang in LANGS},
        seq_len=32,
        tokens_per_language=5 * 31,
    )


def test_block_pass_adds_up_to_the_language_pass_and_planted_neurons_are_stable(
    planted_model, planted_corpus
):
    stats = mlneurons.collect_activation_stats(
        planted_model, planted_corpus, batch_size=4, progress=False
    )
    blocks = collect_block_stats(
        planted_model, planted_corpus, blocks=2, batch_size=4, progress=False
    )
    # 5 rows per language in blocks of 3 consecutive rows: 3 + 2 rows of 31 tokens
    assert blocks.rows_per_block == 3
    assert blocks.language_of.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert blocks.token_counts.tolist() == [93, 62] * 4
    total = blocks.total()
    assert torch.equal(total.fire_counts, stats.fire_counts)
    assert torch.equal(total.token_counts, stats.token_counts)
    torch.testing.assert_close(total.activation_sums, stats.activation_sums, rtol=1e-5, atol=1e-4)
    top_rate = sum(map(len, PLANTED.values())) / (stats.n_layers * stats.d_mlp)
    full = lape.select(stats, top_rate=top_rate)
    assert {lang: sorted(map(tuple, full[lang].tolist())) for lang in LANGS} == {
        lang: sorted(pairs) for lang, pairs in PLANTED.items()
    }
    result = lape.stability(blocks, 20, top_rate=top_rate)
    for lang in LANGS:
        assert result.draws[lang] == [1.0] * 20, lang
        assert result.frequency[lang] == [1.0, 1.0]
        assert (result.jaccard[lang].value, result.jaccard[lang].lo) == (1.0, 1.0)
    assert set(result.share_stable().values()) == {1.0}


def test_block_pass_needs_a_budget(planted_model):
    corpus = MultilingualCorpus({lang: (lambda: ["x"]) for lang in LANGS}, seq_len=32)
    with pytest.raises(UserError, match="token budget"):
        collect_block_stats(planted_model, corpus)


def test_config_refuses_stability_without_the_pass():
    with pytest.raises(UserError, match="--stats holds per-language totals"):
        command.LapeConfig(stats="runs/lape", stability=10)
    with pytest.raises(UserError, match="drop --shards"):
        command.LapeConfig(shards=2, stability=10)
    assert command.LapeConfig(stability=10).stability == 10
    with pytest.raises(UserError, match="stability"):
        command.LapeConfig(stability=-1)


def test_command_with_stability_selects_exactly_the_same_neurons(planted_dir, tmp_path):
    from mlneurons.interfaces.cli import main as cli_main

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for lang in LANGS:
        (corpus / f"{lang}.txt").write_text(language_text(lang, 400) + "\n")
    common = ["lape", "--model", str(planted_dir), "--corpus", str(corpus), "--seq-len", "32"]
    common += ["--languages", ",".join(LANGS), "--tokens-per-language", "155"]
    common += ["--top-rate", "0.125", "--batch-size", "5"]
    assert cli_main([*common, "--out", str(tmp_path / "plain")]) == 0
    assert cli_main([*common, "--stability", "4", "--out", str(tmp_path / "stable")]) == 0
    plain = lape.LapeResult.load(tmp_path / "plain")
    stable = lape.LapeResult.load(tmp_path / "stable")
    assert plain.neurons.neurons.keys() == stable.neurons.neurons.keys()
    assert all(torch.equal(plain.neurons[x], stable.neurons[x]) for x in LANGS)
    assert plain.neurons.constants == stable.neurons.constants
    assert torch.equal(plain.stats.fire_counts, stable.stats.fire_counts)
    assert torch.equal(plain.stats.token_counts, stable.stats.token_counts)
    assert plain.selection_stability() is None
    result = stable.selection_stability()
    assert result is not None and result.resamples == 4 and result.blocks == dict.fromkeys(LANGS, 5)
    line = next(x for x in command.describe(stable) if x.startswith("Selection stability"))
    assert "en 1.00 [1.00, 1.00]" in line and "en 100%" in line
    assert command.tables(stable)[0].rows[0][3:] == ["1.00 [1.00, 1.00]", "100%"]
    assert (tmp_path / "stable" / "stability.png").exists()
    assert not (tmp_path / "plain" / "stability.png").exists()
