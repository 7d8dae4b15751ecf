"""Streaming, mergeable per-language statistics of MLP neuron activations.

For every language, layer and neuron this counts how often the neuron fires
(``mlp.hook_pre > 0``, LAPE's "activation") and sums the act_fn output that
interventions set, over every counted token. Memory does not grow with the
corpus; results from shards or processes merge by addition.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from tqdm.auto import tqdm

from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.models.canary import canary_ids, verify
from mlneurons.models.fingerprint import fingerprint
from mlneurons.models.forward import model_device, run_body
from mlneurons.models.hooks import hooks_attached, mlp_neuron_hook, unwrapped
from mlneurons.results import read_tensors, write_tensors

STATS_FILE = "stats.safetensors"


@dataclass
class ActivationStats:
    """Per-language firing counts and activation sums of every MLP neuron.

    Attributes:
        languages: the order of the first axis.
        fire_counts: ``[language, layer, neuron]`` number of tokens with ``hook_pre > 0``.
        activation_sums: ``[language, layer, neuron]`` sum of the act_fn output (float64).
        token_counts: ``[language]`` tokens counted (BOS positions excluded).
        model: fingerprint of the model (see :func:`mlneurons.models.fingerprint`).
        corpus: description of the corpus.
    """

    languages: list[str]
    fire_counts: Int[torch.Tensor, "language layer neuron"]
    activation_sums: Float[torch.Tensor, "language layer neuron"]
    token_counts: Int[torch.Tensor, " language"]
    model: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.languages)
        if len(set(self.languages)) != n:
            raise ValueError(f"languages must be unique, got {self.languages}")
        shapes = (self.fire_counts.shape, self.activation_sums.shape)
        if self.fire_counts.dim() != 3 or self.fire_counts.shape[0] != n or shapes[0] != shapes[1]:
            raise ValueError(f"shapes do not fit {n} languages: counts/sums are {shapes}")
        if tuple(self.token_counts.shape) != (n,):
            raise ValueError(
                f"token_counts must have shape ({n},), got {tuple(self.token_counts.shape)}"
            )

    @property
    def n_layers(self) -> int:
        return self.fire_counts.shape[1]

    @property
    def d_mlp(self) -> int:
        return self.fire_counts.shape[2]

    @property
    def activation_probs(self) -> Float[torch.Tensor, "language layer neuron"]:
        """LAPE's activation probability p_l: the fraction of tokens on which a neuron fires."""
        return (self.fire_counts.double() / self._tokens()).float()

    @property
    def mean_activations(self) -> Float[torch.Tensor, "language layer neuron"]:
        """Mean act_fn output per language (the value ``activate`` can set)."""
        return (self.activation_sums / self._tokens()).float()

    def mean_activation(self, language: str) -> Float[torch.Tensor, "layer neuron"]:
        """One language's mean act_fn output per neuron: a steering value for ``activate``."""
        return self.mean_activations[self.index(language)]

    def _tokens(self) -> torch.Tensor:
        empty = [lang for lang, n in zip(self.languages, self.token_counts.tolist()) if n == 0]
        if empty:
            raise ValueError(f"no tokens were counted for languages {empty}")
        return self.token_counts.double()[:, None, None]

    def index(self, language: str) -> int:
        """Position of ``language`` on the first axis."""
        if language not in self.languages:
            raise ValueError(
                f"unknown language {language!r}; these statistics have {self.languages}"
            )
        return self.languages.index(language)

    def select(self, languages: list[str]) -> ActivationStats:
        """The statistics of ``languages`` only, in that order."""
        idx = torch.tensor([self.index(lang) for lang in languages])
        return ActivationStats(
            list(languages),
            self.fire_counts[idx],
            self.activation_sums[idx],
            self.token_counts[idx],
            dict(self.model),
            dict(self.corpus),
        )

    def __add__(self, other: ActivationStats) -> ActivationStats:
        """Merge two runs (shards, processes): counts and sums add; languages unite."""
        if self.model.get("hash") != other.model.get("hash"):
            raise ValueError(
                f"cannot merge statistics of different models: {self.model.get('name')!r} "
                f"({self.model.get('hash')}) and {other.model.get('name')!r} ({other.model.get('hash')})"
            )
        if self.fire_counts.shape[1:] != other.fire_counts.shape[1:]:
            raise ValueError(
                f"cannot merge statistics of shapes {tuple(self.fire_counts.shape[1:])} and "
                f"{tuple(other.fire_counts.shape[1:])}"
            )
        languages = self.languages + [
            lang for lang in other.languages if lang not in self.languages
        ]
        merged = ActivationStats.empty(languages, self.n_layers, self.d_mlp, model=self.model)
        for part in (self, other):
            idx = torch.tensor([languages.index(lang) for lang in part.languages])
            merged.fire_counts[idx] += part.fire_counts
            merged.activation_sums[idx] += part.activation_sums
            merged.token_counts[idx] += part.token_counts
        merged.corpus = (
            self.corpus if self.corpus == other.corpus else {"merged": [self.corpus, other.corpus]}
        )
        return merged

    @classmethod
    def empty(
        cls, languages: list[str], n_layers: int, d_mlp: int, *, model: dict[str, Any] | None = None
    ) -> ActivationStats:
        n = len(languages)
        return cls(
            list(languages),
            torch.zeros(n, n_layers, d_mlp, dtype=torch.int64),
            torch.zeros(n, n_layers, d_mlp, dtype=torch.float64),
            torch.zeros(n, dtype=torch.int64),
            dict(model or {}),
        )

    def save(self, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write ``path`` if it ends in ``.safetensors``, else ``path/stats.safetensors``; returns it."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path / STATS_FILE
        meta = {"languages": self.languages, "model": self.model, "corpus": self.corpus}
        tensors = {
            "fire_counts": self.fire_counts,
            "activation_sums": self.activation_sums,
            "token_counts": self.token_counts,
        }
        return write_tensors(path, tensors, {**meta, **(extra or {})})

    @classmethod
    def load(cls, path: str | Path) -> ActivationStats:
        """Read what :meth:`save` wrote (a file, or a directory holding ``stats.safetensors``)."""
        return cls._load(path)[0]

    @classmethod
    def _load(cls, path: str | Path) -> tuple[ActivationStats, dict[str, Any]]:
        tensors, meta = read_tensors(path, STATS_FILE)
        stats = cls(
            meta["languages"],
            tensors["fire_counts"],
            tensors["activation_sums"],
            tensors["token_counts"],
            meta.get("model", {}),
            meta.get("corpus", {}),
        )
        return stats, meta


def _accumulate(
    act: torch.Tensor, state: dict[str, Any], layer: int, activation: torch.Tensor
) -> None:
    """Add one batch's firing counts and act_fn sums of ``layer`` to ``state``.

    Reductions over the whole contiguous tensor are several times faster than over a
    sliced view, so everything is counted and the uncounted BOS positions taken back out.
    """
    skip = state["first_position"]
    fires = act > 0
    state["fires"][layer] += fires.sum((0, 1), dtype=torch.int32)
    state["sums"][layer] += activation.sum((0, 1), dtype=torch.float32)
    if skip:
        state["fires"][layer] -= fires[:, :skip].sum((0, 1), dtype=torch.int32)
        state["sums"][layer] -= activation[:, :skip].sum((0, 1), dtype=torch.float32)
    state["seen"][layer] += 1


def _count_hook(
    act: torch.Tensor, *, hook: Any, layer: int, to_activation: Any, state: dict[str, Any]
) -> None:
    """TransformerLens hook on ``mlp.hook_pre``/``hook_post``: count fires, sum act_fn output."""
    _accumulate(act, state, layer, to_activation(act))


def _act_fn_modules(model: Any) -> list[torch.nn.Module] | None:
    """Each layer's own act_fn module, or None when the MLPs do not call one module each
    (e.g. processed weights in compatibility mode)."""
    n_layers = int(model.cfg.n_layers)
    sites = [mlp_neuron_hook(model, layer)[1] for layer in range(n_layers)]
    modules = [m for m in sites if isinstance(m, torch.nn.Module)]
    if (
        len(modules) == n_layers
        and len({id(m) for m in modules}) == n_layers
        and not getattr(model, "compatibility_mode", False)
    ):
        return modules
    return None


@contextmanager
def _counting(model: Any, state: dict[str, Any], *, exact: bool = False) -> Iterator[None]:
    """Attach the counters of every layer; always detach them.

    The fast path reads the act_fn output from each gated MLP's own ``act_fn`` module
    (its sign is that of ``hook_pre``), which spares recomputing it, and bypasses the
    bridge's wrappers unless a TransformerLens hook is attached. The exact path
    (``exact=True``, and models whose MLPs do not call one such module) counts with
    TransformerLens hooks on ``mlp.hook_pre``/``hook_post`` through the bridge.
    """
    act_modules = None if exact else _act_fn_modules(model)
    handles = []
    try:
        if act_modules is not None:
            for layer, module in enumerate(act_modules):

                def read_output(module: Any, args: Any, output: Any, layer: int = layer) -> None:
                    _accumulate(output, state, layer, output)

                handles.append(module.register_forward_hook(read_output))
            # When no TransformerLens hook listens (an intervention would), run the plain HF
            # modules: the bridge's wrappers cost about 10% of the forward.
            with nullcontext() if hooks_attached(model) else unwrapped(model):
                yield
        else:
            hooks = [
                (
                    name,
                    functools.partial(_count_hook, layer=layer, to_activation=to_act, state=state),
                )
                for layer, (name, to_act) in enumerate(
                    mlp_neuron_hook(model, layer) for layer in range(int(model.cfg.n_layers))
                )
            ]
            with model.hooks(fwd_hooks=hooks):
                yield
    finally:
        for handle in handles:
            handle.remove()


def check_statistics_pass(model: Any) -> None:
    """Canary: the fast statistics pass counts exactly what bridge hooks count (once per model)."""
    if _act_fn_modules(model) is None:
        return  # statistics use the exact path already
    n_layers, d_mlp = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    device = model_device(model)
    row = torch.tensor([canary_ids(model, 8)], device=device)
    first = 1 if getattr(model.tokenizer, "bos_token_id", None) is not None else 0

    def count(exact: bool) -> torch.Tensor:
        state: dict[str, Any] = {
            "first_position": first,
            "seen": [0] * n_layers,
            "fires": torch.zeros(n_layers, d_mlp, dtype=torch.int64, device=device),
            "sums": torch.zeros(n_layers, d_mlp, dtype=torch.float64, device=device),
        }
        with _counting(model, state, exact=exact):
            run_body(model, row)
        return torch.cat([state["fires"].flatten().double(), state["sums"].flatten()])

    mode = "bridge with act_fn hooks" if hooks_attached(model) else "unwrapped HF modules"
    verify(model, f"statistics pass ({mode})", lambda: (count(False), count(True)))


def collect_activation_stats(
    model: Any,
    corpus: MultilingualCorpus,
    *,
    batch_size: int = 8,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    progress: bool = True,
) -> ActivationStats:
    """Stream ``corpus`` through ``model`` and count, per language, how often each MLP neuron fires.

    This is the pass of LAPE (Tang et al. 2024, ``activation.py``): for each language,
    ``fire_counts[l, i] = #(act_fn(gate) > 0)`` over every counted token and ``n`` the
    token count. The forward stops after the last block and never computes logits.

    Args:
        model: a TransformerBridge (see :func:`mlneurons.load_model`).
        corpus: the text, packed into rows.
        batch_size: rows per forward pass.
        checkpoint: a file to save progress to every ``checkpoint_every`` batches; if it
            exists and matches this model and corpus, the run continues from it and
            gives the same totals as an uninterrupted run.
        checkpoint_every: batches between checkpoints.
        progress: show tqdm progress bars.

    Returns:
        The per-language :class:`ActivationStats`.
    """
    n_layers, d_mlp = int(model.cfg.n_layers), int(model.cfg.d_mlp)
    tokenizer = getattr(model, "tokenizer", None)
    first_position = 1 if corpus.bos_id(tokenizer) is not None else 0
    device = model_device(model)
    stats = ActivationStats.empty(corpus.languages, n_layers, d_mlp, model=fingerprint(model))
    stats.corpus = corpus.to_dict()
    rows_done = {lang: 0 for lang in corpus.languages}
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and checkpoint.exists():
        stats, rows_done = _resume(checkpoint, stats, corpus, batch_size)

    check_statistics_pass(model)
    state: dict[str, Any] = {"first_position": first_position, "seen": [0] * n_layers}
    content = corpus.content_length(tokenizer)
    with torch.inference_mode(), _counting(model, state):
        for li, lang in enumerate(corpus.languages):
            fires = torch.zeros(n_layers, d_mlp, dtype=torch.int64, device=device)
            sums = torch.zeros(n_layers, d_mlp, dtype=torch.float64, device=device)
            state.update(fires=fires, sums=sums)
            total = (
                None
                if corpus.tokens_per_language is None
                else corpus.tokens_per_language // content
            )
            bar = tqdm(
                total=total,
                desc=f"stats {lang}",
                unit="row",
                disable=not progress,
                initial=rows_done[lang],
            )
            skip, seen, since_checkpoint = rows_done[lang], 0, 0
            for batch in corpus.rows(lang, tokenizer, batch_size=batch_size):
                seen += len(batch)
                if seen <= skip:
                    continue
                run_body(model, batch.to(device))
                if min(state["seen"]) == 0:
                    raise RuntimeError(
                        "the neuron counters did not fire in every layer of this model"
                    )
                stats.token_counts[li] += batch[:, first_position:].numel()
                rows_done[lang] = seen
                bar.update(len(batch))
                since_checkpoint += 1
                if checkpoint is not None and since_checkpoint >= checkpoint_every:
                    _fold(stats, li, state)
                    _save_checkpoint(checkpoint, stats, rows_done, corpus, batch_size)
                    since_checkpoint = 0
            bar.close()
            _fold(stats, li, state)
            if checkpoint is not None:
                _save_checkpoint(checkpoint, stats, rows_done, corpus, batch_size)
    return stats


def _fold(stats: ActivationStats, li: int, state: dict[str, Any]) -> None:
    """Move the running per-language totals into ``stats`` and zero them."""
    stats.fire_counts[li] += state["fires"].cpu()
    stats.activation_sums[li] += state["sums"].cpu()
    state["fires"].zero_()
    state["sums"].zero_()


def _save_checkpoint(
    path: Path,
    stats: ActivationStats,
    rows_done: dict[str, int],
    corpus: MultilingualCorpus,
    batch_size: int,
) -> None:
    stats.save(
        path, extra={"rows_done": rows_done, "corpus_key": corpus.key(), "batch_size": batch_size}
    )


def _resume(
    path: Path, fresh: ActivationStats, corpus: MultilingualCorpus, batch_size: int
) -> tuple[ActivationStats, dict[str, int]]:
    saved, meta = ActivationStats._load(path)
    if "rows_done" not in meta:
        raise UserError(
            f"{str(path)!r} holds finished statistics, not a checkpoint; pick another path"
        )
    if meta.get("batch_size") != batch_size:
        raise UserError(
            f"checkpoint {str(path)!r} was written with batch_size={meta.get('batch_size')}; "
            f"resume with that batch size, not {batch_size}"
        )
    if saved.model.get("hash") != fresh.model.get("hash") or meta.get("corpus_key") != corpus.key():
        raise UserError(
            f"checkpoint {str(path)!r} belongs to another model or corpus "
            f"(model {saved.model.get('name')!r}, corpus {saved.corpus}); delete it or pick another path"
        )
    return saved, {lang: int(meta["rows_done"].get(lang, 0)) for lang in corpus.languages}


__all__ = ["ActivationStats", "check_statistics_pass", "collect_activation_stats", "STATS_FILE"]
