"""Data-parallel collector passes on 2 CPU processes (torchrun, gloo): equal to one process,
restarts after a dead worker without recomputing finished shards, a different number of
ranks on resume, and the offline merge of shard files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import LANGS, language_text

import mlneurons
from mlneurons import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.interfaces.cli import main as cli_main
from mlneurons.methods.lrp2 import LanguageVectors
from mlneurons.stats.activation import ActivationStats
from mlneurons.stats.collector import HookStats
from mlneurons.stats.distributed import merge_shards, shard_path
from mlneurons.world import World

HERE = Path(__file__).parent
OPTIONS = [
    "--tokens-per-language",
    "400",
    "--seq-len",
    "16",
    "--batch-size",
    "2",
    "--top-rate",
    "0.1",
]
N_SHARDS = 6
SHARDS = "lape-shards"  # the pass's directory inside --out


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist-corpus")
    for lang in LANGS:
        (folder / f"{lang}.txt").write_text(language_text(lang, 600) + "\n")
    return folder


@pytest.fixture(scope="module")
def reference(planted_model, corpus_dir):
    """The 1-process statistics of the same corpus and batches."""
    corpus = MultilingualCorpus.from_files(corpus_dir, seq_len=16, tokens_per_language=400)
    corpus = corpus.subset(list(LANGS))
    return mlneurons.collect_activation_stats(planted_model, corpus, batch_size=2, progress=False)


def lape_argv(planted_dir, corpus_dir, out, *extra):
    return [
        "lape",
        "--model",
        str(planted_dir),
        "--corpus",
        str(corpus_dir),
        *OPTIONS,
        "--languages",
        ",".join(LANGS),
        "--out",
        str(out),
        *extra,
    ]


def torchrun(nproc, argv, *, max_restarts=0, script=None, env=None):
    target = [str(HERE / script)] if script else ["-m", "mlneurons"]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        f"--max-restarts={max_restarts}",
        *target,
        *argv,
    ]
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(HERE),
        **(env or {}),
    }
    # GLOO_SOCKET_IFNAME=lo is not set: on this machine it made 2 of 8 gloo handshakes fail
    # ("connectFullMesh ... Connection refused"); the default interface passed 20 of 20
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)


def assert_same(stats, reference):
    assert stats.languages == reference.languages
    assert torch.equal(stats.token_counts, reference.token_counts)
    assert torch.equal(stats.fire_counts, reference.fire_counts)
    torch.testing.assert_close(
        stats.activation_sums, reference.activation_sums, rtol=1e-12, atol=1e-9
    )


def batches_per_rank(log):
    rows = [tuple(map(int, line.split())) for line in Path(log).read_text().splitlines()]
    return rows


def test_two_ranks_equal_one_process(planted_dir, corpus_dir, reference, tmp_path):
    out, log = tmp_path / "run", tmp_path / "batches.log"
    argv = lape_argv(planted_dir, corpus_dir, out, "--shards", str(N_SHARDS))
    done = torchrun(2, argv, script="crashing_cli.py", env={"BATCH_LOG": str(log)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same(ActivationStats.load(out), reference)
    manifest = json.loads((out / SHARDS / "manifest.json").read_text())
    assert manifest["n_shards"] == N_SHARDS and manifest["key"]["batch_size"] == 2
    per_rank = [sum(1 for _, rank, _ in batches_per_rank(log) if rank == r) for r in (0, 1)]
    total = (
        sum(int(HookStats.load(shard_path(out / SHARDS, s)).rows.sum()) for s in range(N_SHARDS))
        // 2
    )
    assert sum(per_rank) == total and abs(per_rank[0] - per_rank[1]) <= 2  # each rank half
    assert (out / "neurons.json").exists() and json.loads((out / "cfg.json").read_text())["lape"][
        "shards"
    ] == N_SHARDS


def test_dead_worker_resumes_without_recomputing_finished_shards(
    planted_dir, corpus_dir, reference, tmp_path
):
    out, log = tmp_path / "run", tmp_path / "batches.log"
    argv = lape_argv(planted_dir, corpus_dir, out, "--shards", str(N_SHARDS))
    crash = {"BATCH_LOG": str(log), "CRASH_AT": "1:9"}  # rank 1, 9th batch: its 2nd shard
    done = torchrun(2, argv, max_restarts=1, script="crashing_cli.py", env=crash)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same(ActivationStats.load(out), reference)
    rows = batches_per_rank(log)
    first = [r for r in rows if r[0] == 0]
    second = [r for r in rows if r[0] == 1]
    assert first and second  # it crashed once and restarted
    total = len(reference.languages) * 13  # 26 rows of 16 tokens per language, batches of 2
    recomputed = len(rows) - total
    # the first attempt finished rank 1's first shard (9 batches each) before dying in its
    # second: only the batches of unfinished shards run twice, never a finished shard
    print(f"recomputed batches: {recomputed} of {total}")
    assert 0 < recomputed < 2 * 9, recomputed
    assert len(second) < total


def test_crash_with_two_ranks_finish_with_one(planted_dir, corpus_dir, reference, tmp_path):
    out, log = tmp_path / "run", tmp_path / "batches.log"
    argv = lape_argv(planted_dir, corpus_dir, out, "--shards", str(N_SHARDS))
    crash = {"BATCH_LOG": str(log), "CRASH_AT": "1:12"}
    assert torchrun(2, argv, script="crashing_cli.py", env=crash).returncode != 0
    finished = {
        s: shard_path(out / SHARDS, s).stat().st_mtime_ns
        for s in range(N_SHARDS)
        if shard_path(out / SHARDS, s).exists()
        and HookStats.load_with_extra(shard_path(out / SHARDS, s))[1].get("finished")
    }
    assert finished  # some shards were done before the crash
    assert cli_main(argv) == 0  # one process finishes the rest
    assert_same(ActivationStats.load(out), reference)
    for shard, mtime in finished.items():  # finished shards were read, not recomputed
        assert shard_path(out / SHARDS, shard).stat().st_mtime_ns == mtime


def test_merge_offline_equals_the_pass_and_refuses_foreign_shards(
    planted_dir, corpus_dir, reference, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    argv = lape_argv(planted_dir, corpus_dir, out, "--shards", str(N_SHARDS))
    # a Slurm job array: two processes that cannot reach each other, one shard set each
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.delenv("MASTER_ADDR", raising=False)
        assert cli_main(argv) == 0
    assert not (out / "stats.safetensors").exists()
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert cli_main(["merge", str(out / SHARDS)]) == 0
    assert_same(ActivationStats.load(out / SHARDS), reference)

    other = tmp_path / "other"  # the same pass with another batch size: another key
    argv_other = lape_argv(planted_dir, corpus_dir, other, "--shards", str(N_SHARDS))
    argv_other[argv_other.index("--batch-size") + 1] = "4"
    assert cli_main(argv_other) == 0
    with pytest.raises(UserError, match="another pass"):
        merge_shards(out / SHARDS, other / SHARDS)
    with pytest.raises(UserError, match="shard 0 appears twice"):
        merge_shards(out / SHARDS, out / SHARDS)
    shard_path(out / SHARDS, 3).unlink()
    with pytest.raises(UserError, match=r"shards \[3\] of 6 are missing"):
        merge_shards(out / SHARDS)


def test_shards_go_round_robin_and_follow_the_world_size():
    assert World(0, 2).shards(6) == [0, 2, 4] and World(1, 2).shards(6) == [1, 3, 5]
    assert World(0, 1).shards(3) == [0, 1, 2] and World(2, 3).shards(6) == [2, 5]


def test_probe_steer_and_ablate_split_their_work_across_ranks(planted_dir, corpus_dir, tmp_path):
    from tiny import tiny_facts

    facts = f"mlama:{tiny_facts().to_mlama(tmp_path / 'mlama')}"
    probe = ["probe", "--model", str(planted_dir), "--facts", facts, "--batch-size", "4"]
    assert cli_main([*probe, "--out", str(tmp_path / "one")]) == 0
    done = torchrun(2, [*probe, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "probe.json").read_text()) for d in ("one", "two"))
    assert two["predictions"] == one["predictions"] and two["p_at_1"] == one["p_at_1"]
    lrp2 = ["lrp2", *probe[1:], "--layers", "0,1", "--k", "3", "--sentences", "6"]
    assert cli_main([*lrp2, "--out", str(tmp_path / "l1")]) == 0
    done = torchrun(2, [*lrp2, "--out", str(tmp_path / "l2")])
    assert done.returncode == 0, done.stderr[-3000:]
    l1, l2 = (json.loads((tmp_path / d / "lrp2.json").read_text()) for d in ("l1", "l2"))
    assert l2["selected"] == l1["selected"] and l2["test_p_at_1"] == l1["test_p_at_1"]
    assert (tmp_path / "l2" / "vector-shards" / "manifest.json").exists()
    v1, v2 = (LanguageVectors.load(tmp_path / d) for d in ("l1", "l2"))
    torch.testing.assert_close(v2.vectors, v1.vectors, rtol=1e-6, atol=1e-6)
    fact_neurons = ["fact-neurons", *probe[1:], "--k", "3"]
    assert cli_main([*fact_neurons, "--out", str(tmp_path / "f1")]) == 0
    done = torchrun(2, [*fact_neurons, "--out", str(tmp_path / "f2")])
    assert done.returncode == 0, done.stderr[-3000:]
    f1, f2 = (json.loads((tmp_path / d / "fact_neurons.json").read_text()) for d in ("f1", "f2"))
    assert f2["neurons"] == f1["neurons"] and f2["overlap"] == f1["overlap"]

    neurons = tmp_path / "neurons"
    assert cli_main(lape_argv(planted_dir, corpus_dir, neurons)) == 0
    steer = [
        "steer",
        "--neurons",
        str(neurons),
        "--model",
        str(planted_dir),
        "--source",
        "fr",
        "--target",
        "zh",
        "--n-questions",
        "5",
        "--max-new-tokens",
        "2",
    ]
    assert cli_main([*steer, "--out", str(tmp_path / "s1")]) == 0
    done = torchrun(2, [*steer, "--out", str(tmp_path / "s2")])
    assert done.returncode == 0, done.stderr[-3000:]
    s1, s2 = (json.loads((tmp_path / d / "steering.json").read_text()) for d in ("s1", "s2"))
    assert s2["samples"] == s1["samples"] and len(s2["samples"]) == 5
    assert s2["accuracy_after"] == s1["accuracy_after"]

    ablate = [
        "ablate",
        "--neurons",
        str(neurons),
        "--model",
        str(planted_dir),
        "--languages",
        "en,fr",
        "--tokens-per-language",
        "100",
        "--seq-len",
        "10",
    ]  # 10 rows per language: the least that gets bootstrap intervals
    assert cli_main([*ablate, "--out", str(tmp_path / "a1")]) == 0
    done = torchrun(2, [*ablate, "--out", str(tmp_path / "a2")])
    assert done.returncode == 0, done.stderr[-3000:]
    a1, a2 = (json.loads((tmp_path / d / "ppl_matrix.json").read_text()) for d in ("a1", "a2"))
    # every row is computed on one rank and exchanged: the same numbers, bit for bit
    assert a2["row_nll"] == a1["row_nll"] and a2["intervals"] == a1["intervals"]
    for kind in ("baseline", "deactivated", "random_control", "matched_control"):
        assert a2[kind] == a1[kind], kind


def test_language_vectors_over_shards_equal_one_pass(planted_model, tmp_path):
    from test_stats import _token_corpus

    from mlneurons.methods.lrp2 import language_vectors

    corpus, _ = _token_corpus(planted_model, n_words=300, seq_len=16)
    options = dict(max_sentences=30, max_tokens=8, batch_size=4, progress=False)
    whole = language_vectors(planted_model, corpus, **options)
    sharded = language_vectors(planted_model, corpus, shards=tmp_path / "v", n_shards=3, **options)
    assert sharded.sentences == whole.sentences
    torch.testing.assert_close(sharded.vectors, whole.vectors, rtol=1e-6, atol=1e-6)
    assert json.loads((tmp_path / "v" / "manifest.json").read_text())["n_shards"] == 3


def test_each_replica_gets_its_own_gpus():
    from mlneurons.models.loading import replica_placement

    memory = {0: 10, 1: 11, 2: 12, 3: 13}.__getitem__
    assert replica_placement(0, 2, n_gpus=4, memory=memory) == {
        "device_map": "balanced",
        "max_memory": {0: 10, 1: 11},
    }
    assert replica_placement(1, 2, n_gpus=4, memory=memory)["max_memory"] == {2: 12, 3: 13}
    assert replica_placement(3, 1, n_gpus=4, memory=memory)["max_memory"] == {3: 13}
    with pytest.raises(UserError, match="local rank 2 needs GPUs 4..5 but this node has 4"):
        replica_placement(2, 2, n_gpus=4, memory=memory)


def test_counters_live_on_the_device_of_their_layer():
    """A model split across devices: each point's running totals stay on its layer's device
    (``meta`` stands in for a second GPU), in 64 bits."""
    from mlneurons.stats.collector import Accumulator, Labelled

    cpu = torch.device("cpu")
    acc = Accumulator(["a", "b"], 1, fires=True, squares=False, dtype=torch.float64, device=cpu)
    acc.stop_early = False
    acc.start(Labelled(torch.zeros(1, 3, dtype=torch.long), 0))
    acc.add("a", torch.ones(1, 3, 4, dtype=torch.bfloat16))
    acc.add("b", torch.ones(1, 3, 4, dtype=torch.bfloat16, device="meta"))
    assert acc.totals["sums"]["a"].device.type == "cpu"
    assert acc.totals["sums"]["b"].device.type == "meta"
    assert acc.totals["sums"]["a"].dtype == torch.float64
    assert acc.totals["fires"]["b"].dtype == torch.int64
    assert acc.totals["sums"]["a"].tolist() == [[3.0] * 4]


def test_bfloat16_statistics_accumulate_in_64_bits(planted_dir, corpus_dir):
    model = mlneurons.load_model(str(planted_dir), device="cpu", dtype=torch.bfloat16)
    corpus = MultilingualCorpus.from_files(corpus_dir, seq_len=16, tokens_per_language=100)
    stats = mlneurons.collect_activation_stats(model, corpus, batch_size=4, progress=False)
    assert stats.activation_sums.dtype == torch.float64 and stats.fire_counts.dtype == torch.int64
    assert stats.model["dtype"] == "bfloat16" and stats.token_counts.tolist() == [90] * 4


def test_rows_are_tokenised_once_into_a_memory_map(
    planted_model, corpus_dir, tmp_path, monkeypatch
):
    tokenizer = planted_model.tokenizer
    corpus = MultilingualCorpus.from_files(corpus_dir, seq_len=16, tokens_per_language=400)
    plain = torch.cat(list(corpus.rows("fr", tokenizer, batch_size=3)))
    cached = torch.cat(list(corpus.rows("fr", tokenizer, batch_size=3, cache=tmp_path)))
    assert torch.equal(cached, plain) and cached.dtype == torch.long
    assert len(list(tmp_path.glob("*-fr.int32"))) == 1

    def no_tokenising(*args, **kwargs):
        raise AssertionError("tokenised again")

    monkeypatch.setattr(MultilingualCorpus, "token_stream", no_tokenising)
    again = torch.cat(list(corpus.rows("fr", tokenizer, batch_size=5, cache=tmp_path)))
    assert torch.equal(again, plain)  # read from the map: no tokenising
    other = MultilingualCorpus.from_files(corpus_dir, seq_len=12, tokens_per_language=400)
    with pytest.raises(AssertionError, match="tokenised again"):  # another corpus key
        list(other.rows("fr", tokenizer, cache=tmp_path))


def test_commands_that_do_not_split_their_work_run_on_rank_0_only(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    out = tmp_path / "never"
    argv = ["ablate", "--neurons", str(tmp_path / "none"), "--out", str(out)]
    assert cli_main(argv) == 0 and not out.exists()
    assert "rank 1: mlneurons ablate runs on rank 0 only" in capsys.readouterr().err
    probe = ["probe", "--facts", "builtin", "--out", str(out)]
    assert cli_main(probe) == 0 and not out.exists()  # no rendezvous: nothing to gather
    monkeypatch.setenv("RANK", "0")
    assert cli_main(argv) == 2  # rank 0 does the work (here: reports the missing neurons)
