"""Multilingual corpora: per-language token streams packed into fixed-length rows.

As in the LAPE reference implementation, each language's text is tokenized,
concatenated into one stream and cut into rows of ``seq_len`` tokens: no padding,
every position counts. A row may start with the tokenizer's BOS token, which is
never counted in statistics (it is the same token for every language).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int

from mlneurons.data.builtin_text import (
    DEFAULT_LANGUAGES,
    available_languages,
    builtin_paragraphs,
    checked_text_sha256,
    dataset_build_version,
    normalize_language,
)
from mlneurons.errors import UserError
from mlneurons.results import write_json

TextSource = Callable[[], Iterable[str]]
Source = TextSource | Int[torch.Tensor, " tokens"]


@dataclass
class MultilingualCorpus:
    """Per-language token streams, packed into rows of ``seq_len`` tokens.

    Build one with :meth:`builtin`, :meth:`from_files`, :meth:`from_dataset`,
    :meth:`from_hf` or :meth:`from_token_ids`. Iteration is deterministic: the same corpus and
    tokenizer always give the same rows.

    Attributes:
        sources: language -> a callable yielding documents (text), or a 1-D LongTensor
            of token ids.
        seq_len: tokens per row, including the BOS token when ``add_bos``.
        tokens_per_language: the token budget per language (LAPE's "up to N tokens");
            ``None`` uses all the text.
        add_bos: start every row with the tokenizer's BOS token (not counted).
        description: where the text came from, recorded in saved results.
    """

    sources: dict[str, Source]
    seq_len: int = 256
    tokens_per_language: int | None = None
    add_bos: bool = True
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.sources:
            raise UserError("a MultilingualCorpus needs at least one language")
        if self.seq_len < 2:
            raise UserError(f"seq_len must be at least 2, got {self.seq_len}")
        if self.tokens_per_language is not None and self.tokens_per_language < 1:
            raise UserError(f"tokens_per_language must be positive, got {self.tokens_per_language}")

    @property
    def languages(self) -> list[str]:
        return list(self.sources)

    # ---- constructors -------------------------------------------------------------

    @classmethod
    def builtin(
        cls,
        languages: Iterable[str] = DEFAULT_LANGUAGES,
        *,
        split: str = "train",
        heldout_fraction: float = 0.2,
        **options: Any,
    ) -> MultilingualCorpus:
        """The built-in prose of the ``dataset_build`` package, cleaned.

        Args:
            languages: ISO 639-1 (``"fr"``) or ISO 639-3 (``"fra"``) codes.
            split: ``"train"`` (the first paragraphs) or ``"heldout"`` (the last
                ``heldout_fraction`` of them), so that neurons are never evaluated on
                the text that selected them; ``"all"`` for both.
            **options: ``seq_len``, ``tokens_per_language``, ``add_bos``.
        """
        if split not in ("train", "heldout", "all"):
            raise UserError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
        if not 0 < heldout_fraction < 1:
            raise UserError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        codes = [normalize_language(code) for code in languages]

        def paragraphs(code: str) -> TextSource:
            def read() -> list[str]:
                all_paragraphs = builtin_paragraphs(code)
                cut = round(len(all_paragraphs) * (1 - heldout_fraction))
                if split == "all":
                    return all_paragraphs
                return all_paragraphs[:cut] if split == "train" else all_paragraphs[cut:]

            return read

        description = {
            "source": "builtin",
            "split": split,
            "heldout_fraction": heldout_fraction,
            "dataset_build": dataset_build_version(),
            "text_sha256": {code: checked_text_sha256(code) for code in codes},
        }
        return cls({code: paragraphs(code) for code in codes}, description=description, **options)

    @classmethod
    def from_files(
        cls, files: str | Path | Mapping[str, str | Path | list[str | Path]], **options: Any
    ) -> MultilingualCorpus:
        """Text files per language.

        The files are streamed line by line, never read whole: memory stays bounded
        whatever their size. A line longer than :data:`LINE_LIMIT` characters is read in
        pieces of at most that many characters, cut after the last whitespace of each
        piece where it has one, and each piece is a document.

        Args:
            files: a folder holding ``{lang}.txt`` files or ``{lang}/`` sub-folders of
                ``*.txt`` files, or a mapping language -> file, folder or list of files.
                Each non-empty line is a document.
        """
        if not isinstance(files, Mapping):
            folder = Path(files)
            if not folder.is_dir():
                raise UserError(f"corpus folder {str(folder)!r} does not exist")
            files = {
                (p.stem if p.is_file() else p.name): p
                for p in sorted(folder.iterdir())
                if (p.is_file() and p.suffix == ".txt") or p.is_dir()
            }
            if not files:
                raise UserError(
                    f"corpus folder {str(folder)!r} has no {{lang}}.txt files or folders"
                )
        sources: dict[str, Source] = {}
        versions: dict[
            str, list[list[Any]]
        ] = {}  # so that a checkpoint never resumes on edited files
        for lang, spec in files.items():
            specs = spec if isinstance(spec, list) else [spec]
            paths: list[Path] = []
            for item in map(Path, specs):
                if item.is_dir():
                    paths.extend(sorted(item.glob("*.txt")))
                elif item.is_file():
                    paths.append(item)
                else:
                    raise UserError(
                        f"corpus file {str(item)!r} for language {lang!r} does not exist"
                    )
            if not paths:
                raise UserError(f"no .txt files for language {lang!r} in {[str(s) for s in specs]}")
            sources[lang] = _read_lines(paths)
            versions[lang] = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in paths]
        description = {"source": "files", "files": versions}
        return cls(sources, description=description, **options)

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        *,
        text_column: str = "text",
        language_column: str | None = None,
        languages: Iterable[str] | None = None,
        **options: Any,
    ) -> MultilingualCorpus:
        """A Hugging Face ``datasets`` dataset, map-style or streamed (``IterableDataset``).

        Rows are read lazily, one at a time, each time a language's text is needed: memory
        stays bounded whatever the dataset's size. With a ``language_column`` each
        language's pass reads every row and keeps its own (one split per language reads
        each row once).

        Args:
            dataset: a ``DatasetDict`` (or ``IterableDatasetDict``, or a mapping) whose keys
                are languages, or one dataset with a ``language_column``. Load local
                files with ``datasets.load_dataset("json", data_files=...,
                streaming=True)``, or see :meth:`from_hf`.
            text_column: the column holding the text; each row is a document.
            language_column: the column holding the language, for a single dataset.
            languages: keep only these languages (default: all). Required for a streamed
                dataset with a ``language_column``, whose languages are unknown until it
                is read; there a language without rows has no text.
        """
        if isinstance(dataset, Mapping):
            parts: dict[str, Any] = dict(dataset)
            column = None
        else:
            if language_column is None:
                raise UserError(
                    "a single Dataset needs language_column=...; or pass a DatasetDict "
                    "keyed by language"
                )
            names = _column_names(dataset)
            if names is not None and language_column not in names:
                raise UserError(
                    f"language_column {language_column!r} is not a column; columns are {names}"
                )
            if hasattr(dataset, "unique"):  # map-style: its languages, from Arrow
                found = sorted(map(str, dataset.unique(language_column)))
            elif languages is None:
                raise UserError(
                    "a streamed dataset with a language_column needs languages=[...]: its "
                    "languages are unknown until it is read"
                )
            else:
                found = list(languages)
            parts = dict.fromkeys(found, dataset)
            column = language_column
        if languages is not None:
            wanted = list(languages)
            missing = [lang for lang in wanted if lang not in parts]
            if missing:
                raise UserError(
                    f"languages {missing} are not in the dataset; it has {sorted(parts)}"
                )
            parts = {lang: parts[lang] for lang in wanted}
        for lang, part in parts.items():
            names = _column_names(part)
            if names is not None and text_column not in names:
                raise UserError(
                    f"text_column {text_column!r} is not a column of language {lang!r}; "
                    f"columns are {names}"
                )
        sources: dict[str, Source] = {
            lang: _dataset_texts(part, text_column, column, lang) for lang, part in parts.items()
        }
        description = {
            "source": "datasets",
            "text_column": text_column,
            "language_column": language_column,
            "fingerprints": {
                lang: getattr(part, "_fingerprint", None) for lang, part in parts.items()
            },
        }
        description.update(options.pop("description", {}))
        return cls(sources, description=description, **options)

    @classmethod
    def from_hf(
        cls,
        source: str | Path,
        config: str | None = None,
        *,
        text_column: str = "text",
        language_column: str | None = None,
        languages: Iterable[str] | None = None,
        **options: Any,
    ) -> MultilingualCorpus:
        """A ``datasets`` corpus read from this machine, streamed (no network).

        ``source`` is one of:

        * a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``
          (read with ``datasets.load_from_disk``, memory-mapped Arrow files);
        * a folder of ``{lang}.jsonl``, ``{lang}.json``, ``{lang}.parquet`` or
          ``{lang}.csv`` data files, one language each (``datasets.load_dataset(...,
          streaming=True)``: read row by row, nothing converted or cached);
        * a dataset name (with its ``config``) already in the local Hugging Face cache,
          loaded with the hub offline, from its memory-mapped Arrow files.

        The splits (or files) are the languages, unless ``language_column`` names the
        column holding each row's language. The rest is :meth:`from_dataset`.

        Args:
            source: the folder or the cached dataset's name.
            config: the dataset's configuration (cached datasets only).
            text_column: the column holding the text; each row is a document.
            language_column: the column holding each row's language, if the splits are
                not the languages.
            languages: read only these; those the dataset lacks are left out (a streamed
                dataset with a ``language_column`` cannot tell before it is read: there
                they have no text).
            **options: ``seq_len``, ``tokens_per_language``, ``add_bos``.

        Raises:
            UserError: no such folder or cached dataset, a folder mixing data-file
                formats, a missing column, none of ``languages`` in the dataset.
        """
        import datasets

        path = Path(source)
        if path.is_dir() and any((path / f).exists() for f in ("dataset_dict.json", "state.json")):
            data = datasets.load_from_disk(str(path))
            description: dict[str, Any] = {"path": str(path.resolve()), "layout": "save_to_disk"}
        elif path.is_dir():
            files = {p.stem: p for p in sorted(path.iterdir()) if p.suffix in _DATA_FILES}
            kinds = sorted({_DATA_FILES[p.suffix] for p in files.values()})
            if len(kinds) != 1:
                raise UserError(
                    f"dataset folder {str(path)!r} needs {{lang}}.jsonl, .json, .parquet or .csv "
                    f"files of one kind, or a save_to_disk folder; found "
                    f"{sorted(p.name for p in files.values()) or 'none'}"
                )
            data = datasets.load_dataset(
                kinds[0], data_files={lang: str(p) for lang, p in files.items()}, streaming=True
            )
            description = {
                "path": str(path.resolve()),
                "layout": "files",
                "files": {
                    k: [p.name, p.stat().st_size, p.stat().st_mtime_ns] for k, p in files.items()
                },
            }
        elif str(source).startswith(("/", ".", "~")) or str(source).count("/") > 1:
            raise UserError(f"dataset folder {str(source)!r} does not exist")
        else:
            with _hub_offline():
                try:
                    data = datasets.load_dataset(str(source), config)
                except Exception as exc:  # what the user named is not on this machine
                    named = f"{str(source)!r}" + (f" (config {config!r})" if config else "")
                    reason = (str(exc).splitlines() or [""])[0]
                    raise UserError(
                        f"no dataset {named}: not a folder, and not in the local Hugging Face "
                        f"cache (the hub is not reached at run time): {type(exc).__name__} "
                        f"{reason}"
                    ) from exc
            description = {"name": str(source), "config": config, "layout": "cache"}
        if language_column is not None and isinstance(data, Mapping):  # rows carry languages
            if len(data) != 1:
                raise UserError(
                    f"dataset {str(source)!r} has the splits {list(data)}; with a language "
                    "column it must have one split (or name the splits by language)"
                )
            data = next(iter(data.values()))
        if languages is not None:
            wanted = list(languages)
            have: list[str] | None = None  # unknown (a stream with a language column)
            if language_column is None and isinstance(data, Mapping):
                have = list(data)
            elif language_column in (getattr(data, "column_names", None) or ()) and hasattr(
                data, "unique"
            ):
                have = sorted(map(str, data.unique(language_column)))
            languages = [lang for lang in wanted if have is None or lang in have]
            if not languages:
                raise UserError(
                    f"none of the languages {wanted} is in the dataset {str(source)!r}; "
                    f"it has {have}"
                )
        return cls.from_dataset(
            data,
            text_column=text_column,
            language_column=language_column,
            languages=languages,
            description=description,
            **options,
        )

    @classmethod
    def from_token_ids(
        cls, token_ids: Mapping[str, Int[torch.Tensor, " tokens"]], **options: Any
    ) -> MultilingualCorpus:
        """Raw token ids per language (1-D LongTensors), packed as they are (with a BOS per
        row when ``add_bos``, the default)."""
        tensors: dict[str, torch.Tensor] = {}
        for lang, ids in token_ids.items():
            ids = torch.as_tensor(ids)
            if ids.dim() != 1 or ids.dtype not in (torch.int64, torch.int32):
                raise UserError(
                    f"token ids of {lang!r} must be a 1-D integer tensor, got "
                    f"{tuple(ids.shape)} {ids.dtype}"
                )
            tensors[lang] = ids.long()
        digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in tensors.values()))
        sources: dict[str, Source] = dict(tensors)
        return cls(
            sources, description={"source": "token_ids", "hash": digest.hexdigest()[:16]}, **options
        )

    # ---- iteration ----------------------------------------------------------------

    def subset(self, languages: Iterable[str]) -> MultilingualCorpus:
        """The same corpus restricted to ``languages``, normalised as everywhere (``"FR"`` is
        ``"fr"``); unknown ones raise :class:`~mlneurons.errors.UserError`."""
        wanted, missing = [], []
        for lang in languages:
            try:
                wanted.append(normalize_language(lang, self.languages))
            except UserError:
                missing.append(lang)
        if missing:
            raise UserError(f"unknown languages {missing}; this corpus has {self.languages}")
        return MultilingualCorpus(
            {lang: self.sources[lang] for lang in wanted},
            seq_len=self.seq_len,
            tokens_per_language=self.tokens_per_language,
            add_bos=self.add_bos,
            description=self.description,
        )

    def bos_id(self, tokenizer: Any) -> int | None:
        """The BOS id put at the start of every row, or None."""
        if not self.add_bos or tokenizer is None:
            return None
        return getattr(tokenizer, "bos_token_id", None)

    def content_length(self, tokenizer: Any) -> int:
        """Language tokens per row (``seq_len`` minus the BOS position)."""
        return self.seq_len - (self.bos_id(tokenizer) is not None)

    def token_stream(self, language: str, tokenizer: Any) -> Iterator[Int[torch.Tensor, " n"]]:
        """The language's token ids, in pieces, in a fixed order."""
        if language not in self.sources:
            raise UserError(f"unknown language {language!r}; this corpus has {self.languages}")
        source = self.sources[language]
        if isinstance(source, torch.Tensor):
            yield source
            return
        if tokenizer is None:
            raise UserError(f"language {language!r} is text and needs a tokenizer")
        for document in source():
            document = document.strip()
            if document:
                ids = tokenizer(document + "\n\n", add_special_tokens=False)["input_ids"]
                yield torch.from_numpy(np.array(ids, dtype=np.int64))  # faster than from a list

    def has_text(self, language: str) -> bool:
        """Whether ``language`` has any text, reading up to its first non-empty document."""
        source = self.sources[language]
        if isinstance(source, torch.Tensor):
            return source.numel() > 0
        return any(document.strip() for document in source())

    def rows(
        self,
        language: str,
        tokenizer: Any,
        *,
        batch_size: int = 1,
        cache: str | Path | None = None,
    ) -> Iterator[Int[torch.Tensor, "batch seq"]]:
        """Packed rows of one language, ``batch_size`` at a time, up to the token budget.

        The last partial row is dropped, as in the reference implementation. With ``cache``
        (a directory) the rows are tokenised once into a memory-mapped file keyed by the
        corpus and the tokenizer; later passes (other ranks, restarts) read it instead.

        Raises:
            ValueError: the language has fewer tokens than one row.
        """
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        if cache is not None:
            packed = self.cached_rows(language, tokenizer, cache)
            for start in range(0, len(packed), batch_size):
                yield torch.from_numpy(packed[start : start + batch_size].astype("int64"))
            return
        content = self.content_length(tokenizer)
        bos = self.bos_id(tokenizer)
        budget_rows = (
            None if self.tokens_per_language is None else self.tokens_per_language // content
        )
        if budget_rows == 0:
            raise UserError(
                f"tokens_per_language={self.tokens_per_language} is less than one row of "
                f"{content} language tokens (seq_len={self.seq_len})"
            )
        buffer = torch.empty(0, dtype=torch.long)
        batch: list[torch.Tensor] = []
        made = 0
        for piece in self.token_stream(language, tokenizer):
            buffer = torch.cat([buffer, piece])
            while buffer.numel() >= content and (budget_rows is None or made < budget_rows):
                row, buffer = buffer[:content], buffer[content:]
                if bos is not None:
                    row = torch.cat([torch.tensor([bos]), row])
                batch.append(row)
                made += 1
                if len(batch) == batch_size:
                    yield torch.stack(batch)
                    batch = []
            if budget_rows is not None and made >= budget_rows:
                break
        if batch:
            yield torch.stack(batch)
        if made == 0:
            raise UserError(
                f"language {language!r} has fewer than one row of tokens "
                f"({buffer.numel()} < {content}); give it more text or lower seq_len"
            )

    def cached_rows(self, language: str, tokenizer: Any, cache: str | Path) -> Any:
        """All packed rows of ``language`` as a read-only int32 memory map ``[rows, seq_len]``,
        tokenised into ``cache`` on first use."""

        name = f"{self.key()}-{tokenizer_key(tokenizer)}-{language}"
        path = Path(cache) / f"{name}.int32"
        shape_file = path.with_suffix(".json")
        if not shape_file.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            n_rows = 0
            with tmp.open("wb") as handle:
                for batch in self.rows(language, tokenizer, batch_size=256):
                    handle.write(batch.numpy().astype(np.int32).tobytes())
                    n_rows += len(batch)
            tmp.replace(path)
            write_json(shape_file.parent, shape_file.name, {"rows": n_rows, "width": self.seq_len})
        shape = json.loads(shape_file.read_text())
        return np.memmap(path, dtype=np.int32, mode="r", shape=(shape["rows"], shape["width"]))

    def to_dict(self) -> dict[str, Any]:
        """A JSON description of the corpus, recorded in saved results."""
        return {
            **self.description,
            "languages": self.languages,
            "seq_len": self.seq_len,
            "tokens_per_language": self.tokens_per_language,
            "add_bos": self.add_bos,
        }

    def key(self) -> str:
        """A short hash of :meth:`to_dict`, used to match checkpoints to corpora."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


LINE_LIMIT = 1 << 20
"""The longest document read from a text file, in characters: a longer line is read in
pieces (cut after their last whitespace), so that memory stays bounded."""


def _read_lines(paths: list[Path]) -> TextSource:
    def read() -> Iterator[str]:
        for path in paths:
            with open(path, encoding="utf-8") as handle:
                yield from _lines(handle, LINE_LIMIT)

    return read


def _lines(handle: Any, limit: int) -> Iterator[str]:
    """The non-empty lines of ``handle``, a line longer than ``limit`` characters in pieces
    of at most ``limit``, each cut after its last whitespace when it has one."""
    carry = ""
    while True:
        piece = carry + handle.readline(limit - len(carry))
        if piece == carry:  # end of file
            if carry.strip():
                yield carry
            return
        carry = ""
        if len(piece) >= limit and not piece.endswith("\n"):  # part of a longer line
            cut = max(piece.rfind(c) for c in " \t\r\f\v") + 1 or len(piece)
            piece, carry = piece[:cut], piece[cut:]
        if piece.strip():
            yield piece


def _column_names(part: Any) -> list[str] | None:
    """The columns of a dataset, from its features or else its first row; None if empty."""
    names = getattr(part, "column_names", None)
    if names is None:  # a streamed dataset whose features are unknown until it is read
        first = next(iter(part), None)
        names = None if first is None else list(first)
    return None if names is None else list(names)


def _dataset_texts(
    part: Any, text_column: str, language_column: str | None, language: str
) -> TextSource:
    """The texts of a dataset's rows, lazily (of ``language`` only with a language column)."""
    columns = [text_column, *([language_column] if language_column else [])]

    def read() -> Iterator[str]:
        rows = part.select_columns(columns) if hasattr(part, "select_columns") else part
        for row in rows:
            if language_column is None or str(row[language_column]) == language:
                yield row[text_column] or ""

    return read


_DATA_FILES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
"""Data-file suffixes of :meth:`MultilingualCorpus.from_hf` -> their ``datasets`` builder."""


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Keep ``datasets`` and ``huggingface_hub`` off the network (they read
    ``HF_HUB_OFFLINE`` at import, so their constants are set, and restored after)."""
    import datasets.config
    import huggingface_hub.constants as hub

    old = hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE
    hub.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    datasets.config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = old[0], old[1]
        datasets.config.HF_DATASETS_OFFLINE = old[2]


def tokenizer_key(tokenizer: Any) -> str:
    """A short hash of what a tokenizer does (its serialised rules or vocabulary)."""
    known: str | None = getattr(tokenizer, "_mlneurons_key", None)
    if known is not None:
        return known
    digest = hashlib.sha256(str(getattr(tokenizer, "name_or_path", "")).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    key = digest.hexdigest()[:16]
    try:
        tokenizer._mlneurons_key = key
    except AttributeError:
        pass
    return key


__all__ = ["DEFAULT_LANGUAGES", "MultilingualCorpus", "available_languages", "tokenizer_key"]
