"""Token ids of a text and readable token strings, as the live views show them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def sentence_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` starting with BOS (added when the tokenizer does not add it)."""
    ids: list[int] = list(tokenizer(text)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    return ids


def overlapping_tokens(tokenizer: Any, text: str, spans: Sequence[tuple[int, int]]) -> list[int]:
    """Positions in :func:`sentence_ids` of ``text`` of the tokens that overlap a character span.

    A token counts when its characters (the tokenizer's offsets) share at least one
    character with a span ``[start, end)``: a token that merges the span's first
    character with the text before it counts, a bare space token before it does not.
    Special tokens (BOS) never count. Needs a fast tokenizer (character offsets).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} gives no character offsets (not a fast tokenizer), "
            "so the object's tokens cannot be told apart from the template's"
        )
    encoded = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    shift = len(sentence_ids(tokenizer, text)) - len(ids)  # 1 where BOS is added by hand
    return [
        shift + i
        for i, (start, end) in enumerate(offsets)
        if end > start and any(start < b and end > a for a, b in spans)
    ]


def encode(tokenizer: Any, text: str, max_tokens: int = 256) -> list[int]:
    """Token ids of ``text``, BOS first when the tokenizer has one, at most ``max_tokens``."""
    return sentence_ids(tokenizer, text)[:max_tokens]


def bos_count(tokenizer: Any, ids: Sequence[int]) -> int:
    """1 when ``ids`` start with the tokenizer's BOS, else 0."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return 1 if bos is not None and len(ids) and ids[0] == bos else 0


def display_tokens(tokenizer: Any, ids: Sequence[int]) -> tuple[list[str], list[list[int]]]:
    """Readable token strings, with byte-fallback pieces merged into whole characters.

    Returns the strings and, for each, the positions of ``ids`` it covers.
    """
    pieces: list[str] = []
    groups: list[list[int]] = []
    previous, start = "", 0
    for i in range(len(ids)):
        text = tokenizer.decode(list(ids[: i + 1]))
        if text.endswith("\ufffd") and i + 1 < len(ids):
            continue  # an incomplete UTF-8 character: wait for its other bytes
        piece = (
            text[len(previous) :]
            if text.startswith(previous)
            else tokenizer.decode(list(ids[start : i + 1]))
        )
        pieces.append(piece)
        groups.append(list(range(start, i + 1)))
        previous, start = text, i + 1
    return pieces, groups


__all__ = ["bos_count", "display_tokens", "encode", "overlapping_tokens", "sentence_ids"]
