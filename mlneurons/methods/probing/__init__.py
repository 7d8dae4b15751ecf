"""Factual probing (mLAMA, Zhao et al.): causal LMs in ``causal``, masked LMs in ``masked``,
one result type in ``result``; :func:`probe` picks the right one for the model."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

from mlneurons.errors import UserError
from mlneurons.evaluation.uncertainty import Uncertainty
from mlneurons.methods.probing.scoring import (
    CAUSAL_SCORINGS,
    MASKED_SCORINGS,
    SCORINGS,
    Scoring,
)
from mlneurons.models.bridge import TransformerBridge

if TYPE_CHECKING:
    from mlneurons.data.facts import FactSet
    from mlneurons.methods.probing.result import ProbeResult
    from mlneurons.world import World

ProbingMethod = Literal["typed", "zhao"]
"""How facts are probed: ``typed`` ranks each relation's candidates (mLAMA); ``zhao``
decodes a masked LM's answer without candidates (Zhao et al.'s full match)."""


def probe(
    model: TransformerBridge,
    facts: FactSet,
    *,
    method: ProbingMethod = "typed",
    scoring: Scoring | None = None,
    interventions: Sequence[tuple[str, Any]] = (),
    batch_size: int = 32,
    world: World | None = None,
    progress: bool = True,
    uncertainty: Uncertainty = Uncertainty(),
) -> ProbeResult:
    """Probe every fact of ``facts``: rank its candidates, P@1 = gold ranked first.

    Causal LMs score filled sentences (:func:`probe_causal`); masked LMs use mLAMA's typed
    ranking (:func:`probe_masked`). ``method="zhao"`` decodes a masked LM's answer without
    candidates instead (:func:`~mlneurons.methods.probing.masked.zhao_match`). A fact's
    candidates are its own where the set gives them (BMLAMA), else its relation's. Ties
    never favour the gold: :func:`~mlneurons.methods.probing.result.tie_break`.

    Args:
        model: a causal or masked-LM TransformerBridge.
        facts: facts, templates and candidates (e.g. ``FactSet.builtin()``).
        method: ``typed`` (rank the candidates) or ``zhao`` (masked LMs only).
        scoring: how candidates are scored (:data:`SCORINGS`); ``None`` takes the model's
            default: ``sentence`` for causal LMs (the whole-sentence log-likelihood),
            ``mean`` for masked LMs (TyQ). ``zhao`` ranks no candidates and takes none.
        interventions: hooks active while probing (e.g. an LRP2 projection).
        batch_size: candidate sentences per forward pass.
        world: under torchrun, each rank probes the facts ``[rank::size]`` and every rank
            gets all predictions, in the order of one process's run.
        uncertainty: how the result's intervals are computed (P@1: Wilson, macro P@1: cluster
            bootstrap, Jaccard: bootstrap and permutation null), recorded in its ``settings``.
    """
    from mlneurons.methods.probing.causal import probe_causal
    from mlneurons.methods.probing.masked import probe_masked, zhao_match
    from mlneurons.models.hooks import is_masked_lm

    if method == "zhao" and not is_masked_lm(model):
        raise UserError("--method zhao needs a masked LM (BERT, XLM-R); use --method typed")
    if method not in ("typed", "zhao"):
        raise UserError(f"method={method!r} is not valid; choose from typed, zhao")
    scoring = check_scoring(scoring, masked=is_masked_lm(model), method=method)
    part = facts.shard(world.rank, world.size) if world is not None else facts
    if interventions:
        with model.hooks(fwd_hooks=list(interventions)):
            result = probe(
                model,
                part,
                method=method,
                scoring=scoring if method == "typed" else None,
                batch_size=batch_size,
                progress=progress,
            )
    elif method == "zhao":
        result = zhao_match(model, part, batch_size=batch_size, progress=progress)
    elif is_masked_lm(model):
        result = probe_masked(
            model, part, scoring=scoring or "mean", batch_size=batch_size, progress=progress
        )
    else:
        result = probe_causal(
            model, part, scoring=scoring or "sentence", batch_size=batch_size, progress=progress
        )
    settings = {**result.settings, "uncertainty": uncertainty.to_json()}
    result = dataclasses.replace(result, settings=settings)
    return result if world is None else _gathered(result, facts, world)


def check_scoring(scoring: str | None, *, masked: bool, method: str = "typed") -> Scoring | None:
    """``scoring`` if the model can score with it, else a one-line :class:`UserError`."""
    if scoring is None:
        return None
    if method == "zhao":
        raise UserError(f"scoring={scoring!r} ranks candidates, and method 'zhao' ranks none")
    allowed = MASKED_SCORINGS if masked else CAUSAL_SCORINGS
    if scoring not in allowed:
        kind = "a masked LM" if masked else "a causal LM"
        raise UserError(
            f"scoring={scoring!r} is not valid for {kind}; choose from {', '.join(allowed)}"
        )
    return cast(Scoring, scoring)


def _gathered(result: ProbeResult, facts: FactSet, world: World) -> ProbeResult:
    """The probing result of all ranks' facts, in the order of one process's run."""
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


def __getattr__(name: str) -> Any:
    """``probe_causal`` and ``probe_masked``, imported on first use (they import torch)."""
    if name in ("probe_causal", "probe_masked"):
        import importlib

        module = importlib.import_module(f"{__name__}.{name.split('_')[1]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CAUSAL_SCORINGS",
    "MASKED_SCORINGS",
    "SCORINGS",
    "ProbingMethod",
    "Scoring",
    "check_scoring",
    "probe",
    "probe_causal",
    "probe_masked",
]
