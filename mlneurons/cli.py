"""Command line: ``mlneurons lape ...``.

User mistakes (unknown language, missing file, bad option) print one line and
exit with status 2; they never show a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULT_TOKENS_PER_LANGUAGE = 12_288
"""Default LAPE budget: about 5 minutes for 9 languages on 2 CPU cores with the built-in model."""


class UserError(Exception):
    """A mistake in the command line; printed without a traceback."""


def _codes(text: str) -> list[str]:
    """A comma-separated list of codes (languages, relations)."""
    codes = [code.strip() for code in text.split(",") if code.strip()]
    if not codes:
        raise argparse.ArgumentTypeError(f"give at least one code, e.g. en,fr,zh; got {text!r}")
    return codes


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="gemma-3-270m",
        help="built-in 'gemma-3-270m' (default), a local HF directory, or a hub name",
    )
    parser.add_argument(
        "--device", default=None, help="torch device (default: cuda if available, else cpu)"
    )


def cmd_lape(args: argparse.Namespace) -> Path:
    """Find LAPE language-specific neurons and write statistics, neurons, summary and plots."""
    from mlneurons import lape
    from mlneurons.corpus import MultilingualCorpus
    from mlneurons.models import load_model
    from mlneurons.plots import plot_layer_distribution, plot_overlap, save_figure
    from mlneurons.stats import collect_activation_stats

    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.corpus == "builtin":
        corpus = MultilingualCorpus.builtin(
            args.languages, seq_len=args.seq_len, tokens_per_language=args.tokens_per_language
        )
    else:
        corpus = MultilingualCorpus.from_files(
            args.corpus, seq_len=args.seq_len, tokens_per_language=args.tokens_per_language
        ).subset(args.languages)
    if len(corpus.languages) < 2:
        raise UserError(f"LAPE compares languages: give at least two, got {corpus.languages}")
    print(f"loading model {args.model} ...", file=sys.stderr)
    model = load_model(args.model, device=args.device)
    checkpoint = out / "stats.checkpoint.safetensors"
    stats = collect_activation_stats(
        model, corpus, batch_size=args.batch_size, checkpoint=checkpoint
    )
    stats.save(out / "stats.safetensors")
    checkpoint.unlink(missing_ok=True)
    neurons = lape.select(
        stats.activation_probs,
        stats.languages,
        top_rate=args.top_rate,
        filter_rate=args.filter_rate,
        activation_bar_ratio=args.activation_bar_ratio,
        model=stats.model,
    )
    neurons.save(out)
    per_layer = neurons.counts_per_layer()
    summary = {
        "model": stats.model,
        "languages": stats.languages,
        "tokens_per_language": dict(zip(stats.languages, stats.token_counts.tolist())),
        "corpus": stats.corpus,
        "constants": neurons.constants,
        "neurons_per_language": neurons.counts(),
        "neurons_per_layer": {
            lang: per_layer[i].tolist() for i, lang in enumerate(neurons.languages)
        },
        "wall_time_s": round(time.time() - start, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    name = stats.model.get("name", "")
    save_figure(
        plot_layer_distribution(neurons, title=f"LAPE neurons per layer: {name}"),
        out / "neurons_per_layer.png",
    )
    save_figure(plot_overlap(neurons, title=f"Shared LAPE neurons: {name}"), out / "overlap.png")
    counts = ", ".join(f"{lang} {n}" for lang, n in neurons.counts().items())
    print(f"neurons per language: {counts}")
    print(
        f"wrote {out}/: stats.safetensors neurons.json summary.json neurons_per_layer.png overlap.png "
        f"({summary['wall_time_s']} s)"
    )
    return out


def _load_neurons_and_model(args: argparse.Namespace) -> tuple[Any, Any]:
    from mlneurons.lape import LanguageNeurons
    from mlneurons.models import check_same_model, load_model

    neurons = LanguageNeurons.load(args.neurons)
    name = args.model or neurons.model.get("name") or "gemma-3-270m"
    print(f"loading model {name} ...", file=sys.stderr)
    model = load_model(name, device=args.device)
    check_same_model(neurons.model, model, what=f"neurons in {args.neurons}")
    return neurons, model


def cmd_ablate(args: argparse.Namespace) -> Path:
    """Perplexity matrix: deactivate each language's neurons, evaluate every language."""
    from mlneurons.corpus import MultilingualCorpus
    from mlneurons.evaluation import perplexity_matrix
    from mlneurons.plots import plot_perplexity_matrix, save_figure

    neurons, model = _load_neurons_and_model(args)
    languages = args.languages or neurons.languages
    corpus = MultilingualCorpus.builtin(
        languages,
        split="heldout",
        seq_len=args.seq_len,
        tokens_per_language=args.tokens_per_language,
    )
    matrix = perplexity_matrix(
        model,
        neurons,
        corpus,
        random_control=not args.no_random_control,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    out = Path(args.out)
    matrix.save(out)
    name = matrix.model.get("name", "")
    save_figure(
        plot_perplexity_matrix(matrix, title=f"Perplexity change: {name}"), out / "ppl_matrix.png"
    )
    dominant = [lang for lang, ok in matrix.diagonal_dominance().items() if ok]
    print("baseline perplexity: " + ", ".join(f"{k} {v:.1f}" for k, v in matrix.baseline.items()))
    print(f"own language hit hardest for {len(dominant)}/{len(languages)}: {', '.join(dominant)}")
    print(f"wrote {out}/: ppl_matrix.json ppl_matrix.png")
    return out


def cmd_steer(args: argparse.Namespace) -> Path:
    """Output-language steering: activate the target language's neurons, identify answer languages."""
    from mlneurons.interventions import activate, deactivate
    from mlneurons.langid import load_questions
    from mlneurons.models import check_same_model
    from mlneurons.stats import ActivationStats
    from mlneurons.steering import steer

    neurons, model = _load_neurons_and_model(args)
    stats_path = Path(args.stats) if args.stats else Path(args.neurons) / "stats.safetensors"
    stats = ActivationStats.load(stats_path)
    check_same_model(stats.model, model, what=str(stats_path))
    for lang in (args.source, args.target):
        neurons[lang]  # unknown languages raise, naming the available ones
    values = stats.mean_activation(args.target) * args.scale
    intervention = activate(neurons[args.target], values, model=model)
    if args.deactivate_source:  # neurons shared with the target stay activated
        source_only = neurons.difference(args.source, args.target)
        intervention = intervention + deactivate(source_only, model=model)
    questions = load_questions(args.source)[: args.n_questions]
    result = steer(
        model,
        questions,
        source=args.source,
        target=args.target,
        intervention=intervention,
        languages=neurons.languages,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    result.settings.update(
        scale=args.scale, deactivate_source=args.deactivate_source, stats=str(stats_path)
    )
    out = Path(args.out)
    result.save(out)
    print(
        f"answers in {args.target}: {result.accuracy_before:.0%} before, "
        f"{result.accuracy_after:.0%} after; in {args.source}: "
        f"{result.source_rate('before'):.0%} before, {result.source_rate('after'):.0%} after"
    )
    print(f"wrote {out}/steering.json")
    return out


def _load_facts(args: argparse.Namespace) -> Any:
    """The fact set of ``--facts`` (``builtin`` or ``mlama:DIR``), restricted as asked."""
    from mlneurons.facts import FactSet

    if args.facts == "builtin":
        facts = FactSet.builtin(languages=args.languages, relations=args.relations)
    elif args.facts.startswith("mlama:"):
        facts = FactSet.from_mlama(
            args.facts[len("mlama:") :], languages=args.languages, relations=args.relations
        )
    else:
        raise UserError(f"--facts must be 'builtin' or 'mlama:DIR', got {args.facts!r}")
    if args.max_facts_per_relation is not None and args.max_facts_per_relation < 1:
        raise UserError(
            f"--max-facts-per-relation must be at least 1, got {args.max_facts_per_relation}"
        )
    return facts.head(args.max_facts_per_relation) if args.max_facts_per_relation else facts


def _facts_model_probe(args: argparse.Namespace) -> tuple[Any, Any, Path, Any]:
    """The fact set, the model, the output directory and the probing result of a fact command."""
    from mlneurons.models import load_model

    facts = _load_facts(args)
    model = load_model(args.model, device=args.device)
    out = Path(args.out)
    return facts, model, out, _probe_or_load(args, model, facts, out)


def _probe_or_load(args: argparse.Namespace, model: Any, facts: Any, out: Path) -> Any:
    """Probe the facts, or read ``probe.json`` from ``--probe DIR`` when given."""
    from mlneurons.models import check_same_model
    from mlneurons.plots import plot_heatmap, plot_p_at_1, save_figure
    from mlneurons.probing import ProbeResult, probe

    if args.probe:
        result = ProbeResult.load(args.probe)
        check_same_model(result.model, model, what=f"{args.probe}/probe.json")
        return result
    if args.method == "zhao":
        from mlneurons.models import is_masked_lm
        from mlneurons.probing_mlm import zhao_match

        if not is_masked_lm(model):
            raise UserError("--method zhao needs a masked LM (BERT, XLM-R); use --method typed")
        result = zhao_match(model, facts, batch_size=args.batch_size)
    else:
        result = probe(model, facts, batch_size=args.batch_size)
    result.save(out)
    name = result.model.get("name", "")
    save_figure(plot_p_at_1(result, title=f"P@1: {name}"), out / "p_at_1.png")
    save_figure(
        plot_heatmap(
            result.jaccard(),
            result.languages,
            colorbar="Jaccard",
            title=f"Shared correct facts (Jaccard): {name}",
        ),
        out / "jaccard.png",
    )
    return result


def cmd_probe(args: argparse.Namespace) -> Path:
    """Factual probing: P@1 per language and relation, Jaccard of correct facts."""

    facts, model, out, result = _facts_model_probe(args)
    for lang, row in result.p_at_1().items():
        print(f"{lang}: P@1 macro {row['macro']:.1%}, micro {row['micro']:.1%}")
    print(f"wrote {out}/: probe.json p_at_1.png jaccard.png")
    return out


def cmd_fact_neurons(args: argparse.Namespace) -> Path:
    """PROBELESS fact neurons of correctly predicted facts and their overlap across languages."""
    from mlneurons.plots import plot_heatmap, save_figure
    from mlneurons.probeless import fact_neurons

    facts, model, out, result = _facts_model_probe(args)
    neurons = fact_neurons(model, facts, result.correct_map(), k=args.k, batch_size=args.batch_size)
    neurons.save(out)
    save_figure(
        plot_heatmap(
            neurons.overlap(),
            neurons.languages,
            colorbar="mean Jaccard of top-k",
            title=f"PROBELESS fact-neuron overlap (k={args.k})",
        ),
        out / "fact_neuron_overlap.png",
    )
    print(f"wrote {out}/: fact_neurons.json fact_neuron_overlap.png")
    return out


def cmd_trace(args: argparse.Namespace) -> Path:
    """Knowledge tracing: was each fact in the language's text, and is it predicted?"""
    from mlneurons.corpus import MultilingualCorpus, available_languages
    from mlneurons.plots import save_figure
    from mlneurons.tracing import plot_tracing, trace

    facts, model, out, result = _facts_model_probe(args)
    if args.corpus == "builtin":  # languages without built-in text get code -1
        with_text = [lang for lang in facts.languages if lang in available_languages()]
        corpus = MultilingualCorpus.builtin(with_text, split="all")
    else:
        corpus = MultilingualCorpus.from_files(args.corpus)
    traced = trace(
        facts, corpus, model.tokenizer, result.correct_map(), chunk_tokens=args.chunk_tokens
    )
    traced.model = result.model
    traced.save(out)
    save_figure(plot_tracing(traced), out / "trace.png")
    for lang, row in traced.breakdown().items():
        print(lang, {k: v for k, v in row.items() if v})
    print(f"wrote {out}/: trace.json trace.png")
    return out


def cmd_lrp2(args: argparse.Namespace) -> Path:
    """LRP2: language vectors, per-language (LIRP, LSRP) chosen on dev facts, test P@1 and Trans."""
    from mlneurons.corpus import MultilingualCorpus, available_languages
    from mlneurons.lrp2 import evaluate_lrp2, language_vectors
    from mlneurons.models import load_model
    from mlneurons.plots import plot_lrp2_grid, save_figure

    facts = _load_facts(args)
    if args.pivot not in facts.languages:
        raise UserError(f"pivot {args.pivot!r} is not among the fact languages {facts.languages}")
    no_text = [lang for lang in facts.languages if lang not in available_languages()]
    if no_text:
        raise UserError(
            f"no built-in text for the language vectors of {no_text}; choose --languages among "
            f"{available_languages()}"
        )
    model = load_model(args.model, device=args.device)
    out = Path(args.out)
    corpus = MultilingualCorpus.builtin(facts.languages, split="all")
    vectors = language_vectors(model, corpus, max_sentences=args.sentences)
    vectors.save(out)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    result = evaluate_lrp2(
        model, facts, vectors, pivot=args.pivot, layers=layers, k=args.k, batch_size=args.batch_size
    )
    result.save(out)
    for lang in result.languages:
        save_figure(plot_lrp2_grid(result, lang), out / f"lrp2_grid_{lang}.png")
        p1, trans = result.test_p_at_1[lang], result.trans[lang]
        print(
            f"{lang}: layers {result.selected[lang]}, test P@1 {p1['before']:.1%} -> "
            f"{p1['after']:.1%}, Trans {trans['before']:.2f} -> {trans['after']:.2f}"
        )
    print(f"wrote {out}/: lrp2.json language_vectors.safetensors lrp2_grid_*.png")
    return out


def _add_fact_options(parser: argparse.ArgumentParser, *, reuse: bool) -> None:
    _add_model_options(parser)
    parser.add_argument("--facts", default="builtin", help="'builtin' (default) or mlama:DIR")
    parser.add_argument(
        "--languages",
        type=_codes,
        default=None,
        help="comma-separated languages (default: all of the fact set)",
    )
    parser.add_argument(
        "--relations",
        type=_codes,
        default=None,
        help="comma-separated relations, e.g. P36,P37 (default: all)",
    )
    parser.add_argument(
        "--max-facts-per-relation",
        type=int,
        default=None,
        help="probe only the first N facts (by uuid) of each relation",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="sentences per forward (default 32)"
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.set_defaults(probe=None, method="typed")  # options only some subcommands have
    if reuse:
        parser.add_argument(
            "--probe",
            default=None,
            help="reuse probe.json from this directory instead of probing again",
        )


def _add_neuron_options(parser: argparse.ArgumentParser) -> None:
    _add_model_options(parser)
    parser.set_defaults(model=None)  # default: the model the neurons were selected on
    parser.add_argument("--neurons", required=True, help="directory written by `mlneurons lape`")


def build_parser() -> argparse.ArgumentParser:
    from mlneurons.corpus import DEFAULT_LANGUAGES

    parser = argparse.ArgumentParser(
        prog="mlneurons", description="Neuron-level study of multilingual language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lape", help="find language-specific neurons (LAPE, Tang et al. 2024)")
    _add_model_options(p)
    p.add_argument(
        "--languages",
        type=_codes,
        default=list(DEFAULT_LANGUAGES),
        help=f"comma-separated codes (default: {','.join(DEFAULT_LANGUAGES)})",
    )
    p.add_argument(
        "--corpus",
        default="builtin",
        help="'builtin' (default) or a folder of {lang}.txt files or {lang}/ folders",
    )
    p.add_argument(
        "--tokens-per-language",
        type=int,
        default=DEFAULT_TOKENS_PER_LANGUAGE,
        help=f"token budget per language (default {DEFAULT_TOKENS_PER_LANGUAGE})",
    )
    p.add_argument("--seq-len", type=int, default=256, help="tokens per packed row (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default 8)")
    p.add_argument("--top-rate", type=float, default=0.01, help="LAPE top_rate (default 0.01)")
    p.add_argument(
        "--filter-rate", type=float, default=0.95, help="LAPE filter_rate (default 0.95)"
    )
    p.add_argument(
        "--activation-bar-ratio",
        type=float,
        default=0.95,
        help="LAPE activation_bar_ratio (default 0.95)",
    )
    p.add_argument("--out", default="runs/lape", help="output directory (default runs/lape)")
    p.set_defaults(run=cmd_lape)

    p = sub.add_parser("ablate", help="perplexity matrix with language neurons deactivated")
    _add_neuron_options(p)
    p.add_argument(
        "--languages",
        type=_codes,
        default=None,
        help="languages to deactivate and evaluate (default: those of --neurons)",
    )
    p.add_argument(
        "--tokens-per-language",
        type=int,
        default=1024,
        help="held-out tokens per evaluated language (default 1024)",
    )
    p.add_argument("--seq-len", type=int, default=256, help="tokens per row (default 256)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random control (default 0)")
    p.add_argument("--no-random-control", action="store_true", help="skip the random controls")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=cmd_ablate)

    p = sub.add_parser("steer", help="steer the output language by activating language neurons")
    _add_neuron_options(p)
    p.add_argument(
        "--stats",
        default=None,
        help="statistics for the activation values (default: NEURONS/stats.safetensors)",
    )
    p.add_argument("--source", required=True, help="language of the questions, e.g. es")
    p.add_argument("--target", required=True, help="language to steer to, e.g. zh")
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the target language's mean activations (default 1)",
    )
    p.add_argument(
        "--deactivate-source",
        action="store_true",
        help="also deactivate the source language's neurons",
    )
    p.add_argument("--n-questions", type=int, default=24, help="questions to ask (default 24)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="answer length (default 32)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per batch (default 8)")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=cmd_steer)

    p = sub.add_parser("probe", help="factual probing across languages: P@1 and Jaccard")
    _add_fact_options(p, reuse=False)
    p.add_argument(
        "--method",
        choices=["typed", "zhao"],
        default="typed",
        help="typed: rank the typed candidates (default); zhao: masked LMs only, "
        "full-match greedy decoding without candidates (Zhao et al.)",
    )
    p.set_defaults(run=cmd_probe)

    p = sub.add_parser("fact-neurons", help="PROBELESS fact neurons and their language overlap")
    _add_fact_options(p, reuse=True)
    p.add_argument("--k", type=int, default=50, help="neurons per fact (default 50)")
    p.set_defaults(run=cmd_fact_neurons)

    p = sub.add_parser("trace", help="knowledge tracing: fact presence in text x correctness")
    _add_fact_options(p, reuse=True)
    p.add_argument(
        "--corpus", default="builtin", help="'builtin' (default) or a folder of {lang}.txt"
    )
    p.add_argument(
        "--chunk-tokens", type=int, default=512, help="co-occurrence window (default 512)"
    )
    p.set_defaults(run=cmd_trace)

    p = sub.add_parser("lrp2", help="LRP2 projection: does moving a language into English help?")
    _add_fact_options(p, reuse=False)
    p.add_argument("--pivot", default="en", help="language projected into (default en)")
    p.add_argument(
        "--layers",
        default=None,
        help="comma-separated candidate layers of the grid (default: every third block)",
    )
    p.add_argument(
        "--sentences",
        type=int,
        default=200,
        help="built-in sentences per language for the language vectors (default 200)",
    )
    p.add_argument("--k", type=int, default=50, help="PROBELESS neurons per fact (default 50)")
    p.set_defaults(run=cmd_lrp2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], object] = args.run
    try:
        run(args)
    except (UserError, ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"mlneurons {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"mlneurons {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
