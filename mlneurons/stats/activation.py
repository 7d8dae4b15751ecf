"""Per-language statistics of MLP neuron activations: LAPE's pass, a view over the collector.

For every language, layer and neuron this counts how often the neuron fires
(``mlp.hook_pre > 0``, LAPE's "activation") and sums the act_fn output that
interventions set, over every counted token. It is :func:`mlneurons.stats.collector.collect`
over the default hook points (every MLP's neurons) with one label per language, so it
streams, checkpoints, resumes and merges like every other collected statistic.

The same view holds any hook points of equal width, one per "layer": the features of
spliced dictionaries (:mod:`mlneurons.models.dictionary`) make LAPE run over features.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float, Int

from mlneurons.cache import cache_dir
from mlneurons.data.corpus import MultilingualCorpus
from mlneurons.errors import UserError
from mlneurons.models.bridge import TransformerBridge
from mlneurons.models.dictionary import feature_widths
from mlneurons.results import Result, read_tensors
from mlneurons.stats.collector import HookStats, Labelled
from mlneurons.stats.distributed import run_pass

STATS_FILE = "stats.safetensors"


@dataclass
class ActivationStats(Result):
    """Per-language firing counts and activation sums of every MLP neuron.

    Attributes:
        languages: the order of the first axis.
        fire_counts: ``[language, layer, neuron]`` number of tokens with ``hook_pre > 0``.
        activation_sums: ``[language, layer, neuron]`` sum of the act_fn output (float64).
        token_counts: ``[language]`` tokens counted (BOS positions excluded).
        model: fingerprint of the model (see :func:`mlneurons.models.fingerprint`).
        corpus: description of the corpus.
        points: the hook point of each layer (empty for statistics made by hand).
    """

    languages: list[str]
    fire_counts: Int[torch.Tensor, "language layer neuron"]
    activation_sums: Float[torch.Tensor, "language layer neuron"]
    token_counts: Int[torch.Tensor, " language"]
    model: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)
    points: list[str] = field(default_factory=list)

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
            list(self.points),
        )

    def __add__(self, other: ActivationStats) -> ActivationStats:
        """Merge two runs (shards, processes): counts and sums add; languages unite."""
        return ActivationStats.from_collected(self.to_collected() + other.to_collected())

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

    @classmethod
    def from_collected(cls, collected: HookStats) -> ActivationStats:
        """The view of collected statistics at MLP neuron points (needs ``fires``)."""
        return cls(
            list(collected.labels),
            collected.stacked("fires"),
            collected.stacked("sums").double(),
            collected.tokens.clone(),
            dict(collected.model),
            dict(collected.meta.get("source", {})),
            list(collected.points),
        )

    def to_collected(self) -> HookStats:
        """These statistics as collector state (to merge, save or reduce across processes)."""
        points = self.points or [f"blocks.{layer}.mlp.neurons" for layer in range(self.n_layers)]
        return HookStats(
            list(self.languages),
            points,
            {p: self.activation_sums[:, i] for i, p in enumerate(points)},
            {p: self.fire_counts[:, i] for i, p in enumerate(points)},
            {},
            self.token_counts.double(),
            self.token_counts.clone(),
            torch.zeros_like(self.token_counts),
            {"model": self.model, "source": self.corpus},
        )

    TENSOR_FILE: ClassVar[str] = STATS_FILE

    def save(
        self, path: str | Path, *, extra: dict[str, Any] | None = None, config: Any = None
    ) -> Path:
        """Write ``path`` if it ends in ``.safetensors``, else ``path/stats.safetensors`` (and
        ``cfg.json`` beside it with ``config``); returns it."""
        path = Path(path)
        if config is not None:
            config.save(path.parent if path.suffix == ".safetensors" else path)
        if path.suffix != ".safetensors":
            path = path / STATS_FILE
        return self.to_collected().save(path, extra=extra)

    @classmethod
    def load(cls, path: str | Path) -> ActivationStats:
        """Read what :meth:`save` wrote (a file, or a directory holding ``stats.safetensors``),
        a checkpoint of :func:`collect_activation_stats`, or a file of mlneurons 0.1's layout."""
        path = Path(path)
        if path.is_dir():
            path = path / STATS_FILE
        tensors, meta = read_tensors(path, STATS_FILE)
        if "fire_counts" in tensors:  # the layout before the collector
            return cls(
                meta["languages"],
                tensors["fire_counts"],
                tensors["activation_sums"],
                tensors["token_counts"],
                meta.get("model", {}),
                meta.get("corpus", {}),
            )
        return cls.from_collected(HookStats.load(path))


def corpus_batches(
    corpus: MultilingualCorpus,
    tokenizer: Any,
    batch_size: int,
    *,
    cache: str | Path | None = None,
) -> Iterator[Labelled]:
    """The corpus' rows, language after language, labelled with the language's index;
    BOS positions (when the corpus adds them) are not counted. ``cache``: tokenise once
    into memory-mapped files there (see :meth:`MultilingualCorpus.rows`)."""
    skip = 1 if corpus.bos_id(tokenizer) is not None else 0
    for index, language in enumerate(corpus.languages):
        for batch in corpus.rows(language, tokenizer, batch_size=batch_size, cache=cache):
            yield Labelled(batch, index, skip=skip)


def corpus_batch_count(corpus: MultilingualCorpus, tokenizer: Any, batch_size: int) -> int | None:
    """Batches :func:`corpus_batches` yields, when the corpus has a token budget."""
    if corpus.tokens_per_language is None:
        return None
    rows = corpus.tokens_per_language // corpus.content_length(tokenizer)
    return len(corpus.languages) * -(-rows // batch_size)


BLOCKS = 64
"""At most this many blocks of consecutive rows per language in :func:`collect_block_stats`:
the units the stability bootstrap resamples, and the bound on its memory (the totals hold
``languages x blocks x layers x neurons`` counts and sums, whatever the token budget)."""


@dataclass
class BlockStats:
    """LAPE's firing counts per block of consecutive corpus rows of one language.

    The units of the stability bootstrap (:func:`mlneurons.methods.lape.stability`): a
    resample draws each language's blocks with replacement and its activation
    probabilities are weighted sums of the blocks' counts, so no forward pass is repeated.
    :meth:`total` adds the blocks into the per-language :class:`ActivationStats`; its
    firing and token counts equal those of :func:`collect_activation_stats` exactly (the
    activation sums up to float rounding: they are reduced per row).

    Attributes:
        languages: the languages, in corpus order.
        language_of: ``[block]`` index into ``languages`` of each block's language.
        fire_counts: ``[block, layer, neuron]`` tokens with ``hook_pre > 0``.
        activation_sums: ``[block, layer, neuron]`` sum of the act_fn output.
        token_counts: ``[block]`` tokens counted (BOS excluded); every block has some.
        rows_per_block: consecutive rows per block (the last block of a language may hold fewer).
        model: fingerprint of the model.
        corpus: description of the corpus.
        points: the hook point of each layer.
    """

    languages: list[str]
    language_of: Int[torch.Tensor, " block"]
    fire_counts: Int[torch.Tensor, "block layer neuron"]
    activation_sums: Float[torch.Tensor, "block layer neuron"]
    token_counts: Int[torch.Tensor, " block"]
    rows_per_block: int = 1
    model: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)
    points: list[str] = field(default_factory=list)

    def blocks(self, language: str) -> Int[torch.Tensor, " k"]:
        """Indices of ``language``'s blocks."""
        return (self.language_of == self.languages.index(language)).nonzero().flatten()

    def total(self) -> ActivationStats:
        """The per-language statistics: every language's blocks added (integer counts exact)."""
        n = len(self.languages)
        shape = (n, *self.fire_counts.shape[1:])
        fires = torch.zeros(shape, dtype=torch.int64).index_add_(
            0, self.language_of, self.fire_counts
        )
        sums = torch.zeros(shape, dtype=torch.float64).index_add_(
            0, self.language_of, self.activation_sums.double()
        )
        tokens = torch.zeros(n, dtype=torch.int64).index_add_(
            0, self.language_of, self.token_counts
        )
        return ActivationStats(
            list(self.languages), fires, sums, tokens, dict(self.model), dict(self.corpus),
            list(self.points),
        )  # fmt: skip


def block_batches(
    corpus: MultilingualCorpus, tokenizer: Any, batch_size: int, rows_per_block: int, blocks: int
) -> Iterator[Labelled]:
    """The corpus' rows as :func:`corpus_batches` yields them, each row labelled with its
    block: label ``language_index * blocks + row // rows_per_block``."""
    skip = 1 if corpus.bos_id(tokenizer) is not None else 0
    for index, language in enumerate(corpus.languages):
        row = 0
        for batch in corpus.rows(language, tokenizer, batch_size=batch_size):
            labels = index * blocks + torch.arange(row, row + len(batch)) // rows_per_block
            yield Labelled(batch, labels, skip=skip)
            row += len(batch)


def collect_block_stats(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    *,
    blocks: int = BLOCKS,
    batch_size: int = 8,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> BlockStats:
    """LAPE's pass (:func:`collect_activation_stats`) with the counts kept per block of rows.

    Each language's ``R = tokens_per_language // row length`` rows are cut into at most
    ``blocks`` blocks of ``ceil(R / blocks)`` consecutive rows (one row per block when
    ``R <= blocks``); the bootstrap of :func:`mlneurons.methods.lape.stability` resamples
    them. Memory grows with the blocks, never with the tokens.

    Raises:
        UserError: the corpus has no token budget (the blocks are sized from it).
    """
    if blocks < 1:
        raise UserError(f"blocks must be at least 1, got {blocks}")
    if corpus.tokens_per_language is None:
        raise UserError(
            "per-block statistics need a token budget per language (tokens_per_language=...)"
        )
    tokenizer = getattr(model, "tokenizer", None)
    rows = max(1, corpus.tokens_per_language // corpus.content_length(tokenizer))
    per_block = -(-rows // blocks)
    n_blocks = -(-rows // per_block)
    labels = [f"{lang}#{j}" for lang in corpus.languages for j in range(n_blocks)]
    collected = run_pass(
        model,
        lambda: block_batches(corpus, tokenizer, batch_size, per_block, n_blocks),
        labels=labels,
        key={"corpus": corpus.key(), "batch_size": batch_size, "rows_per_block": per_block},
        checkpoint=checkpoint,
        total=corpus_batch_count(corpus, tokenizer, batch_size),
        fires=True,
        source=corpus.to_dict(),
        desc="stats",
        progress=progress,
    )
    assert collected is not None  # None only for a sharded pass
    kept = (collected.tokens > 0).nonzero().flatten()  # a language short of text: fewer blocks
    return BlockStats(
        list(corpus.languages),
        kept // n_blocks,
        collected.stacked("fires")[kept],
        collected.stacked("sums").double()[kept],
        collected.tokens[kept].clone(),
        per_block,
        dict(collected.model),
        dict(collected.meta.get("source", {})),
        list(collected.points),
    )


def collect_activation_stats(
    model: TransformerBridge,
    corpus: MultilingualCorpus,
    *,
    batch_size: int = 8,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 20,
    shards: str | Path | None = None,
    n_shards: int | None = None,
    progress: bool = True,
    points: Sequence[str] | None = None,
) -> ActivationStats | None:
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
        shards: a directory for a data-parallel pass (:mod:`mlneurons.stats.distributed`):
            the batches are split into ``n_shards`` logical shards, each checkpointed in
            its own file; under ``torchrun`` every rank computes its shards and all ranks
            get the sum. Without a rendezvous (``WORLD_SIZE`` > 1 but no ``MASTER_ADDR``)
            this returns None once this rank's shards are written: ``mlneurons merge``.
        n_shards: logical shards, fixed at the first launch (default 8, at least 2 per rank).
        progress: show a tqdm progress bar.
        points: other hook points of equal width to count at instead of the MLP neurons,
            one "layer" each: the feature hook points of spliced dictionaries
            (:func:`mlneurons.models.dictionary.splice`) give LAPE over features, and the
            statistics record the dictionaries (``model["units"]``).

    Returns:
        The per-language :class:`ActivationStats`.
    """
    widths = {
        point: width for point, width in feature_widths(model).items() if point in (points or ())
    }
    if len(set(widths.values())) > 1:
        raise UserError(f"the points are stacked as layers and must be equally wide, got {widths}")
    tokenizer = getattr(model, "tokenizer", None)
    # ranks and restarts of a sharded pass read the rows tokenised once
    token_cache = None if shards is None or tokenizer is None else cache_dir() / "tokens"
    collected = run_pass(
        model,
        lambda: corpus_batches(corpus, tokenizer, batch_size, cache=token_cache),
        labels=list(corpus.languages),
        key={"corpus": corpus.key(), "batch_size": batch_size}
        | ({"points": list(points)} if points else {}),
        shards=shards,
        n_shards=n_shards,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        total=corpus_batch_count(corpus, tokenizer, batch_size),
        fires=True,
        names_filter=list(points) if points else None,
        source=corpus.to_dict(),
        desc="stats",
        progress=progress,
    )
    return None if collected is None else ActivationStats.from_collected(collected)


__all__ = [
    "BLOCKS",
    "ActivationStats",
    "BlockStats",
    "block_batches",
    "collect_block_stats",
    "collect_activation_stats",
    "corpus_batch_count",
    "corpus_batches",
    "STATS_FILE",
]
