"""Factual probing (mLAMA, Zhao et al.): causal LMs in ``causal``, masked LMs in ``masked``,
one result type in ``result``; :func:`probe` picks the right one for the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlneurons.data.facts import FactSet
from mlneurons.methods.probing.causal import probe_causal
from mlneurons.methods.probing.masked import probe_masked
from mlneurons.methods.probing.result import ProbeResult
from mlneurons.models.hooks import is_masked_lm


def probe(
    model: Any,
    facts: FactSet,
    *,
    interventions: Sequence[tuple[str, Any]] = (),
    batch_size: int = 32,
    progress: bool = True,
) -> ProbeResult:
    """Probe every fact of ``facts``: rank its typed candidates, P@1 = gold ranked first.

    Causal LMs score whole sentences (:func:`probe_causal`); masked LMs use mLAMA's typed
    ranking (:func:`probe_masked`).

    Args:
        model: a causal or masked-LM TransformerBridge.
        facts: facts, templates and candidates (e.g. ``FactSet.builtin()``).
        interventions: hooks active while probing (e.g. an LRP2 projection).
        batch_size: candidate sentences per forward pass.
    """
    if interventions:
        with model.hooks(fwd_hooks=list(interventions)):
            return probe(model, facts, batch_size=batch_size, progress=progress)
    run = probe_masked if is_masked_lm(model) else probe_causal
    return run(model, facts, batch_size=batch_size, progress=progress)


__all__ = ["probe", "probe_causal", "probe_masked"]
