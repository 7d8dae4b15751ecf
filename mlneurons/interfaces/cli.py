"""Command line: ``mlneurons lape ...``, ``mlneurons report``, ``mlneurons app``.

User mistakes (a value out of range, an unknown language or model, a missing file)
are caught before any long computation: one line naming the value and the valid
choices, exit status 2, no traceback. Every other exception is a bug or a failure
of the environment: it keeps its traceback (exit status 1).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlneurons.errors import FastPathMismatch, UserError


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (no usage block)."""

    def error(self, message: str) -> Any:
        self.exit(2, f"{self.prog}: error: {message}\n")


@contextmanager
def _user_input() -> Iterator[None]:
    """Report errors of reading what the user named (files, languages) as user mistakes.

    Only around reading and checking inputs, never around a computation: an error
    inside a forward pass is a bug and keeps its traceback.
    """
    try:
        yield
    except (ValueError, KeyError, FileNotFoundError) as exc:
        if isinstance(exc, UserError):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise UserError(str(message)) from exc


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an integer >= {minimum}; valid: {minimum}, {minimum + 1}, ..."
            )
        return value

    return parse


_positive = _at_least(1)


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; valid: 1..65535")
    return value


def _rate(text: str) -> float:
    """An argparse type: a fraction in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate in (0, 1], e.g. 0.01")
    return value


def _layers(text: str) -> list[int]:
    """An argparse type: comma-separated layer numbers, e.g. ``3,6,9``."""
    layers = []
    for part in text.split(","):
        if not part.strip().isdigit():
            raise argparse.ArgumentTypeError(
                f"{part.strip()!r} in {text!r} is not a layer number; valid: comma-separated "
                "integers >= 0, e.g. 3,6,9"
            )
        layers.append(int(part))
    return layers


def _device(text: str) -> str:
    """An argparse type: a torch device this machine has."""
    from mlneurons.errors import check_device

    try:
        return check_device(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _model(text: str) -> str:
    """An argparse type: a built-in model, a local directory or a hub name (checked cheaply)."""
    from mlneurons.models.loading import BUILTIN_MODELS, resolve_model_path

    if text not in BUILTIN_MODELS:  # resolving a built-in name would load it
        try:
            resolve_model_path(text)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _codes(text: str) -> list[str]:
    """A comma-separated list of codes (languages, relations)."""
    codes = [code.strip() for code in text.split(",") if code.strip()]
    if not codes:
        raise argparse.ArgumentTypeError(f"give at least one code, e.g. en,fr,zh; got {text!r}")
    return codes


def _floats(text: str) -> list[float]:
    """A comma-separated list of numbers."""
    try:
        return [float(x) for x in _codes(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"give numbers such as 0.5,1,2; got {text!r}") from None


def _optional_float(text: str) -> float | None:
    """A number, or ``none``."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a number or 'none'; got {text!r}") from None


def _option(parser: argparse.ArgumentParser, config: Any, flag: str, help: str, **kw: Any) -> None:
    """Add ``flag`` with the default of the config field of the same name (one place for
    every default); the help says the default unless it already does."""
    default = getattr(config, kw.pop("field", None) or flag[2:].replace("-", "_"))
    if isinstance(default, bool):
        parser.add_argument(flag, action="store_true", help=help)
        return
    if default not in (None, "") and "(default" not in help:
        help += f" (default {default:g})" if isinstance(default, float) else f" (default {default})"
    parser.add_argument(flag, default=default, help=help, **kw)


def _add_model_options(parser: argparse.ArgumentParser, config: Any = None) -> None:
    from mlneurons.config import Config

    _option(
        parser,
        config or Config,
        "--model",
        "built-in 'gemma-3-270m' (default), a local HF directory, or a hub name",
        type=_model,
    )
    _option(
        parser,
        Config,
        "--device",
        "torch device (default: cuda if available, else cpu)",
        type=_device,
    )
    _option(parser, Config, "--dtype", "parameter dtype", choices=Config.DTYPES)
    replica = "GPUs per model replica under torchrun: rank r of a node takes GPUs r*K..r*K+K-1 "
    _option(
        parser,
        Config,
        "--gpus-per-replica",
        replica + "(device_map='balanced'), for models larger than one GPU",
        type=_positive,
    )


def cmd_lape(args: argparse.Namespace) -> Path:
    """Find LAPE language-specific neurons and write statistics, neurons, summary and plots.

    With ``--stats FILE`` the saved statistics are re-used: no model, no forward pass.
    """
    from mlneurons.config import LapeConfig
    from mlneurons.data.builtin_text import normalize_language
    from mlneurons.data.corpus import DEFAULT_LANGUAGES, MultilingualCorpus
    from mlneurons.interfaces.plots import plot_layer_distribution, plot_overlap, save_figure
    from mlneurons.methods import lape
    from mlneurons.results import write_json
    from mlneurons.stats.activation import STATS_FILE, ActivationStats, collect_activation_stats
    from mlneurons.world import World

    cfg = LapeConfig.from_args(args)
    start = time.time()
    out = Path(args.out)
    if cfg.stats:
        with _user_input():
            stats = ActivationStats.load(cfg.stats)
            if cfg.languages:
                stats = stats.select(
                    _unique([normalize_language(code, stats.languages) for code in cfg.languages])
                )
        if len(stats.languages) < 2:
            raise UserError(f"LAPE compares languages: give at least two, got {stats.languages}")
        out.mkdir(parents=True, exist_ok=True)
        source = Path(cfg.stats)
        source = source if source.suffix == ".safetensors" else source / STATS_FILE
        if source.resolve() != (out / STATS_FILE).resolve():
            stats.save(out / STATS_FILE)
    else:
        languages = list(cfg.languages or DEFAULT_LANGUAGES)
        options = dict(seq_len=cfg.seq_len, tokens_per_language=cfg.tokens_per_language)
        if cfg.corpus == "builtin":
            corpus = MultilingualCorpus.builtin(languages, **options)
        else:
            corpus = MultilingualCorpus.from_files(cfg.corpus, **options).subset(languages)
        if len(corpus.languages) < 2:
            raise UserError(f"LAPE compares languages: give at least two, got {corpus.languages}")
        world = World.from_env()
        if world.size > 1 and args.device is None and _cuda_available():
            args.device = f"cuda:{world.local_rank}"  # one GPU per rank
        model = _command_model(args)
        out.mkdir(parents=True, exist_ok=True)
        if world.size > 1 or cfg.shards:  # data parallel: logical shards in out/shards/
            stats = collect_activation_stats(
                model,
                corpus,
                batch_size=cfg.batch_size,
                shards=out / LAPE_SHARDS,
                n_shards=cfg.shards,
            )
            if stats is None:
                print(
                    f"rank {world.rank}: shards written; once every rank is done, add them "
                    f"with: mlneurons merge {out / LAPE_SHARDS}"
                )
                return out
            if world.rank != 0:
                return out  # rank 0 writes the results
        else:
            checkpoint = out / "stats.checkpoint.safetensors"
            stats = collect_activation_stats(
                model, corpus, batch_size=cfg.batch_size, checkpoint=checkpoint
            )
            checkpoint.unlink(missing_ok=True)
        stats.save(out / STATS_FILE)
    neurons = lape.select(
        stats,
        top_rate=cfg.top_rate,
        filter_rate=cfg.filter_rate,
        activation_bar_ratio=cfg.activation_bar_ratio,
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
        "config": cfg.to_dict(),
    }
    if cfg.stats:
        summary["stats"] = str(cfg.stats)
    write_json(out, "summary.json", summary)
    cfg.save(out)
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


LAPE_SHARDS = "lape-shards"
"""The directory (in ``--out``) of a data-parallel LAPE pass: manifest.json and shards/."""


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cmd_merge(args: argparse.Namespace) -> Path:
    """Add the shard files of a data-parallel pass (e.g. Slurm job arrays) into one result."""
    from mlneurons.stats.activation import STATS_FILE, ActivationStats
    from mlneurons.stats.distributed import merge_shards

    with _user_input():
        total = merge_shards(*args.directories)
    out = Path(args.out or args.directories[0])
    if total.fires:  # a LAPE pass
        stats = ActivationStats.from_collected(total)
        path = stats.save(out / STATS_FILE)
        print(f"wrote {path}: select the neurons with mlneurons lape --stats {path} --out DIR")
    else:
        path = total.save(out / "collected.safetensors")
        print(f"wrote {path}")
    return out


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _load_neurons(args: argparse.Namespace) -> Any:
    from mlneurons.methods.lape import LanguageNeurons

    with _user_input():
        return LanguageNeurons.load(args.neurons)


def _command_model(args: argparse.Namespace, name: str | None = None) -> Any:
    """The model a command runs on (``--model`` unless ``name`` is given).

    ``args.loaded_models`` (set by ``mlneurons report``) is a cache shared by the steps of
    one report, so the model loads once for all of them.
    """
    import torch

    from mlneurons.models.loading import load_model, replica_placement
    from mlneurons.world import World

    name = name or args.model
    dtype, replica = getattr(args, "dtype", "float32"), getattr(args, "gpus_per_replica", None)
    cache = getattr(args, "loaded_models", None)
    key = (name, str(args.device), dtype, replica)
    if cache is not None and key in cache:
        return cache[key]
    placement = replica_placement(World.from_env().local_rank, replica) if replica else None
    print(f"loading model {name} ...", file=sys.stderr)
    model = load_model(name, device=args.device, dtype=getattr(torch, dtype), placement=placement)
    if cache is not None:
        cache[key] = model
    return model


def _load_model_for(args: argparse.Namespace, neurons: Any) -> Any:
    """The model of ``--model`` (default: the one the neurons were selected on), checked."""
    from mlneurons.models.fingerprint import check_same_model

    model = _command_model(args, args.model or neurons.model.get("name") or "gemma-3-270m")
    with _user_input():
        check_same_model(neurons.model, model, what=f"neurons in {args.neurons}")
        neurons.check_fits(model)
    return model


def _languages_of(neurons: Any, codes: Sequence[str]) -> list[str]:
    """``codes`` normalised to the languages of ``neurons`` (unknown ones raise)."""
    from mlneurons.data.builtin_text import normalize_language

    return _unique([normalize_language(code, neurons.languages) for code in codes])


def _load_stats(args: argparse.Namespace, cfg: Any, instead: str = "") -> Any:
    """The activation statistics of ``--stats`` (default: ``NEURONS/stats.safetensors``)."""
    from mlneurons.stats.activation import ActivationStats

    path = Path(cfg.stats) if cfg.stats else Path(args.neurons) / "stats.safetensors"
    if not cfg.stats and not path.exists():
        alternative = f" or {instead}" if instead else ""
        raise UserError(f"no statistics at {str(path)!r}; give --stats FILE{alternative}")
    with _user_input():
        return ActivationStats.load(path)


def cmd_ablate(args: argparse.Namespace) -> Path:
    """Perplexity matrix: deactivate each language's neurons, evaluate every language."""
    from mlneurons.config import AblateConfig
    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.interfaces.plots import plot_perplexity_matrix, save_figure
    from mlneurons.methods.deactivation import perplexity_matrix
    from mlneurons.models.fingerprint import check_same_model
    from mlneurons.world import World

    cfg = AblateConfig.from_args(args)
    neurons = _load_neurons(args)
    languages = _languages_of(neurons, cfg.languages) if cfg.languages else neurons.languages
    corpus = MultilingualCorpus.builtin(
        languages,
        split="heldout",
        seq_len=cfg.seq_len,
        tokens_per_language=cfg.tokens_per_language,
    )
    stats = _load_stats(args, cfg, "--control-draws 0") if cfg.control_draws else None
    model = _load_model_for(args, neurons)
    if stats is not None:
        with _user_input():
            check_same_model(stats.model, model, what="the statistics")
    world = World.from_env()
    matrix = perplexity_matrix(
        model,
        neurons,
        corpus,
        random_control=not cfg.no_random_control,
        stats=stats,
        matched_draws=cfg.control_draws,
        bins=cfg.control_bins,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        world=world if world.connected else None,
    )
    _only_rank_0_goes_on()
    out = Path(args.out)
    matrix.save(out, config=cfg)
    name = matrix.model.get("name", "")
    save_figure(
        plot_perplexity_matrix(matrix, title=f"Perplexity change: {name}"), out / "ppl_matrix.png"
    )
    dominant = [lang for lang, ok in matrix.diagonal_dominance().items() if ok]
    print("baseline perplexity: " + ", ".join(f"{k} {v:.1f}" for k, v in matrix.baseline.items()))
    print(f"own language hit hardest for {len(dominant)}/{len(languages)}: {', '.join(dominant)}")
    own = matrix.relative_change().diagonal()
    controls = []
    if matrix.random_control:
        controls.append(("uniform control", matrix.relative_change("random_control").diagonal()))
    if matrix.matched_control:
        draws = matrix.matched_draws().diagonal(dim1=1, dim2=2)  # [draw, language]
        controls.append((f"matched control ({len(draws)} draws)", draws.mean(0)))
    for i, lang in enumerate(languages):
        parts = [f"{name} {100 * float(c[i]):+.1f}%" for name, c in controls]
        if matrix.matched_control:
            parts[-1] += f" (sd {100 * float(draws[:, i].std(correction=0)):.1f})"
        print(f"  {lang}: own neurons off {100 * float(own[i]):+.1f}%; " + "; ".join(parts))
    print(f"wrote {out}/: ppl_matrix.json ppl_matrix.png")
    return out


def cmd_compare_methods(args: argparse.Namespace) -> Path:
    """LAPE against Tang et al.'s baselines: each method's deactivation matrix and specificity."""
    from mlneurons.config import CompareMethodsConfig
    from mlneurons.data.corpus import MultilingualCorpus
    from mlneurons.interfaces.plots import (
        format_increase,
        format_specificity,
        plot_method_comparison,
        save_figure,
    )
    from mlneurons.methods.baselines import lap, lave, random_selection
    from mlneurons.methods.deactivation import compare_methods
    from mlneurons.models.fingerprint import check_same_model
    from mlneurons.world import World

    cfg = CompareMethodsConfig.from_args(args)
    neurons = _load_neurons(args)
    stats = _load_stats(args, cfg)
    languages = _languages_of(neurons, cfg.languages) if cfg.languages else neurons.languages
    with _user_input():  # the statistics of the neurons' languages, as LAPE selected on
        stats = stats.select(_languages_of(stats, neurons.languages))
    constants = {
        key: neurons.constants[key]
        for key in ("top_rate", "filter_rate", "activation_bar_ratio")
        if key in neurons.constants
    }
    makers = {  # LAPE: the saved selection; the others from the same statistics
        "lape": lambda: neurons.only(*languages),
        "lap": lambda: lap(stats, languages, threshold=cfg.lap_threshold),
        "lave": lambda: lave(stats, **constants).only(*languages),
        "rs": lambda: random_selection(neurons, seed=cfg.seed).only(*languages),
    }
    with _user_input():
        selections = {method: makers[method]() for method in _unique(cfg.methods)}
    corpus = MultilingualCorpus.builtin(
        languages,
        split="heldout",
        seq_len=cfg.seq_len,
        tokens_per_language=cfg.tokens_per_language,
    )
    model = _load_model_for(args, neurons)
    with _user_input():
        check_same_model(stats.model, model, what="the statistics")
    world = World.from_env()
    result = compare_methods(
        model,
        selections,
        corpus,
        batch_size=cfg.batch_size,
        world=world if world.connected else None,
    )
    _only_rank_0_goes_on()
    out = Path(args.out)
    result.save(out, config=cfg)
    save_figure(plot_method_comparison(result), out / "methods.png")
    print(f"{'method':8s} {'neurons':>8s} {'own':>10s} {'others':>10s} {'specificity':>12s}")
    for method, score in result.specificity().items():
        n = sum(result.counts[method].values())
        own, others = format_increase(score["own"]), format_increase(score["others"])
        print(
            f"{method:8s} {n:8d} {own:>10s} {others:>10s} {format_specificity(score['score']):>12s}"
        )
    print(
        "specificity: own / (own + others) log-perplexity increase; 0.5 = all languages hurt "
        "alike, 1 = only the deactivated one"
    )
    print(f"wrote {out}/: methods.json methods.png")
    return out


def cmd_steer(args: argparse.Namespace) -> Path:
    """Output-language steering: activate the target language's neurons, identify answer languages."""
    from mlneurons.config import SteerConfig
    from mlneurons.methods.steering import SteeringResult, steer, steering_intervention
    from mlneurons.stats.distributed import gather
    from mlneurons.world import World

    cfg = SteerConfig.from_args(args)
    neurons, stats, model, asked, source, target = _steering_inputs(
        args, cfg, cfg.source, cfg.target
    )
    source_value = 0.0 if cfg.deactivate_source else cfg.source_value
    with _user_input():  # neurons shared with the target keep the target's steering
        intervention = steering_intervention(
            neurons,
            stats,
            source=source,
            target=target,
            mode=cfg.mode,
            alpha=cfg.scale,
            source_value=source_value,
            model=model,
        )
    world = World.from_env()
    mine = asked[world.rank :: world.size] if world.connected else asked
    result = steer(
        model,
        mine,
        source=source,
        target=target,
        intervention=intervention,
        languages=neurons.languages,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
    )
    if world.connected:  # questions [rank::size] on each rank, back in their order on rank 0
        parts = gather([result.samples], world)
        samples = [parts[i % world.size][i // world.size] for i in range(len(asked))]
        _only_rank_0_goes_on()
        result = SteeringResult.from_samples(
            result.source, result.target, samples, model=result.model, settings=result.settings
        )
    out = Path(args.out)
    result.save(out, config=cfg)
    print(
        f"answers in {target}: {result.accuracy_before:.0%} before, "
        f"{result.accuracy_after:.0%} after; in {source}: "
        f"{result.source_rate('before'):.0%} before, {result.source_rate('after'):.0%} after"
    )
    print(f"wrote {out}/steering.json")
    return out


def _steering_inputs(args: argparse.Namespace, cfg: Any, *languages: str) -> tuple[Any, ...]:
    """Neurons, statistics, model and the first ``--n-questions`` questions in
    ``languages[0]``, checked before any generation; the languages normalised."""
    from mlneurons.data.questions import load_questions
    from mlneurons.models.fingerprint import check_same_model

    neurons = _load_neurons(args)
    codes = [_languages_of(neurons, [code])[0] for code in languages]
    questions = load_questions(codes[0])
    if cfg.n_questions > len(questions):
        raise UserError(
            f"--n-questions {cfg.n_questions}: there are {len(questions)} questions in "
            f"{codes[0]!r}; valid: 1..{len(questions)}"
        )
    stats = _load_stats(args, cfg)
    with _user_input():
        for code in codes:
            stats.index(code)
    model = _load_model_for(args, neurons)
    with _user_input():
        check_same_model(stats.model, model, what="the statistics")
    return neurons, stats, model, questions[: cfg.n_questions], *codes


def cmd_steer_sweep(args: argparse.Namespace) -> Path:
    """Steering modes x strengths x LAPE budgets, measured by language rates and fluency."""
    from mlneurons.config import SteerSweepConfig
    from mlneurons.interfaces.plots import plot_steering_sweep, save_figure
    from mlneurons.methods.steering import steering_sweep

    cfg = SteerSweepConfig.from_args(args)
    neurons, stats, model, questions, source, target = _steering_inputs(
        args, cfg, cfg.source, cfg.target
    )
    selection = {  # LAPE re-selected per top_rate with the saved run's other constants
        key: neurons.constants[key]
        for key in ("filter_rate", "activation_bar_ratio")
        if key in neurons.constants
    }
    sweep = steering_sweep(
        model,
        questions,
        stats=stats,
        source=source,
        target=target,
        modes=_unique(cfg.modes),
        alphas=cfg.alphas,
        top_rates=cfg.top_rates,
        selection=selection,
        source_value=cfg.source_value,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
    )
    out = Path(args.out)
    sweep.save(out, config=cfg)
    save_figure(plot_steering_sweep(sweep), out / "steering_sweep.png")
    print(sweep.summary())
    for mode in sweep.modes:
        best = sweep.best(mode)
        if best is None:
            print(f"best {mode}: none (every setting gave mostly degenerate answers)")
            continue
        print(
            f"best {mode}: alpha {best.alpha:g}, top_rate {best.top_rate:g}: "
            f"{best.target_rate:.0%} in {target}, fluency ppl {best.fluency_ppl or 0:.1f}"
        )
    print(f"wrote {out}/: steering_sweep.json steering_sweep.png")
    return out


def cmd_fallback(args: argparse.Namespace) -> Path:
    """The fallback curve: which language answers when a language's neurons go away."""
    from mlneurons.config import FallbackConfig
    from mlneurons.interfaces.plots import plot_fallback_curve, save_figure
    from mlneurons.methods.steering import fallback_curve

    cfg = FallbackConfig.from_args(args)
    neurons, stats, model, questions, language = _steering_inputs(args, cfg, cfg.language)
    curve = fallback_curve(
        model,
        questions,
        neurons=neurons,
        stats=stats,
        language=language,
        shares=cfg.shares,
        order=cfg.order,
        seed=cfg.seed,
        max_new_tokens=cfg.max_new_tokens,
        batch_size=cfg.batch_size,
    )
    out = Path(args.out)
    curve.save(out, config=cfg)
    save_figure(plot_fallback_curve(curve), out / "fallback.png")
    for point, dominant in zip(curve.points, curve.dominant()):
        shares = ", ".join(f"{k} {v:.0%}" for k, v in point.distribution.items() if v)
        print(
            f"{point.share:>5.0%} of {language}'s neurons off "
            f"({point.n_deactivated}): mostly {dominant}; {shares}"
        )
    print(f"wrote {out}/: fallback.json fallback.png")
    return out


def cmd_ses(args: argparse.Namespace) -> Path:
    """Sentence-embedding similarity of parallel sentences per layer, beside LAPE's counts."""
    from mlneurons.config import SesConfig
    from mlneurons.data import parallel
    from mlneurons.interfaces.plots import plot_sentence_similarity, save_figure
    from mlneurons.methods.lape import NEURONS_FILE, LanguageNeurons
    from mlneurons.methods.readouts import sentence_similarity

    cfg = SesConfig.from_args(args)
    with _user_input():
        sentences = parallel.builtin_parallel_sentences(cfg.languages, n=cfg.sentences)
    out = Path(args.out)
    neurons_dir = Path(cfg.neurons) if cfg.neurons else out  # a report's LAPE neurons
    neurons = None
    if cfg.neurons or (out / NEURONS_FILE).exists():
        with _user_input():
            neurons = LanguageNeurons.load(neurons_dir)
    model = _command_model(args)
    if neurons is not None:
        with _user_input():
            neurons.check_fits(model)
    result = sentence_similarity(model, sentences, center=cfg.center, batch_size=cfg.batch_size)
    result.save(out, config=cfg)
    save_figure(plot_sentence_similarity(result, neurons=neurons), out / "ses.png")
    mean = result.mean_offdiagonal()
    print("mean similarity of parallel sentences per layer (other languages):")
    print("  " + " ".join(f"{layer}:{value:.3f}" for layer, value in enumerate(mean.tolist())))
    peak = int(mean.argmax())
    print(f"highest at layer {peak} ({float(mean[peak]):.3f}); {result.n_sentences} sentences")
    print(f"wrote {out}/: {result.TENSOR_FILE} ses.png")
    return out


def cmd_logit_lens(args: argparse.Namespace) -> Path:
    """The logit lens at the last position of translation prompts: target vs English."""
    from mlneurons.config import LogitLensConfig
    from mlneurons.data import parallel
    from mlneurons.interfaces.plots import plot_latent_language, save_figure
    from mlneurons.methods.readouts import latent_language

    cfg = LogitLensConfig.from_args(args)
    with _user_input():
        langs = [cfg.source, cfg.target, parallel.ENGLISH]
        words = parallel.builtin_parallel_words(list(dict.fromkeys(langs)))
        if cfg.max_items:
            words = {lang: items[: cfg.max_items] for lang, items in words.items()}
    model = _command_model(args)
    result = latent_language(
        model,
        source=cfg.source,
        target=cfg.target,
        words=words,
        n_shots=cfg.n_shots,
        seed=cfg.seed,
        drop_copies=not cfg.keep_copies,
        batch_size=cfg.batch_size,
    )
    out = Path(args.out)
    result.save(out, config=cfg)
    save_figure(plot_latent_language(result), out / "logit_lens.png")
    print(f"{'layer':>5s} {'P(' + result.target + ')':>9s} {'P(en)':>9s}")
    for layer, (pt, pe) in enumerate(zip(result.p_target.tolist(), result.p_english.tolist())):
        print(f"{layer:5d} {pt:9.4f} {pe:9.4f}")
    crossover = result.crossover_layer()
    print(
        f"{result.n_items} items ({result.n_dropped} dropped: token sets overlap; "
        f"{result.n_copies} dropped: the source word looks English); "
        + (
            f"{result.target} overtakes English from layer {crossover} on"
            if crossover is not None
            else f"{result.target} never stays above English"
        )
    )
    print(f"wrote {out}/: {result.TENSOR_FILE} logit_lens.png")
    return out


def _load_facts(cfg: Any) -> Any:
    """The fact set of ``--facts`` (``builtin`` or ``mlama:DIR``), restricted as asked."""
    from mlneurons.data.facts import FactSet

    directory = cfg.facts[len("mlama:") :]
    with _user_input(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no candidate objects")  # checked below
        if cfg.facts == "builtin":
            facts = FactSet.builtin(languages=cfg.languages, relations=cfg.relations)
        else:
            facts = FactSet.from_mlama(directory, languages=cfg.languages, relations=cfg.relations)
    gold = facts.description.get("gold_candidates") or []
    if gold and cfg.candidates != "gold":
        listed = ", ".join(gold[:6]) + (f" and {len(gold) - 6} more" if len(gold) > 6 else "")
        raise UserError(
            f"mLAMA directory {directory!r} has no candidate objects "
            f"(TREx_multilingual_objects/{{lang}}.json) for {listed}; add them, or pass "
            "--candidates gold to rank each relation's gold objects only (mLAMA TyQ)"
        )
    return facts.head(cfg.max_facts_per_relation) if cfg.max_facts_per_relation else facts


def _facts_model_probe(args: argparse.Namespace, cfg: Any) -> tuple[Any, Any, Path, Any]:
    """The fact set, the model, the output directory and the probing result of a fact command."""
    from mlneurons.methods.probing.result import ProbeResult
    from mlneurons.models.fingerprint import check_same_model

    facts = _load_facts(cfg)
    if cfg.probe:  # read before the model loads
        with _user_input():
            saved = ProbeResult.load(cfg.probe)
    model = _command_model(args)
    out = Path(args.out)
    if cfg.probe:
        with _user_input():
            check_same_model(saved.model, model, what=f"{cfg.probe}/probe.json")
        return facts, model, out, saved
    return facts, model, out, _probe(cfg, model, facts, out)


def _probe(cfg: Any, model: Any, facts: Any, out: Path) -> Any:
    """Probe the facts and write ``probe.json`` with its plots."""
    from mlneurons.interfaces.plots import plot_jaccard, plot_p_at_1, save_figure
    from mlneurons.methods.probing import probe
    from mlneurons.world import World

    world = World.from_env()
    part = facts.shard(world.rank, world.size) if world.connected else facts
    if cfg.probing == "zhao":
        from mlneurons.methods.probing.masked import zhao_match
        from mlneurons.models.hooks import is_masked_lm

        if not is_masked_lm(model):
            raise UserError("--method zhao needs a masked LM (BERT, XLM-R); use --method typed")
        result = zhao_match(model, part, batch_size=cfg.batch_size)
    else:
        result = probe(model, part, batch_size=cfg.batch_size)
    if world.connected:  # facts [rank::size] on each rank; every rank gets all of them
        result = _gathered_predictions(result, facts, world)
        if world.rank != 0:
            return result  # rank 0 writes
    result.save(out, config=cfg)
    name = result.model.get("name", "")
    save_figure(plot_p_at_1(result, title=f"P@1: {name}"), out / "p_at_1.png")
    save_figure(plot_jaccard(result), out / "jaccard.png")
    return result


PARALLEL_COMMANDS = (
    "lape",
    "ablate",
    "compare-methods",
    "probe",
    "steer",
    "fact-neurons",
    "trace",
    "lrp2",
)
"""Commands that split their work across the ranks of a torchrun launch (trace through its
probing, fact-neurons unless it reuses --probe, lrp2 through its language vectors); every
other command, and every command but lape without a rendezvous, runs on rank 0 alone."""


def _runs_on_this_rank(args: argparse.Namespace) -> bool:
    """False on ranks other than 0 for a command that does not split its work (they would
    all compute, and write, the same files)."""
    from mlneurons.world import World

    world = World.from_env()
    parallel = args.command == "lape" or (  # lape's shards also merge offline
        world.connected and args.command in PARALLEL_COMMANDS and not getattr(args, "probe", None)
    )
    if world.rank == 0 or parallel:
        return True
    print(f"rank {world.rank}: mlneurons {args.command} runs on rank 0 only", file=sys.stderr)
    return False


def _only_rank_0_goes_on() -> None:
    """End the command on ranks other than 0 once their share of the work is done."""
    from mlneurons.world import World

    if World.from_env().rank != 0:
        raise OtherRank


class OtherRank(Exception):
    """Raised on ranks other than 0 once their share of an item-parallel command is
    gathered: rank 0 writes the results, the others end (exit status 0)."""


def _gathered_predictions(result: Any, facts: Any, world: Any) -> Any:
    """The probing result of all ranks' facts, in the order of one process's run."""
    import dataclasses

    from mlneurons.stats.distributed import gather

    rows = gather(result.predictions, world)
    order = [(f.uuid, f.lang, f.relation) for group in facts.groups().values() for f in group]
    position = {key: i for i, key in enumerate(order)}
    rows.sort(key=lambda row: position[(row["uuid"], row["lang"], row["relation"])])
    settings = {**result.settings, "facts": facts.description}
    languages, relations = facts.languages, facts.relations
    return dataclasses.replace(
        result, languages=languages, relations=relations, predictions=rows, settings=settings
    )


def cmd_probe(args: argparse.Namespace) -> Path:
    """Factual probing: P@1 per language and relation, Jaccard of correct facts."""

    from mlneurons.config import ProbeConfig

    facts, model, out, result = _facts_model_probe(args, ProbeConfig.from_args(args))
    _only_rank_0_goes_on()
    for lang, row in result.p_at_1().items():
        print(f"{lang}: P@1 macro {row['macro']:.1%}, micro {row['micro']:.1%}")
    print(f"wrote {out}/: probe.json p_at_1.png jaccard.png")
    return out


def cmd_fact_neurons(args: argparse.Namespace) -> Path:
    """PROBELESS fact neurons of correctly predicted facts and their overlap across languages."""
    from mlneurons.config import FactNeuronsConfig
    from mlneurons.interfaces.plots import plot_fact_neuron_overlap, save_figure
    from mlneurons.methods.probeless import fact_neurons
    from mlneurons.world import World

    cfg = FactNeuronsConfig.from_args(args)
    facts, model, out, result = _facts_model_probe(args, cfg)
    world = World.from_env()  # every rank takes part unless the probing was reused
    neurons = fact_neurons(
        model,
        facts,
        result.correct_map(),
        k=cfg.k,
        batch_size=cfg.batch_size,
        world=world if world.connected and not cfg.probe else None,
    )
    _only_rank_0_goes_on()
    neurons.save(out, config=cfg)
    save_figure(plot_fact_neuron_overlap(neurons), out / "fact_neuron_overlap.png")
    print(f"wrote {out}/: fact_neurons.json fact_neuron_overlap.png")
    return out


def cmd_trace(args: argparse.Namespace) -> Path:
    """Knowledge tracing: was each fact in the language's text, and is it predicted?"""
    from mlneurons.config import TraceConfig
    from mlneurons.data.corpus import MultilingualCorpus, available_languages
    from mlneurons.interfaces.plots import plot_tracing, save_figure
    from mlneurons.methods.tracing import trace

    cfg = TraceConfig.from_args(args)
    if cfg.corpus != "builtin":  # checked before probing
        corpus = MultilingualCorpus.from_files(cfg.corpus)
    facts, model, out, result = _facts_model_probe(args, cfg)
    _only_rank_0_goes_on()
    if cfg.corpus == "builtin":  # languages without built-in text get code -1
        with_text = [lang for lang in facts.languages if lang in available_languages()]
        corpus = MultilingualCorpus.builtin(with_text, split="all")
    traced = trace(
        facts,
        corpus,
        model.tokenizer,
        result.correct_map(),
        chunk_tokens=cfg.chunk_tokens,
        model=result.model,
    )
    traced.save(out, config=cfg)
    save_figure(plot_tracing(traced), out / "trace.png")
    for lang, row in traced.breakdown().items():
        print(lang, {k: v for k, v in row.items() if v})
    print(f"wrote {out}/: trace.json trace.png")
    return out


def cmd_lrp2(args: argparse.Namespace) -> Path:
    """LRP2: language vectors, per-language (LIRP, LSRP) chosen on dev facts, test P@1 and Trans."""
    from mlneurons.config import Lrp2Config
    from mlneurons.data.builtin_text import normalize_language
    from mlneurons.data.corpus import MultilingualCorpus, available_languages
    from mlneurons.interfaces.plots import plot_lrp2_grid, save_figure
    from mlneurons.methods.lrp2 import evaluate_lrp2, language_vectors
    from mlneurons.world import World

    cfg = Lrp2Config.from_args(args)
    facts = _load_facts(cfg)
    try:
        pivot = normalize_language(cfg.pivot, facts.languages)
    except UserError:
        raise UserError(
            f"--pivot {cfg.pivot!r} is not among the fact languages {facts.languages}"
        ) from None
    no_text = [lang for lang in facts.languages if lang not in available_languages()]
    if no_text:
        raise UserError(
            f"no built-in text for the language vectors of {no_text}; choose --languages among "
            f"{available_languages()}"
        )
    model = _command_model(args)
    n_layers = int(model.cfg.n_layers)
    if cfg.layers and (
        len(set(cfg.layers)) < 2 or not all(0 <= layer < n_layers for layer in cfg.layers)
    ):
        raise UserError(
            f"--layers {','.join(map(str, cfg.layers))}: give at least two layers in "
            f"0..{n_layers - 1} (this model has {n_layers})"
        )
    out = Path(args.out)
    corpus = MultilingualCorpus.builtin(facts.languages, split="all")
    world = World.from_env()  # under torchrun the vectors are a sharded pass, the grid rank 0's
    shards = out / "vector-shards" if world.connected else None
    vectors = language_vectors(model, corpus, max_sentences=cfg.sentences, shards=shards)
    _only_rank_0_goes_on()
    vectors.save(out)
    result = evaluate_lrp2(
        model, facts, vectors, pivot=pivot, layers=cfg.layers, k=cfg.k, batch_size=cfg.batch_size
    )
    result.save(out, config=cfg)
    for lang in result.languages:
        save_figure(plot_lrp2_grid(result, lang), out / f"lrp2_grid_{lang}.png")
        p1, trans = result.test_p_at_1[lang], result.trans[lang]
        print(
            f"{lang}: layers {result.selected[lang]}, test P@1 {p1['before']:.1%} -> "
            f"{p1['after']:.1%}, Trans {trans['before']:.2f} -> {trans['after']:.2f}"
        )
    print(f"wrote {out}/: lrp2.json language_vectors.safetensors lrp2_grid_*.png")
    return out


def cmd_report(args: argparse.Namespace) -> Path:
    """Run every method on the built-in defaults into one directory with ``index.html``."""
    from mlneurons.interfaces.report import run_report

    return run_report(
        args.out, build_parser(), full=args.full, model=args.model, device=args.device
    )


def cmd_app(args: argparse.Namespace) -> Path:
    """Start the Streamlit app on a run directory (until Ctrl-C, SIGTERM or SIGHUP)."""
    from mlneurons.interfaces.app_server import serve

    run = Path(args.run_dir)
    code = serve(run, model=args.model, port=args.port)
    if code:
        raise SystemExit(code)
    return run


def _add_fact_options(parser: argparse.ArgumentParser, config: Any, *, reuse: bool) -> None:
    _add_model_options(parser)
    _option(parser, config, "--facts", "'builtin' (default) or mlama:DIR")
    _option(
        parser,
        config,
        "--candidates",
        "mlama:DIR only: 'files' (default) needs TREx_multilingual_objects/{lang}.json for "
        "every language and relation; 'gold' ranks the gold objects of a relation where the "
        "file is missing (mLAMA TyQ, an easier task)",
        choices=["files", "gold"],
    )
    languages = "comma-separated languages (default: all of the fact set)"
    _option(parser, config, "--languages", languages, type=_codes)
    relations = "comma-separated relations, e.g. P36,P37 (default: all)"
    _option(parser, config, "--relations", relations, type=_codes)
    first = "probe only the first N facts (by uuid) of each relation"
    _option(parser, config, "--max-facts-per-relation", first, type=_positive)
    _option(parser, config, "--batch-size", "sentences per forward", type=_positive)
    parser.add_argument("--out", required=True, help="output directory")
    parser.set_defaults(probe=None, method="typed")  # options only some subcommands have
    if reuse:
        reuse_help = "reuse probe.json from this directory instead of probing again"
        _option(parser, config, "--probe", reuse_help)


def _add_neuron_options(parser: argparse.ArgumentParser, config: Any) -> None:
    _add_model_options(parser, config)  # default: the model the neurons were selected on
    parser.add_argument("--neurons", required=True, help="directory written by `mlneurons lape`")
    parser.add_argument("--out", required=True, help="output directory")
    _option(parser, config, "--batch-size", "rows per forward pass", type=_positive)


def build_parser() -> argparse.ArgumentParser:
    from mlneurons import config
    from mlneurons.data.builtin_text import DEFAULT_LANGUAGES

    parser = _Parser(
        prog="mlneurons", description="Neuron-level study of multilingual language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("lape", help="find language-specific neurons (LAPE, Tang et al. 2024)")
    c = config.LapeConfig
    _add_model_options(p, c)
    languages = f"comma-separated codes (default: {','.join(DEFAULT_LANGUAGES)}; with --stats, "
    _option(p, c, "--languages", languages + "the languages of the statistics)", type=_codes)
    corpus = "'builtin' (default) or a folder of {lang}.txt files or {lang}/ folders"
    _option(p, c, "--corpus", corpus)
    _option(p, c, "--tokens-per-language", "token budget per language", type=_positive)
    _option(p, c, "--seq-len", "tokens per packed row", type=_at_least(2))
    _option(p, c, "--batch-size", "rows per forward pass", type=_positive)
    _option(p, c, "--top-rate", "LAPE top_rate", type=_rate)
    _option(p, c, "--filter-rate", "LAPE filter_rate", type=_rate)
    _option(p, c, "--activation-bar-ratio", "LAPE activation_bar_ratio", type=_rate)
    stats = "re-select from statistics saved by an earlier run (stats.safetensors or its "
    _option(p, c, "--stats", stats + "directory) with the constants given: no model, no forward")
    shards = "logical shards of a data-parallel pass (torchrun): fixed at the first launch, "
    _option(
        p,
        c,
        "--shards",
        shards + "checkpointed in OUT/shards/ (default 8 under torchrun)",
        type=_positive,
    )
    p.add_argument("--out", default="runs/lape", help="output directory (default runs/lape)")
    p.set_defaults(run=cmd_lape)

    p = sub.add_parser("merge", help="add the shard files of data-parallel passes into one result")
    p.add_argument("directories", nargs="+", metavar="DIR", help="directories with manifest.json")
    p.add_argument("--out", default=None, help="output directory (default: the first DIR)")
    p.set_defaults(run=cmd_merge)

    p = sub.add_parser("ablate", help="perplexity matrix with language neurons deactivated")
    c = config.AblateConfig
    _add_neuron_options(p, c)
    languages = "languages to deactivate and evaluate (default: those of --neurons)"
    _option(p, c, "--languages", languages, type=_codes)
    held_out = "held-out tokens per evaluated language"
    _option(p, c, "--tokens-per-language", held_out, type=_positive)
    _option(p, c, "--seq-len", "tokens per row", type=_at_least(2))
    _option(p, c, "--seed", "seed of the random controls (matched draw i: seed + i)", type=int)
    _option(p, c, "--no-random-control", "skip the uniform random control")
    stats = "statistics for the matched controls (default: NEURONS/stats.safetensors)"
    _option(p, c, "--stats", stats)
    draws = "draws of the matched control (same layers and firing-probability bins; 0: none)"
    _option(p, c, "--control-draws", draws, type=_at_least(0))
    _option(p, c, "--control-bins", "firing-probability bins per layer", type=_positive)
    p.set_defaults(run=cmd_ablate)

    p = sub.add_parser(
        "compare-methods", help="LAPE against Tang et al.'s baselines LAP, LAVE and RS"
    )
    c = config.CompareMethodsConfig
    _add_neuron_options(p, c)
    methods = f"comma-separated methods of {','.join(c.METHODS)}"
    _option(p, c, "--methods", methods, type=_codes)
    _option(p, c, "--languages", "languages (default: those of --neurons)", type=_codes)
    _option(p, c, "--stats", "statistics (default: NEURONS/stats.safetensors)")
    _option(p, c, "--tokens-per-language", "held-out tokens per language", type=_positive)
    _option(p, c, "--seq-len", "tokens per row", type=_at_least(2))
    _option(p, c, "--lap-threshold", "LAP: firing probability a neuron must exceed", type=_rate)
    _option(p, c, "--seed", "seed of RS (random selection)", type=int)
    p.set_defaults(run=cmd_compare_methods)

    p = sub.add_parser("steer", help="steer the output language by activating language neurons")
    c = config.SteerConfig
    _add_neuron_options(p, c)
    stats = "statistics for the activation values (default: NEURONS/stats.safetensors)"
    _option(p, c, "--stats", stats)
    p.add_argument("--source", required=True, help="language of the questions, e.g. es")
    p.add_argument("--target", required=True, help="language to steer to, e.g. zh")
    modes = "replace: a = alpha*mu_target; add: a + alpha*mu_target; diffmean: a + "
    modes += "alpha*(mu_target - mean mu of the others); scale: alpha*a"
    _option(p, c, "--mode", modes, choices=c.MODES)
    _option(p, c, "--scale", "the strength alpha of the mode", type=float)
    _option(p, c, "--deactivate-source", "also deactivate the source language's neurons")
    own = "set the source language's own neurons to this constant (0: deactivate)"
    _option(p, c, "--source-value", own, type=float)
    _option(p, c, "--n-questions", "questions to ask", type=_positive)
    _option(p, c, "--max-new-tokens", "answer length", type=_positive)
    p.set_defaults(run=cmd_steer)

    p = sub.add_parser(
        "steer-sweep", help="steering modes x strengths x LAPE budgets: rates and fluency"
    )
    c = config.SteerSweepConfig
    _add_neuron_options(p, c)
    stats = "statistics for LAPE and the mean activations (default: NEURONS/stats.safetensors)"
    _option(p, c, "--stats", stats)
    p.add_argument("--source", required=True, help="language of the questions, e.g. es")
    p.add_argument("--target", required=True, help="language to steer to, e.g. zh")
    _option(p, c, "--modes", "comma-separated of replace,add,diffmean,scale", type=_codes)
    alphas = "comma-separated strengths for every mode (default: 0.5,1 and for scale 2,5)"
    _option(p, c, "--alphas", alphas, type=_floats)
    _option(p, c, "--top-rates", "comma-separated LAPE top_rate budgets", type=_floats)
    own = "source language's own neurons set to this constant; 'none' leaves them"
    _option(p, c, "--source-value", own, type=_optional_float)
    _option(p, c, "--n-questions", "questions to ask", type=_positive)
    _option(p, c, "--max-new-tokens", "answer length", type=_positive)
    p.set_defaults(run=cmd_steer_sweep)

    p = sub.add_parser(
        "fallback",
        help="deactivate growing shares of a language's neurons: which language answers?",
    )
    c = config.FallbackConfig
    _add_neuron_options(p, c)
    _option(p, c, "--stats", "statistics for the order (default: NEURONS/stats.safetensors)")
    p.add_argument("--language", required=True, help="language of the questions and neurons")
    _option(p, c, "--shares", "comma-separated shares of its neurons to deactivate", type=_floats)
    order = "lape: most specific first; probability: most often firing first; random"
    _option(p, c, "--order", order, choices=c.ORDERS)
    _option(p, c, "--seed", "seed of the random order", type=int)
    _option(p, c, "--n-questions", "questions to ask", type=_positive)
    _option(p, c, "--max-new-tokens", "answer length", type=_positive)
    p.set_defaults(run=cmd_fallback)

    p = sub.add_parser("ses", help="sentence-embedding similarity of parallel sentences per layer")
    c = config.SesConfig
    _add_model_options(p, c)
    _option(p, c, "--languages", "comma-separated languages", type=_codes)
    _option(p, c, "--sentences", "built-in parallel sentences per language", type=_positive)
    _option(p, c, "--center", "subtract each layer's mean embedding before the cosines")
    neurons = "LAPE neurons to plot beside it (default: OUT's neurons.json when there is one)"
    _option(p, c, "--neurons", neurons)
    _option(p, c, "--batch-size", "sentences per forward pass", type=_positive)
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=cmd_ses)

    p = sub.add_parser(
        "logit-lens", help="latent language: P(target) vs P(English) per layer (Wendler et al.)"
    )
    c = config.LogitLensConfig
    _add_model_options(p, c)
    _option(p, c, "--source", "language of the words to translate")
    _option(p, c, "--target", "language of the answers (compared with English)")
    _option(p, c, "--n-shots", "translation examples per prompt", type=_at_least(0))
    _option(p, c, "--seed", "seed of the examples' choice", type=int)
    _option(p, c, "--max-items", "first N built-in words (default: all)", type=_positive)
    copies = "keep items whose source word shares a token with the English word"
    _option(p, c, "--keep-copies", copies)
    _option(p, c, "--batch-size", "prompts per forward pass", type=_positive)
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(run=cmd_logit_lens)

    p = sub.add_parser("probe", help="factual probing across languages: P@1 and Jaccard")
    _add_fact_options(p, config.ProbeConfig, reuse=False)
    method = (
        "typed: rank the typed candidates (default); zhao: masked LMs only, "
        "full-match greedy decoding without candidates (Zhao et al.)"
    )
    probing = config.ProbeConfig
    _option(p, probing, "--method", method, field="probing", choices=probing.METHODS)
    p.set_defaults(run=cmd_probe)

    p = sub.add_parser("fact-neurons", help="PROBELESS fact neurons and their language overlap")
    _add_fact_options(p, config.FactNeuronsConfig, reuse=True)
    _option(p, config.FactNeuronsConfig, "--k", "neurons per fact", type=_positive)
    p.set_defaults(run=cmd_fact_neurons)

    p = sub.add_parser("trace", help="knowledge tracing: fact presence in text x correctness")
    _add_fact_options(p, config.TraceConfig, reuse=True)
    _option(p, config.TraceConfig, "--corpus", "'builtin' (default) or a folder of {lang}.txt")
    _option(p, config.TraceConfig, "--chunk-tokens", "co-occurrence window", type=_positive)
    p.set_defaults(run=cmd_trace)

    p = sub.add_parser("lrp2", help="LRP2 projection: does moving a language into English help?")
    c = config.Lrp2Config
    _add_fact_options(p, c, reuse=False)
    _option(p, c, "--pivot", "language projected into")
    grid = "comma-separated candidate layers of the grid (default: every third block)"
    _option(p, c, "--layers", grid, type=_layers)
    sentences = "built-in sentences per language for the language vectors"
    _option(p, c, "--sentences", sentences, type=_positive)
    _option(p, c, "--k", "PROBELESS neurons per fact", type=_positive)
    p.set_defaults(run=cmd_lrp2)

    p = sub.add_parser(
        "report", help="every method on the built-in defaults: one directory and index.html"
    )
    _add_model_options(p)
    p.add_argument(
        "--full",
        action="store_true",
        help="the README's paper-scale budgets (about an hour and a half)",
    )
    p.add_argument("--out", default="runs/report", help="run directory (default runs/report)")
    p.set_defaults(run=cmd_report)

    p = sub.add_parser("app", help="open the Streamlit app on a run directory")
    p.add_argument(
        "--run",
        dest="run_dir",
        metavar="DIR",
        default="runs/report",
        help="directory written by mlneurons (default runs/report)",
    )
    p.add_argument(
        "--model",
        type=_model,
        default=None,
        help="model of the live views (default: the one the run was computed on)",
    )
    p.add_argument("--port", type=_port, default=8501, help="local port (default 8501)")
    p.set_defaults(run=cmd_app)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user mistake)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad option (2), already printed
        return int(exc.code or 0)
    run: Callable[[argparse.Namespace], object] = args.run
    try:
        if not _runs_on_this_rank(args):
            return 0
        run(args)
    except UserError as exc:
        message = " ".join(str(exc).split())
        print(f"mlneurons {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OtherRank:
        return 0
    except FastPathMismatch as exc:  # not the user's mistake: the installed libraries'
        print(f"mlneurons {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # lape keeps a checkpoint; the report skips its finished steps
        resumes = args.command == "report" or (args.command == "lape" and not args.stats)
        advice = "; run the same command again to resume" if resumes else ""
        print(f"mlneurons {args.command}: interrupted{advice}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
