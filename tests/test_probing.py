import pytest
import torch
from tiny import bos_ids, tiny_facts

from mlneurons.methods.probeless import fact_neurons, object_position_activations, probeless_scores
from mlneurons.methods.probing import probe
from mlneurons.methods.probing.causal import candidate_scores
from mlneurons.methods.probing.result import ProbeResult


def test_candidate_scores_equal_whole_sentence_loglik_differences(planted_model):
    model = planted_model
    sentences = ["fr1 fr2 fr5", "fr1 fr2 zh5", "fr1 fr2 en4 en6", "fr1 fr2 ja5"]
    scores = candidate_scores(model, sentences, batch_size=3)
    full = []
    for s in sentences:
        ids = torch.tensor(
            [
                [
                    model.tokenizer.bos_token_id,
                    *model.tokenizer(s, add_special_tokens=False)["input_ids"],
                ]
            ]
        )
        logp = torch.log_softmax(model(ids)[0, :-1].double(), -1)
        full.append(logp.gather(-1, ids[0, 1:, None]).sum().item())
    full = torch.tensor(full, dtype=torch.float64)
    torch.testing.assert_close((scores - scores[0]).double(), full - full[0], rtol=1e-4, atol=1e-4)


def test_probe_planted_facts_and_p_at_1(planted_model, tmp_path):
    result = probe(planted_model, tiny_facts(), batch_size=2, progress=False)
    got = {(p["uuid"], p["lang"]): (p["predicted"], p["correct"]) for p in result.predictions}
    assert got[("f1", "en")] == ("fr5", True)
    assert got[("f2", "en")] == ("zh5", False)
    assert got[("f4", "de")] == ("en4 en6", True)
    p1 = result.p_at_1()
    assert p1["en"]["micro"] == pytest.approx(2 / 3) and p1["de"]["P1"] == pytest.approx(2 / 3)
    result.save(tmp_path)
    back = ProbeResult.load(tmp_path)
    assert back.predictions == result.predictions and back.p_at_1() == p1


def _result(rows):
    preds = [
        {"uuid": u, "lang": lang, "relation": r, "gold": "g", "predicted": "p", "correct": c}
        for u, lang, r, c in rows
    ]
    return ProbeResult(["en", "de", "fr"], ["P1", "P2"], preds)


def test_jaccard_and_p_at_1_by_hand():
    result = _result(
        [
            ("a", "en", "P1", True),
            ("b", "en", "P1", True),
            ("c", "en", "P2", False),
            ("d", "en", "P2", True),
            ("a", "de", "P1", True),
            ("b", "de", "P1", False),
            ("c", "de", "P2", True),
            ("a", "fr", "P1", False),  # fr shares only uuid a with the others
        ]
    )
    # en vs de over shared uuids {a, b, c}: en correct {a, b}, de correct {a, c} -> 1 / 3.
    jac = result.jaccard()
    assert jac["en"]["de"] == pytest.approx(1 / 3) and jac["de"]["en"] == pytest.approx(1 / 3)
    assert jac["en"]["fr"] == 0.0  # shared {a}: en {a}, fr {} -> 0 / 1
    assert jac["en"]["en"] == 1.0
    p1 = result.p_at_1()
    assert p1["en"] == {"P1": 1.0, "P2": 0.5, "macro": 0.75, "micro": 0.75}
    assert p1["de"]["macro"] == pytest.approx(0.75) and p1["de"]["micro"] == pytest.approx(2 / 3)


def test_probeless_scores_against_brute_force():
    torch.manual_seed(0)
    vectors = torch.randn(7, 11)
    vectors[2] = vectors[4]  # ties
    brute = torch.stack(
        [
            torch.stack([(vectors[z] - vectors[o]).abs() for o in range(7) if o != z]).mean(0)
            for z in range(7)
        ]
    )
    torch.testing.assert_close(probeless_scores(vectors), brute, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least two"):
        probeless_scores(vectors[:1])


def test_object_position_and_fact_neurons(planted_model, tmp_path):
    facts = tiny_facts()
    acts = object_position_activations(planted_model, facts, batch_size=4, progress=False)
    # f1/de: BOS fr1 fr2 | fr5 -> the position of "fr2" (index 2) predicts the object.
    ids = bos_ids(planted_model, "fr1 fr2")
    _, cache = planted_model.run_with_cache(ids, names_filter=lambda n: n.endswith("mlp.hook_pre"))
    for layer in range(2):  # the tiny Llama's act_fn is SiLU
        expected = torch.nn.functional.silu(cache[f"blocks.{layer}.mlp.hook_pre"][0, 2])
        torch.testing.assert_close(acts[("f1", "de")][layer], expected, rtol=1e-5, atol=1e-6)

    correct = {
        ("f1", "en"): True,
        ("f3", "en"): True,
        ("f2", "en"): False,
        ("f1", "de"): True,
        ("f4", "de"): True,
    }
    result = fact_neurons(planted_model, facts, correct, k=5, batch_size=2, progress=False)
    assert set(result.neurons["en"]) == {"f1", "f3"} and result.neurons["en"]["f1"].shape == (5, 2)
    # with two facts, PROBELESS's score is |v_f1 - v_f3|: its top 5 as (layer, neuron)
    gap = (acts[("f1", "en")] - acts[("f3", "en")]).abs()
    top = gap.flatten().topk(5).indices.tolist()
    d_mlp = gap.shape[1]
    expected = {(i // d_mlp, i % d_mlp) for i in top}
    assert {tuple(p) for p in result.neurons["en"]["f1"].tolist()} == expected
    overlap = result.overlap()
    sets = {lang: {tuple(p) for p in result.neurons[lang]["f1"].tolist()} for lang in ("en", "de")}
    assert overlap["en"]["de"] == pytest.approx(
        len(sets["en"] & sets["de"]) / len(sets["en"] | sets["de"])
    )
    assert overlap["en"]["en"] == 1.0
    result.save(tmp_path)
    from mlneurons.methods.probeless import FactNeurons

    back = FactNeurons.load(tmp_path)
    assert back.overlap() == overlap


def test_probe_fact_neurons_trace_cli(planted_dir, tmp_path, capsys):
    import json

    from mlneurons.interfaces.cli import main

    tiny_facts().to_mlama(tmp_path / "mlama")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "en.txt").write_text("fr1 en2 fr5 en3\nzh1 en2 en3\n")
    (corpus / "de.txt").write_text("en3 en4 en6\n")
    common = ["--model", str(planted_dir), "--facts", f"mlama:{tmp_path / 'mlama'}"]
    assert main(["probe", *common, "--confidence", "0.9", "--out", str(tmp_path / "p")]) == 0
    probe_json = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert {"languages", "relations", "p_at_1", "predictions", "jaccard", "model"} <= set(
        probe_json
    )
    assert probe_json["p_at_1"]["en"]["micro"] == pytest.approx(2 / 3)
    # --confidence reaches the result: recorded, and the intervals written at that level
    assert probe_json["settings"]["uncertainty"]["confidence"] == 0.9
    assert probe_json["p_at_1_intervals"]["en"]["micro"]["confidence"] == 0.9
    assert "en: P@1 macro" in capsys.readouterr().out
    assert (tmp_path / "p" / "jaccard.png").exists() and (tmp_path / "p" / "p_at_1.png").exists()

    assert (
        main(
            [
                "fact-neurons",
                *common,
                "--probe",
                str(tmp_path / "p"),
                "--k",
                "4",
                "--out",
                str(tmp_path / "n"),
            ]
        )
        == 0
    )
    neurons = json.loads((tmp_path / "n" / "fact_neurons.json").read_text())
    assert neurons["k"] == 4 and set(neurons["neurons"]["en"]) == {"f1", "f3"}
    assert neurons["settings"]["uncertainty"]["confidence"] == 0.95

    assert (
        main(
            [
                "trace",
                *common,
                "--probe",
                str(tmp_path / "p"),
                "--corpus",
                str(corpus),
                "--out",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    codes = json.loads((tmp_path / "t" / "trace.json").read_text())["codes"]
    assert codes["en"]["f1"] == 3  # fr1 and fr5 co-occur in the English text, predicted correctly
    assert codes["en"]["f2"] == 0  # zh1 without ja5, predicted wrongly
    assert codes["de"]["f4"] == 3  # en3 with "en4 en6"
    assert (tmp_path / "t" / "trace.png").exists()

    assert main(["probe", *common[:2], "--facts", "nonsense", "--out", str(tmp_path)]) == 2
    assert "--facts 'nonsense' is not valid; give 'builtin'" in capsys.readouterr().err


def test_fact_set_head_keeps_first_uuids_in_every_language():
    head = tiny_facts().head(2)
    assert sorted({(f.uuid, f.lang) for f in head.facts}) == [
        ("f1", "de"),
        ("f1", "en"),
        ("f2", "de"),
        ("f2", "en"),
    ]
    with pytest.raises(ValueError, match="at least 1"):
        tiny_facts().head(0)
