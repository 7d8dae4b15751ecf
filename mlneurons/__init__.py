"""mlneurons: neuron-level study of multilingual language models on TransformerLens.

Quick start::

    import mlneurons
    model = mlneurons.load_model("gemma-3-270m")
    corpus = mlneurons.MultilingualCorpus.builtin(["en", "fr", "zh"], tokens_per_language=8192)
    stats = mlneurons.collect_activation_stats(model, corpus)
    neurons = mlneurons.lape.select(stats.activation_probs, stats.languages)
"""

from mlneurons import lape
from mlneurons.corpus import DEFAULT_LANGUAGES, MultilingualCorpus
from mlneurons.interventions import activate, deactivate, intervene
from mlneurons.lape import LanguageNeurons
from mlneurons.models import fingerprint, load_model
from mlneurons.stats import ActivationStats, collect_activation_stats

__all__ = [
    "DEFAULT_LANGUAGES",
    "ActivationStats",
    "LanguageNeurons",
    "MultilingualCorpus",
    "activate",
    "deactivate",
    "intervene",
    "collect_activation_stats",
    "fingerprint",
    "lape",
    "load_model",
]
__version__ = "0.1.0"
