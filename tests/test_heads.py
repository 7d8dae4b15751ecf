"""Attention heads as language units, with known answers.

The planted-heads Llama (tests/tiny.py) has one head per language whose output is exactly 0
on every other language, one shared head and heads that write nothing; the random Llama has
every weight live, for the exactness checks: the importance is the derivative of the loss
(central finite differences, float64), and zeroing a head's ``hook_z`` is zeroing its input
columns of ``W_O`` (an independent computation on the Hugging Face weights).
"""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import (
    LANGS,
    PLANTED_HEADS,
    SHARED_HEAD,
    language_text,
    make_planted_heads_llama,
    make_random_llama,
)

import mlneurons
import mlneurons.models.loading
from mlneurons import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.evaluation.perplexity import perplexity, sequence_nll
from mlneurons.evaluation.uncertainty import Uncertainty, holm, weights
from mlneurons.interfaces.cli import main as cli_main
from mlneurons.interfaces.commands import command
from mlneurons.methods import heads as H

ROOT = Path(__file__).resolve().parent.parent


def corpus_of(n_words: int, seed: int, languages=LANGS, seq_len: int = 33) -> MultilingualCorpus:
    return MultilingualCorpus(
        {lang: (lambda lang=lang: [language_text(lang, n_words, seed=seed)]) for lang in languages},
        seq_len=seq_len,
    )


@pytest.fixture(scope="module")
def planted_heads_dir(tmp_path_factory):
    return make_planted_heads_llama(tmp_path_factory.mktemp("planted_heads"))


@pytest.fixture(scope="module")
def planted_heads(planted_heads_dir):
    return mlneurons.load_model(str(planted_heads_dir), device="cpu")


@pytest.fixture(scope="module")
def live64(tmp_path_factory):
    directory = make_random_llama(
        tmp_path_factory.mktemp("live64"), n_layers=2, seed=3, initializer_range=0.3
    )
    return mlneurons.load_model(str(directory), device="cpu", dtype=torch.float64)


@pytest.fixture(scope="module")
def found(planted_heads):
    """Importance on 12 rows per language, LAHIS selection, deactivation on other text."""
    importance = H.head_importance(planted_heads, corpus_of(400, 0), progress=False)
    heads = H.select_heads(importance, top_rate=0.25)
    deactivation = H.head_deactivation(
        planted_heads, heads, corpus_of(400, 9), control_draws=2, progress=False
    )
    return importance, heads, deactivation


# ----------------------------------------------------------------------------- known answers


def test_planted_language_heads_are_found(found):
    importance, heads, _ = found
    assert all(len(rows) == 12 for rows in importance.tokens.values())
    silent = [(0, 2), (1, 1), (1, 3)]  # W_O = 0: no gradient reaches their mask
    for lang, (layer, head) in PLANTED_HEADS.items():
        assert importance.score(lang)[layer, head] > 0.01
        for other in LANGS:  # its output is exactly 0 on other languages, so is its gradient
            if other != lang:
                assert (importance.signed(other)[:, layer, head] == 0).all()
    for lang in LANGS:
        assert importance.score(lang)[SHARED_HEAD] > 0
        assert all(importance.score(lang)[h] == 0 for h in silent)
        interval = importance.interval(lang, PLANTED_HEADS[lang])
        assert interval.lo <= importance.score(lang)[PLANTED_HEADS[lang]] <= interval.hi
    assert heads.specific == {lang: [list(PLANTED_HEADS[lang])] for lang in LANGS}
    assert heads.general == [list(SHARED_HEAD)]
    assert heads.constants["per_language"] == 2
    for lang, (layer, head) in PLANTED_HEADS.items():  # output norms: 0 off its language
        norms = {other: importance.norm(other)[layer, head] for other in LANGS}
        assert norms[lang] > 0.1 and all(norms[o] == 0 for o in LANGS if o != lang)


def test_output_norms_equal_a_direct_reading(planted_heads):
    corpus = corpus_of(100, 1, languages=("fr", "zh"))
    stats = H.head_statistics(planted_heads, corpus, batch_size=2, progress=False)
    norms = H.output_norms(stats)
    for k, lang in enumerate(corpus.languages):
        rows = torch.cat(list(corpus.rows(lang, planted_heads.tokenizer)))
        seen = []
        with torch.no_grad():
            _, cache = planted_heads.run_with_cache(rows)
        for layer in range(2):
            z = cache[f"blocks.{layer}.attn.hook_z"][:, 1:].double()  # BOS not counted
            seen.append(z.square().sum(-1).mean((0, 1)).sqrt())
        torch.testing.assert_close(norms[k], torch.stack(seen), rtol=1e-5, atol=1e-6)


def test_importance_is_the_derivative_of_the_loss(live64):
    """dL_r/dm_h by one backward pass equals (L_r(1 + e) - L_r(1 - e)) / 2e, head by head,
    the loss read from the Hugging Face logits (float64)."""
    ids = live64.tokenizer(language_text("ja", 48), add_special_tokens=False)["input_ids"]
    corpus = MultilingualCorpus.from_token_ids({"ja": torch.tensor(ids)}, seq_len=17)
    rows = torch.cat(list(corpus.rows("ja", live64.tokenizer)))
    one = H.head_importance(live64, corpus, batch_size=2, norms=False, progress=False)
    grads = one.signed("ja")
    assert grads.shape == (3, 2, 4) and grads.abs().min() > 1e-4  # every head matters

    def loss(row: torch.Tensor, layer: int, head: int, factor: float) -> float:
        def scaled(z, hook):
            z = z.clone()
            z[:, :, head] *= factor
            return z

        with torch.no_grad(), live64.hooks(fwd_hooks=[(H.z_hook(layer), scaled)]):
            logits = live64.original_model(input_ids=row[None]).logits[0, :-1].double()
        return float(-logits.log_softmax(-1).gather(-1, row[1:, None]).mean())

    def slope(r: int, layer: int, head: int, eps: float) -> float:
        up, down = loss(rows[r], layer, head, 1 + eps), loss(rows[r], layer, head, 1 - eps)
        return (up - down) / (2 * eps)

    # The bridge computes some of the forward in float32 (the loss moves by ~1e-7 on its
    # own), so the steps are not tiny: Richardson's extrapolation of two central differences
    # cancels their O(eps^2) error.
    for r in range(3):
        for layer in range(2):
            for head in range(4):
                extrapolated = (4 * slope(r, layer, head, 0.01) - slope(r, layer, head, 0.02)) / 3
                assert grads[r, layer, head] == pytest.approx(extrapolated, rel=1e-3, abs=1e-4)


def test_zeroing_z_equals_zeroing_the_columns_of_w_o(live64, gpt2_model):
    """Conditions mixed in shared batches (hook_z) against each condition alone with its
    heads' input columns of the output projection zeroed in the Hugging Face weights."""
    conditions = [[], [(0, 1)], [(1, 0), (0, 1)], [(1, 1)]]
    for model, width in ((live64, 8), (gpt2_model, 16)):
        rows = torch.cat(list(corpus_of(150, 4, languages=("en",)).rows("en", model.tokenizer)))
        with torch.inference_mode():
            mixed = H.masked_head_nll(model, rows, conditions, batch_size=3, progress=False)
        hf = model.original_model
        for c, heads in enumerate(conditions):
            saved = {}
            for layer, head in heads:
                if hasattr(hf, "transformer"):  # GPT-2: Conv1D, inputs are the weight's rows
                    weight = hf.transformer.h[layer].attn.c_proj.weight
                    part = (slice(head * width, (head + 1) * width), slice(None))
                else:
                    weight = hf.model.layers[layer].self_attn.o_proj.weight
                    part = (slice(None), slice(head * width, (head + 1) * width))
                saved.setdefault(id(weight), (weight, weight.detach().clone()))
                with torch.no_grad():
                    weight[part] = 0.0
            try:
                with torch.inference_mode():
                    alone = sequence_nll(model, rows)
            finally:
                with torch.no_grad():
                    for weight, original in saved.values():
                        weight.copy_(original)
            torch.testing.assert_close(mixed[c], alone.double(), rtol=1e-5, atol=1e-5)
        if model is live64:  # every condition changes the loss there
            assert (mixed[1:] - mixed[0]).abs().min() > 1e-3


def test_planted_deactivation_hits_only_its_language(found, planted_heads):
    _, heads, deactivation = found
    change = deactivation.relative_change()
    assert (change.diagonal() > 1).all()  # perplexity more than doubles
    assert (change[~torch.eye(4, dtype=torch.bool)] == 0).all()  # exactly 0 elsewhere
    specific = {tuple(h) for lang in LANGS for h in heads.specific[lang]}
    for drawn in deactivation.controls:
        for lang in LANGS:
            assert sorted(h[0] for h in drawn[lang]) == [PLANTED_HEADS[lang][0]]  # same layer
            assert not {tuple(h) for h in drawn[lang]} & specific
    cells = deactivation.cells()
    for lang in LANGS:
        assert cells[lang][lang]["significant"] and cells[lang][lang]["difference"].lo > 0.5
    # the slow path: public perplexity() with a plain hook zeroing the head
    layer, head = PLANTED_HEADS["fr"]

    def off(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    heldout = corpus_of(400, 9)
    slow = perplexity(
        planted_heads, heldout.subset(["fr"]), interventions=[(H.z_hook(layer), off)],
        progress=False,
    )  # fmt: skip
    assert deactivation.perplexity("fr", "fr") == pytest.approx(slow["fr"], rel=1e-6)


# ----------------------------------------------------------------------------- by hand


def _deactivation(base, off, control, tokens=10) -> H.HeadDeactivation:
    """A one-language matrix from per-row losses."""
    n = len(base)
    return H.HeadDeactivation(
        languages=["xx"],
        heads={"xx": [[0, 0]]},
        controls=[{"xx": [[0, 1]]}],
        baseline={"xx": list(base)},
        deactivated={"xx": {"xx": list(off)}},
        control=[{"xx": {"xx": list(control)}}],
        tokens={"xx": [tokens] * n},
    )


def test_cells_by_hand():
    rng = np.random.default_rng(0)
    base = 30 + rng.random(12)
    off = base + 2 + rng.random(12)
    control = base + 0.5
    how = Uncertainty(samples=400, seed=3)
    cell = _deactivation(base, off, control).cells(how)["xx"]["xx"]
    expected = math.exp((off.sum() - base.sum()) / 120) - 1
    assert cell["change"].value == pytest.approx(expected)
    assert cell["control"].value == pytest.approx(math.exp(6 / 120) - 1)
    w = weights(12, 400, 3)  # the same resamples for both sides, by hand
    draws = np.expm1((w @ (off - base)) / (w.sum(1) * 10)) - np.expm1(
        (w @ (control - base)) / (w.sum(1) * 10)
    )
    lo, hi = np.percentile(draws, [2.5, 97.5])
    assert (cell["difference"].lo, cell["difference"].hi) == pytest.approx((lo, hi))
    assert cell["p"] == pytest.approx(1 / 401) and cell["significant"]
    # heads off exactly as harmful as the control: not significant
    same = _deactivation(base, off, off).cells(how)["xx"]["xx"]
    assert same["difference"].value == 0 and same["p"] == 1 and not same["significant"]
    # too few rows: no interval, untested
    few = _deactivation(base[:5], off[:5], control[:5]).cells(how)["xx"]["xx"]
    assert not few["change"].has_interval and math.isnan(few["p"]) and not few["significant"]


def test_holm_runs_across_the_cells(found):
    cells = found[2].cells()
    flat = [cell for per in cells.values() for cell in per.values()]
    assert [c["p_holm"] for c in flat] == holm([c["p"] for c in flat])


def _importance(scores: list[list[list[float]]]) -> H.HeadImportance:
    """Scores ``[language][layer][head]`` as the gradients of one row."""
    languages = [f"l{i}" for i in range(len(scores))]
    return H.HeadImportance(
        languages=languages,
        n_layers=len(scores[0]),
        n_heads=len(scores[0][0]),
        gradients={lang: [s] for lang, s in zip(languages, scores)},
        tokens={lang: [5] for lang in languages},
    )


def test_selection_by_hand():
    scores = _importance(
        [
            [[9, 8, 0], [1, 0, -7]],  # l0: top 3 by |g| = L0H0, L0H1, L1H2
            [[9, 0, 6], [0, 5, 0]],  # l1: L0H0, L0H2, L1H1
            [[9, 0, 0], [4, 0, 3]],  # l2: L0H0, L1H0, L1H2
        ]
    )
    heads = H.select_heads(scores, top_rate=0.5)
    assert heads.candidates["l0"] == [[0, 0], [0, 1], [1, 2]]
    assert heads.general == [[0, 0], [1, 2]]
    assert heads.specific == {"l0": [[0, 1]], "l1": [[0, 2], [1, 1]], "l2": [[1, 0]]}
    strict = H.select_heads(scores, top_rate=0.5, shared_min=3)  # only in all three
    assert strict.general == [[0, 0]] and strict.specific["l0"] == [[0, 1], [1, 2]]
    with pytest.raises(UserError, match=r"shared_min=4 must be an integer in 2\.\.3"):
        H.select_heads(scores, shared_min=4)
    with pytest.raises(UserError, match="top_rate=0"):
        H.select_heads(scores, top_rate=0)
    with pytest.raises(UserError, match="unknown languages"):
        H.select_heads(scores, ["l0", "xx"])


def test_controls_need_free_heads_in_the_layer():
    heads = H.LanguageHeads(
        languages=["a", "b"], n_layers=2, n_heads=2,
        candidates={"a": [[0, 0]], "b": [[0, 1]]},
        specific={"a": [[0, 0]], "b": [[0, 1]]}, general=[],
    )  # fmt: skip
    with pytest.raises(UserError, match="layer 0 has 0 heads that are no language's specific"):
        H.random_heads(heads)
    heads.specific["b"] = [[1, 1]]
    drawn = H.random_heads(heads, seed=5)
    assert drawn == {"a": [[0, 1]], "b": [[1, 0]]}  # the only free head of each layer


# ----------------------------------------------------------------------------- patterns


def test_attention_patterns_of_uniform_heads(planted_heads):
    """Queries and keys are 0: every token attends uniformly to its prefix, BOS included."""
    found = H.attention_patterns(planted_heads, ["fr1 fr2 fr3", "en4"], 1, 2)
    (tokens, pattern), (short, small) = found
    assert tokens == ["<bos>", "fr1", " fr2", " fr3"] and short == ["<bos>", "en4"]
    expected = torch.tril(torch.ones(4, 4)) / torch.arange(1, 5)[:, None]
    torch.testing.assert_close(pattern, expected)
    torch.testing.assert_close(small, expected[:2, :2])
    with pytest.raises(UserError, match="head \\(layer 2, head 0\\) does not fit"):
        H.attention_patterns(planted_heads, ["fr1"], 2, 0)


@pytest.mark.slow
def test_attention_patterns_merge_byte_pieces_on_gemma(gemma):
    ((tokens, pattern),) = H.attention_patterns(gemma, ["猫は𝄞を見た"], 3, 1)
    assert tokens[0] == "<bos>" and "".join(tokens[1:]) == "猫は𝄞を見た"
    assert pattern.shape == (len(tokens), len(tokens))
    torch.testing.assert_close(pattern.sum(1), torch.ones(len(tokens)))


# ----------------------------------------------------------------------------- command


def _folders(root: Path) -> tuple[Path, Path]:
    folders = root / "train", root / "held"
    for folder, seed in zip(folders, (0, 9)):
        folder.mkdir()
        for lang in LANGS:
            (folder / f"{lang}.txt").write_text(language_text(lang, 350, seed=seed) + "\n")
    return folders


def test_cli_and_example(planted_heads_dir, tmp_path, capsys):
    train, held = _folders(tmp_path)
    out = tmp_path / "run"
    args = ["--model", str(planted_heads_dir), "--corpus", str(train), "--languages", "en,fr,zh,ja"]
    args += ["--seq-len", "33", "--tokens-per-language", "320", "--top-rate", "0.25"]
    code = cli_main(["heads", *args, "--heldout", str(held), "--heldout-tokens-per-language",
                     "320", "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "general heads (candidates of >= 2 languages): L0 H0" in printed
    assert "fr-specific heads: L1 H2 " in printed and "fr: its 1 head(s) off" in printed
    assert f"wrote {out}/: heads.json heads_importance.png heads_deactivation.png" in printed
    saved = H.HeadsResult.load(out)
    assert saved.heads.specific["ja"] == [list(PLANTED_HEADS["ja"])]
    assert saved.deactivation is not None and saved.deactivation.heads["zh"] == [[0, 3]]
    tables = command("heads").tables(saved)
    assert [t.header[0] for t in tables] == ["language", "language", "heads of"]
    assert all("n.s." not in str(row[-1]) for row in tables[1].rows)

    spec = importlib.util.spec_from_file_location(
        "heads_example", ROOT / "examples" / "attention_heads.py"
    )
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.main([*args, "--heldout", str(held), "--out", str(tmp_path / "ex")])
    assert result.heads.specific["en"] == [list(PLANTED_HEADS["en"])]
    assert (tmp_path / "ex" / "heads_importance.png").stat().st_size > 1000


def test_user_errors_before_the_model(monkeypatch, tmp_path, capsys):
    def fail(*args, **kwargs):
        raise AssertionError("the model loaded after a user mistake")

    monkeypatch.setattr(mlneurons.models.loading, "load_model", fail)
    for argv, message in [
        (["heads", "--languages", "en"], "--languages en names one"),
        (["heads", "--languages", "en,fr", "--shared-min", "3"], "--shared-min 3 is more than"),
        (["heads", "--heldout", str(tmp_path / "nowhere")], "does not exist"),
        (["heads", "--languages", "en,xx"], "'xx'"),
    ]:
        assert cli_main([*argv, "--out", str(tmp_path / "o")]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def test_hooks_never_leak(planted_heads, monkeypatch):
    from mlneurons.models.hooks import hooks_attached

    def broken(*args, **kwargs):
        raise RuntimeError("scoring failed")

    monkeypatch.setattr(H, "sequence_nll", broken)
    rows = torch.cat(list(corpus_of(100, 1, languages=("en",)).rows("en", planted_heads.tokenizer)))
    with pytest.raises(RuntimeError, match="scoring failed"):
        H.masked_head_nll(planted_heads, rows, [[(0, 1)]], progress=False)
    assert not hooks_attached(planted_heads)
    monkeypatch.setattr(H, "unembed", broken)
    with pytest.raises(RuntimeError, match="scoring failed"):
        H.head_importance(planted_heads, corpus_of(100, 1, languages=("en", "fr")), progress=False)
    assert not hooks_attached(planted_heads)
