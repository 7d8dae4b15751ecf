"""Reading what a command's config names (neurons, statistics, facts, the model), checked.

Each function raises :class:`~mlneurons.errors.UserError` for a value the user gave wrong,
before any long computation.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlneurons.errors import UserError
from mlneurons.models.bridge import TransformerBridge

if TYPE_CHECKING:
    from mlneurons.config import Config
    from mlneurons.data.facts import FactSet
    from mlneurons.evaluation.uncertainty import Uncertainty
    from mlneurons.interfaces.spec import Context
    from mlneurons.methods.lape import LanguageNeurons
    from mlneurons.stats.activation import ActivationStats


@contextmanager
def user_input() -> Iterator[None]:
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


def uncertainty(cfg: Any) -> Uncertainty:
    """How the command's intervals are computed: ``--confidence``, ``--resamples``,
    ``--resample-seed``."""
    from mlneurons.evaluation.uncertainty import Uncertainty

    return Uncertainty(cfg.confidence, cfg.resamples, cfg.resample_seed)


def unique(values: Sequence[str]) -> list[str]:
    """``values`` without repeats, in order."""
    return list(dict.fromkeys(values))


def languages_of(have: Any, codes: Sequence[str]) -> list[str]:
    """``codes`` normalised to the languages of ``have`` (neurons or statistics)."""
    from mlneurons.data.builtin_text import normalize_language

    with user_input():
        return unique([normalize_language(code, have.languages) for code in codes])


def load_neurons(path: str) -> LanguageNeurons:
    """The LAPE neurons of a directory written by ``mlneurons lape``."""
    from mlneurons.methods.lape import LanguageNeurons

    with user_input():
        return LanguageNeurons.load(path)


def load_stats(cfg: Any, instead: str = "") -> ActivationStats:
    """The activation statistics of ``cfg.stats`` (default: ``NEURONS/stats.safetensors``)."""
    from mlneurons.stats.activation import STATS_FILE, ActivationStats

    path = Path(cfg.stats) if cfg.stats else Path(cfg.neurons) / STATS_FILE
    if not cfg.stats and not path.exists():
        alternative = f" or {instead}" if instead else ""
        raise UserError(f"no statistics at {str(path)!r}; give --stats FILE{alternative}")
    with user_input():
        return ActivationStats.load(path)


def model_for(
    cfg: Config, context: Context, neurons: LanguageNeurons, *others: Any
) -> TransformerBridge:
    """The model of ``cfg.model`` (default: the one the neurons were selected on), checked
    against the neurons and against the fingerprints of ``others`` (e.g. statistics)."""
    from mlneurons.models.fingerprint import check_same_model

    model = context.model(cfg, cfg.model or neurons.model.get("name"))
    with user_input():
        check_same_model(neurons.model, model, what=f"neurons in {getattr(cfg, 'neurons', '')}")
        neurons.check_fits(model)
        for other in others:
            check_same_model(other.model, model, what="the statistics")
    return model


def load_facts(cfg: Any) -> FactSet:
    """The fact set of ``cfg.facts`` (``builtin``, ``mlama:DIR`` or ``bmlama:DIR``),
    restricted as asked."""
    from mlneurons.data.facts import FactSet

    source, _, directory = cfg.facts.partition(":")
    with user_input(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no candidate objects")  # checked below
        if cfg.facts == "builtin":
            facts = FactSet.builtin(languages=cfg.languages, relations=cfg.relations)
        elif source == "bmlama":
            facts = FactSet.from_bmlama(directory, languages=cfg.languages, relations=cfg.relations)
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


__all__ = [
    "languages_of",
    "load_facts",
    "load_neurons",
    "load_stats",
    "model_for",
    "unique",
    "user_input",
]
