"""mlneurons: neuron-level study of multilingual language models on TransformerLens.

Quick start::

    import mlneurons
    model = mlneurons.load_model("gemma-3-270m")
    corpus = mlneurons.MultilingualCorpus.builtin(["en", "fr", "zh"], tokens_per_language=8192)
    stats = mlneurons.collect_activation_stats(model, corpus)
    neurons = mlneurons.lape.select(stats)

Every public name is importable from here; the module that defines it is imported on
first use, so ``import mlneurons`` (and ``mlneurons --help``) does not import torch.
The layers, bottom up: ``data`` and ``models``, then ``stats``, then ``evaluation``
(metrics only), then ``methods``, then ``interfaces`` (docs/architecture.md).

Every command is one library call: ``mlneurons.run(mlneurons.SteerConfig(neurons=
"runs/lape", source="es", target="zh"), out="runs/steer")``, or with the config a run
recorded: ``mlneurons.run(mlneurons.Config.load("runs/report", method="steer"))``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, tuple[str, ...]] = {
    "mlneurons.errors": ("UserError", "FastPathMismatch"),
    "mlneurons.world": ("World",),
    "mlneurons.config": ("Config",),
    "mlneurons.interfaces.commands": ("run",),
    "mlneurons.interfaces.commands.lape": ("LapeConfig",),
    "mlneurons.interfaces.commands.ablate": ("AblateConfig",),
    "mlneurons.interfaces.commands.compare_methods": ("CompareMethodsConfig",),
    "mlneurons.interfaces.commands.steer": ("SteerConfig",),
    "mlneurons.interfaces.commands.steer_sweep": ("SteerSweepConfig",),
    "mlneurons.interfaces.commands.steer_compare": ("SteerCompareConfig",),
    "mlneurons.interfaces.commands.fallback": ("FallbackConfig",),
    "mlneurons.interfaces.commands.probe": ("ProbeConfig",),
    "mlneurons.interfaces.commands.fact_neurons": ("FactNeuronsConfig",),
    "mlneurons.interfaces.commands.trace": ("TraceConfig",),
    "mlneurons.interfaces.commands.knowledge_neurons": ("KnowledgeNeuronsConfig",),
    "mlneurons.interfaces.commands.failure_modes": ("FailureModesConfig",),
    "mlneurons.interfaces.commands.factors": ("FactorsConfig",),
    "mlneurons.interfaces.commands.lrp2": ("Lrp2Config",),
    "mlneurons.interfaces.commands.ses": ("SesConfig",),
    "mlneurons.interfaces.commands.logit_lens": ("LogitLensConfig",),
    "mlneurons.interfaces.commands.heads": ("HeadsConfig",),
    "mlneurons.interfaces.commands.script_controls": ("ScriptControlsConfig",),
    "mlneurons.data.corpus": ("DEFAULT_LANGUAGES", "MultilingualCorpus", "available_languages"),
    "mlneurons.data.facts": ("Fact", "FactSet"),
    "mlneurons.data.fact_questions": ("FactQuestion", "fact_questions"),
    "mlneurons.data.controls": ("controlled",),
    "mlneurons.models.loading": ("load_model", "BUILTIN_MODELS"),
    "mlneurons.models.fingerprint": ("fingerprint",),
    "mlneurons.models.hooks": ("mlp_neuron_hook",),
    "mlneurons.models.dictionary": ("Dictionary", "load_dictionary", "splice"),
    "mlneurons.stats.collector": ("HookStats", "Labelled", "collect", "hook_points"),
    "mlneurons.stats.activation": ("ActivationStats", "collect_activation_stats"),
    "mlneurons.methods.lape": ("LanguageNeurons", "LapeResult", "LapeSummary", "summarize"),
    "mlneurons.methods.baselines": (
        "lap",
        "lave",
        "random_selection",
        "matched_control",
        "parameter_variation",
        "select_methods",
    ),
    "mlneurons.methods.interventions": ("activate", "deactivate", "intervene", "scale"),
    "mlneurons.methods.monolinguality": ("monolinguality", "select_monolingual"),
    "mlneurons.methods.steering": (
        "SteeringResult",
        "steer",
        "steering_intervention",
        "SteeringSweep",
        "steering_sweep",
        "SweepPoint",
        "FallbackCurve",
        "FallbackPoint",
        "fallback_curve",
    ),
    "mlneurons.methods.directions": ("LanguageDirections", "language_directions"),
    "mlneurons.methods.steering_comparison": (
        "SteeringComparison",
        "compare_steering",
        "steering_methods",
    ),
    "mlneurons.methods.deactivation": (
        "PerplexityMatrix",
        "perplexity_matrix",
        "MethodComparison",
        "compare_methods",
    ),
    "mlneurons.methods.heads": (
        "HeadImportance",
        "HeadDeactivation",
        "HeadsResult",
        "LanguageHeads",
        "attention_patterns",
        "head_deactivation",
        "head_importance",
        "head_statistics",
        "language_heads",
        "select_heads",
    ),
    "mlneurons.methods.inspection": (
        "neuron_activations",
        "token_losses",
        "loss_change",
        "next_token_table",
        "logit_effects",
    ),
    "mlneurons.methods.readouts": (
        "SentenceSimilarity",
        "sentence_similarity",
        "LatentLanguage",
        "latent_language",
    ),
    "mlneurons.methods.probing": ("probe",),
    "mlneurons.methods.probing.result": ("ProbeResult",),
    "mlneurons.methods.probing.masked": ("zhao_match", "partial_p_at_1"),
    "mlneurons.methods.probeless": ("FactNeurons", "fact_neurons"),
    "mlneurons.methods.tracing": ("TracingResult", "trace"),
    "mlneurons.methods.knowledge_neurons": (
        "KnowledgeNeurons",
        "knowledge_neurons",
        "language_independent",
    ),
    "mlneurons.methods.failure_modes": ("FailureModes", "failure_modes"),
    "mlneurons.methods.script_controls": ("ScriptControlsResult", "script_controls"),
    "mlneurons.methods.probing.factors": ("Factors", "factors", "object_token_counts"),
    "mlneurons.methods.lrp2": (
        "LRP2Result",
        "LanguageVectors",
        "evaluate_lrp2",
        "language_vectors",
        "projection",
    ),
    "mlneurons.evaluation.perplexity": ("perplexity",),
    "mlneurons.evaluation.langid": ("identify",),
}
_MODULES = {"lape": "mlneurons.methods.lape", "plots": "mlneurons.interfaces.plots"}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_WHERE, *_MODULES])


def __getattr__(name: str) -> Any:
    """Import the defining module of a public name on first use (PEP 562)."""
    if name == "Config":  # its load() and from_dict() know every command's config
        importlib.import_module("mlneurons.interfaces.commands").every()
    if name in _MODULES:
        value: Any = importlib.import_module(_MODULES[name])
    elif name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
    else:
        raise AttributeError(f"module 'mlneurons' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # static checkers and IDEs see the real names
    from mlneurons.config import Config
    from mlneurons.data.controls import controlled
    from mlneurons.data.corpus import DEFAULT_LANGUAGES, MultilingualCorpus, available_languages
    from mlneurons.data.fact_questions import FactQuestion, fact_questions
    from mlneurons.data.facts import Fact, FactSet
    from mlneurons.errors import FastPathMismatch, UserError
    from mlneurons.evaluation.langid import identify
    from mlneurons.evaluation.perplexity import perplexity
    from mlneurons.interfaces import plots
    from mlneurons.interfaces.commands import run
    from mlneurons.interfaces.commands.ablate import AblateConfig
    from mlneurons.interfaces.commands.compare_methods import CompareMethodsConfig
    from mlneurons.interfaces.commands.fact_neurons import FactNeuronsConfig
    from mlneurons.interfaces.commands.factors import FactorsConfig
    from mlneurons.interfaces.commands.failure_modes import FailureModesConfig
    from mlneurons.interfaces.commands.fallback import FallbackConfig
    from mlneurons.interfaces.commands.heads import HeadsConfig
    from mlneurons.interfaces.commands.knowledge_neurons import KnowledgeNeuronsConfig
    from mlneurons.interfaces.commands.lape import LapeConfig
    from mlneurons.interfaces.commands.logit_lens import LogitLensConfig
    from mlneurons.interfaces.commands.lrp2 import Lrp2Config
    from mlneurons.interfaces.commands.probe import ProbeConfig
    from mlneurons.interfaces.commands.script_controls import ScriptControlsConfig
    from mlneurons.interfaces.commands.ses import SesConfig
    from mlneurons.interfaces.commands.steer import SteerConfig
    from mlneurons.interfaces.commands.steer_compare import SteerCompareConfig
    from mlneurons.interfaces.commands.steer_sweep import SteerSweepConfig
    from mlneurons.interfaces.commands.trace import TraceConfig
    from mlneurons.methods import lape
    from mlneurons.methods.baselines import (
        lap,
        lave,
        matched_control,
        parameter_variation,
        random_selection,
        select_methods,
    )
    from mlneurons.methods.deactivation import (
        MethodComparison,
        PerplexityMatrix,
        compare_methods,
        perplexity_matrix,
    )
    from mlneurons.methods.directions import LanguageDirections, language_directions
    from mlneurons.methods.failure_modes import FailureModes, failure_modes
    from mlneurons.methods.heads import (
        HeadDeactivation,
        HeadImportance,
        HeadsResult,
        LanguageHeads,
        attention_patterns,
        head_deactivation,
        head_importance,
        head_statistics,
        language_heads,
        select_heads,
    )
    from mlneurons.methods.inspection import (
        logit_effects,
        loss_change,
        neuron_activations,
        next_token_table,
        token_losses,
    )
    from mlneurons.methods.interventions import activate, deactivate, intervene, scale
    from mlneurons.methods.knowledge_neurons import (
        KnowledgeNeurons,
        knowledge_neurons,
        language_independent,
    )
    from mlneurons.methods.lape import LanguageNeurons, LapeResult, LapeSummary, summarize
    from mlneurons.methods.lrp2 import (
        LanguageVectors,
        LRP2Result,
        evaluate_lrp2,
        language_vectors,
        projection,
    )
    from mlneurons.methods.monolinguality import monolinguality, select_monolingual
    from mlneurons.methods.probeless import FactNeurons, fact_neurons
    from mlneurons.methods.probing import probe
    from mlneurons.methods.probing.factors import Factors, factors, object_token_counts
    from mlneurons.methods.probing.masked import partial_p_at_1, zhao_match
    from mlneurons.methods.probing.result import ProbeResult
    from mlneurons.methods.readouts import (
        LatentLanguage,
        SentenceSimilarity,
        latent_language,
        sentence_similarity,
    )
    from mlneurons.methods.script_controls import ScriptControlsResult, script_controls
    from mlneurons.methods.steering import (
        FallbackCurve,
        FallbackPoint,
        SteeringResult,
        SteeringSweep,
        SweepPoint,
        fallback_curve,
        steer,
        steering_intervention,
        steering_sweep,
    )
    from mlneurons.methods.steering_comparison import (
        SteeringComparison,
        compare_steering,
        steering_methods,
    )
    from mlneurons.methods.tracing import TracingResult, trace
    from mlneurons.models.dictionary import Dictionary, load_dictionary, splice
    from mlneurons.models.fingerprint import fingerprint
    from mlneurons.models.hooks import mlp_neuron_hook
    from mlneurons.models.loading import BUILTIN_MODELS, load_model
    from mlneurons.stats.activation import ActivationStats, collect_activation_stats
    from mlneurons.stats.collector import HookStats, Labelled, collect, hook_points
    from mlneurons.world import World
