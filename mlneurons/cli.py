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

DEFAULT_TOKENS_PER_LANGUAGE = 12_288
"""Default LAPE budget: about 5 minutes for 9 languages on 2 CPU cores with the built-in model."""


class UserError(Exception):
    """A mistake in the command line; printed without a traceback."""


def _languages(text: str) -> list[str]:
    langs = [code.strip() for code in text.split(",") if code.strip()]
    if not langs:
        raise argparse.ArgumentTypeError("give at least one language, e.g. en,fr,zh")
    return langs


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
    from mlneurons.stats import ActivationStats, collect_activation_stats

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
    ActivationStats.load(out / "stats.safetensors")  # the file reads back
    counts = ", ".join(f"{lang} {n}" for lang, n in neurons.counts().items())
    print(f"neurons per language: {counts}")
    print(
        f"wrote {out}/: stats.safetensors neurons.json summary.json neurons_per_layer.png overlap.png "
        f"({summary['wall_time_s']} s)"
    )
    return out


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
        type=_languages,
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
