"""Scoring modes of candidate ranking: how a filled candidate is scored (higher is better)."""

from __future__ import annotations

from typing import Literal

Scoring = Literal["sentence", "sum", "mean", "sentence-ce"]
"""How a candidate is scored for ranking (higher is better); :data:`SCORINGS` says each."""

SCORINGS: dict[str, str] = {
    "sentence": "whole-sentence log-likelihood: the summed log-probability of every token of "
    "the filled sentence (counted from the first token the candidates differ in, as the "
    "tokens before it add the same to every candidate), so the template's tokens after "
    "the object count too",
    "sum": "summed log-probability of the object's tokens (those overlapping its characters), "
    "each given every token before it",
    "mean": "mean log-probability of the object's tokens (TyQ-like; for masked LMs mLAMA's "
    "TyQ: the mean log-softmax of its tokens at its own masks)",
    "sentence-ce": "minus the mean cross-entropy over every token of the filled sentence "
    "after BOS (RankC's causal scoring)",
}
"""The scoring modes: causal LMs take all four (default ``sentence``); masked LMs ``mean``
(default, mLAMA's TyQ) and ``sum`` (the log-softmax at the candidate's masks summed)."""

CAUSAL_SCORINGS: tuple[str, ...] = ("sentence", "sum", "mean", "sentence-ce")
MASKED_SCORINGS: tuple[str, ...] = ("mean", "sum")

__all__ = ["CAUSAL_SCORINGS", "MASKED_SCORINGS", "SCORINGS", "Scoring"]
