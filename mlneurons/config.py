"""Typed method configs: one frozen dataclass per command, round-tripping to ``cfg.json``.

The command line builds a config from its options and runs the method from it; every
run directory holds the ``cfg.json`` that reproduces it (``Config.load(dir)``), and every
result saved with a config records it. Values are checked when the config is built, so
a bad value is a one-line error before any model loads.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from mlneurons.errors import UserError
from mlneurons.results import read_json, write_json

CONFIG_FILE = "cfg.json"


def at_least(name: str, value: Any, minimum: int) -> None:
    """Raise unless ``value`` is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name}={value!r} is not an integer >= {minimum}")


def rate(name: str, value: Any) -> None:
    """Raise unless ``value`` is a fraction in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise UserError(f"{name}={value!r} is not a rate in (0, 1], e.g. 0.01")


def one_of(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UserError(f"{name}={value!r} is not valid; choose from {', '.join(choices)}")


@dataclass(frozen=True)
class Config:
    """Base of the method configs: ``to_dict``/``from_dict``, ``save``/``load`` as ``cfg.json``."""

    method: ClassVar[str] = ""
    POSITIVE: ClassVar[tuple[str, ...]] = ()
    """Fields that must be integers >= 1 (when not None)."""
    RATES: ClassVar[tuple[str, ...]] = ()
    """Fields that must be fractions in (0, 1]."""

    model: str | None = "gemma-3-270m"
    device: str | None = None
    dtype: str = "float32"
    gpus_per_replica: int | None = None

    DTYPES: ClassVar[tuple[str, ...]] = ("float32", "bfloat16", "float16")

    def __post_init__(self) -> None:
        one_of("dtype", self.dtype, self.DTYPES)
        if self.gpus_per_replica is not None:
            at_least("gpus_per_replica", self.gpus_per_replica, 1)
        for name in self.POSITIVE:
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 1)
        for name in self.RATES:
            rate(name, getattr(self, name))
        for item in dataclasses.fields(self):  # lists from JSON or argparse become tuples
            if isinstance(getattr(self, item.name), list):
                object.__setattr__(self, item.name, tuple(getattr(self, item.name)))
            values = getattr(self, item.name)
            for value in values if isinstance(values, tuple) else (values,):
                if isinstance(value, float) and not math.isfinite(value):
                    raise UserError(f"{item.name}={value!r} is not a finite number")

    def to_dict(self) -> dict[str, Any]:
        """``{"method": ..., field: value, ...}``: plain JSON values."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"method": self.method, **json.loads(json.dumps(values))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """The config of ``data`` (as :meth:`to_dict` writes it); unknown keys are refused."""
        data = dict(data)
        method = data.pop("method", cls.method)
        if cls is Config:
            kinds = {kind.method: kind for kind in CONFIGS}
            one_of("method", method, tuple(kinds))
            return kinds[method].from_dict(data)
        if method != cls.method:
            raise UserError(f"this is a {method!r} config, not a {cls.method!r} one")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in data if key not in known]
        if unknown:
            raise UserError(
                f"unknown {cls.method} option {unknown[0]!r}; valid: {', '.join(known)}"
            )
        return cls(**data)

    @classmethod
    def from_args(cls, args: Any) -> Config:
        """The config of an argparse namespace (fields it lacks keep their defaults); errors
        name the command-line option (``--batch-size``) instead of the field."""
        names = [f.name for f in dataclasses.fields(cls)]
        try:
            return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)})
        except UserError as exc:
            field, sep, rest = str(exc).partition("=")
            if sep and field in names:
                raise UserError(f"--{field.replace('_', '-')} {rest}") from None
            raise

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` (checked like a new config)."""
        return dataclasses.replace(self, **changes)

    def save(self, directory: str | Path) -> Path:
        """Record this config in ``directory/cfg.json`` under its method (a run directory of
        ``mlneurons report`` holds one per command); returns the file's path."""
        path = Path(directory) / CONFIG_FILE
        saved = read_json(path, CONFIG_FILE) if path.exists() else {}
        saved[self.method] = {k: v for k, v in self.to_dict().items() if k != "method"}
        return write_json(directory, CONFIG_FILE, saved)

    @classmethod
    def load(cls, directory: str | Path, method: str | None = None) -> Config:
        """Read a config from ``cfg.json`` in ``directory`` (or the file itself): this class's
        method, else ``method``, else the only one the file holds."""
        saved = read_json(directory, CONFIG_FILE)
        method = cls.method or method
        if method is None:
            if len(saved) != 1:
                raise UserError(
                    f"{str(directory)!r} holds the configs of {', '.join(saved)}; "
                    "pass method= to choose one"
                )
            method = next(iter(saved))
        if method not in saved:
            raise UserError(
                f"no {method!r} config in {str(directory)!r}; it holds {', '.join(saved) or 'none'}"
            )
        return Config.from_dict({"method": method, **saved[method]})


@dataclass(frozen=True)
class LapeConfig(Config):
    """``mlneurons lape``: LAPE statistics and selection (Tang et al. 2024)."""

    method: ClassVar[str] = "lape"
    POSITIVE = ("tokens_per_language", "batch_size", "shards")
    RATES = ("top_rate", "filter_rate", "activation_bar_ratio")

    languages: Sequence[str] | None = None
    corpus: str = "builtin"
    tokens_per_language: int = 12_288
    seq_len: int = 256
    batch_size: int = 8
    top_rate: float = 0.01
    filter_rate: float = 0.95
    activation_bar_ratio: float = 0.95
    stats: str | None = None
    shards: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("seq_len", self.seq_len, 2)


@dataclass(frozen=True)
class AblateConfig(Config):
    """``mlneurons ablate``: the perplexity matrix under deactivation."""

    method: ClassVar[str] = "ablate"
    POSITIVE = ("tokens_per_language", "batch_size")

    neurons: str = ""
    model: str | None = None  # default: the model the neurons were selected on
    languages: Sequence[str] | None = None
    tokens_per_language: int = 1024
    seq_len: int = 256
    batch_size: int = 8
    seed: int = 0
    no_random_control: bool = False
    stats: str | None = None
    control_draws: int = 3
    control_bins: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("control_draws", self.control_draws, 0)
        at_least("control_bins", self.control_bins, 1)


@dataclass(frozen=True)
class CompareMethodsConfig(Config):
    """``mlneurons compare-methods``: LAPE against Tang et al.'s baselines LAP, LAVE, RS."""

    method: ClassVar[str] = "compare-methods"
    POSITIVE = ("tokens_per_language", "batch_size")
    RATES = ("lap_threshold",)
    METHODS: ClassVar[tuple[str, ...]] = ("lape", "lap", "lave", "rs")

    neurons: str = ""
    model: str | None = None
    stats: str | None = None
    methods: Sequence[str] = ("lape", "lap", "lave", "rs")
    languages: Sequence[str] | None = None
    tokens_per_language: int = 512
    seq_len: int = 256
    batch_size: int = 8
    lap_threshold: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.methods:
            one_of("methods", name, self.METHODS)


@dataclass(frozen=True)
class GenerationConfig(Config):
    """The options of the commands that answer built-in questions under interventions."""

    POSITIVE = ("n_questions", "max_new_tokens", "batch_size")

    neurons: str = ""
    model: str | None = None  # default: the model the neurons were selected on
    stats: str | None = None
    n_questions: int = 12
    max_new_tokens: int = 16
    batch_size: int = 8


@dataclass(frozen=True)
class SteerConfig(GenerationConfig):
    """``mlneurons steer``: output-language steering by activating language neurons."""

    method: ClassVar[str] = "steer"

    source: str = ""
    target: str = ""
    mode: str = "replace"
    scale: float = 1.0
    deactivate_source: bool = False
    source_value: float | None = None
    n_questions: int = 24
    max_new_tokens: int = 32

    MODES: ClassVar[tuple[str, ...]] = ("replace", "add", "diffmean", "scale")

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("mode", self.mode, self.MODES)
        if self.mode == "scale" and self.scale == 1:
            raise UserError("scale=1.0 with mode 'scale' changes nothing; give e.g. --scale 2")
        if self.deactivate_source and self.source_value not in (None, 0):
            raise UserError(
                f"--deactivate-source sets the source neurons to 0, but --source-value is "
                f"{self.source_value}; give one of them"
            )


@dataclass(frozen=True)
class SteerSweepConfig(GenerationConfig):
    """``mlneurons steer-sweep``: steering modes x strengths x LAPE budgets (Gurgurov et al.)."""

    method: ClassVar[str] = "steer-sweep"

    source: str = ""
    target: str = ""
    modes: Sequence[str] = ("replace", "add", "diffmean", "scale")
    alphas: Sequence[float] | None = None
    top_rates: Sequence[float] = (0.01, 0.03)
    source_value: float | None = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for mode in self.modes:
            one_of("modes", mode, SteerConfig.MODES)
        for top_rate in self.top_rates:
            rate("top_rates", top_rate)


@dataclass(frozen=True)
class FallbackConfig(GenerationConfig):
    """``mlneurons fallback``: deactivate growing shares of a language's neurons."""

    method: ClassVar[str] = "fallback"
    ORDERS: ClassVar[tuple[str, ...]] = ("lape", "probability", "random")

    language: str = ""
    shares: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
    order: str = "lape"
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("order", self.order, self.ORDERS)
        for share in self.shares:
            if not 0 <= share <= 1:
                raise UserError(f"shares={share!r} is not a share in [0, 1], e.g. 0.5")


@dataclass(frozen=True)
class SesConfig(Config):
    """``mlneurons ses``: layer-wise sentence-embedding similarity (Tang et al. 2024)."""

    method: ClassVar[str] = "ses"
    POSITIVE = ("sentences", "batch_size")

    languages: Sequence[str] = ("en", "es", "de", "zh", "ja")
    sentences: int = 40
    center: bool = False
    neurons: str | None = None
    batch_size: int = 8


@dataclass(frozen=True)
class LogitLensConfig(Config):
    """``mlneurons logit-lens``: the latent language of translation (Wendler et al. 2024)."""

    method: ClassVar[str] = "logit-lens"
    POSITIVE = ("max_items", "batch_size")

    source: str = "fr"
    target: str = "zh"
    n_shots: int = 4
    seed: int = 0
    max_items: int | None = None
    keep_copies: bool = False
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least("n_shots", self.n_shots, 0)


@dataclass(frozen=True)
class ProbeConfig(Config):
    """``mlneurons probe``: factual probing (mLAMA typed ranking, Zhao et al.'s matching)."""

    method: ClassVar[str] = "probe"
    POSITIVE = ("max_facts_per_relation", "batch_size")
    METHODS: ClassVar[tuple[str, ...]] = ("typed", "zhao")

    facts: str = "builtin"
    candidates: str = "files"
    languages: Sequence[str] | None = None
    relations: Sequence[str] | None = None
    max_facts_per_relation: int | None = None
    batch_size: int = 32
    probe: str | None = None
    probing: str = "typed"

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("candidates", self.candidates, ("files", "gold"))
        one_of("probing", self.probing, self.METHODS)
        if self.facts != "builtin" and not self.facts.startswith("mlama:"):
            raise UserError(f"facts={self.facts!r} is not valid; give 'builtin' or 'mlama:DIR'")

    @classmethod
    def from_args(cls, args: Any) -> Config:
        config = super().from_args(args)
        return config.replace(probing=getattr(args, "method", "typed"))


@dataclass(frozen=True)
class FactNeuronsConfig(ProbeConfig):
    """``mlneurons fact-neurons``: PROBELESS fact neurons (Zhao et al.'s adaptation)."""

    method: ClassVar[str] = "fact-neurons"
    POSITIVE = ("max_facts_per_relation", "batch_size", "k")

    k: int = 50


@dataclass(frozen=True)
class TraceConfig(ProbeConfig):
    """``mlneurons trace``: knowledge tracing (Zhao et al.)."""

    method: ClassVar[str] = "trace"
    POSITIVE = ("max_facts_per_relation", "batch_size", "chunk_tokens")

    corpus: str = "builtin"
    chunk_tokens: int = 512


@dataclass(frozen=True)
class Lrp2Config(ProbeConfig):
    """``mlneurons lrp2``: LIRP/LSRP projection (Xu et al. 2023)."""

    method: ClassVar[str] = "lrp2"
    POSITIVE = ("max_facts_per_relation", "batch_size", "sentences", "k")

    pivot: str = "en"
    layers: Sequence[int] | None = None
    sentences: int = 200
    k: int = 50


CONFIGS: tuple[type[Config], ...] = (
    LapeConfig,
    AblateConfig,
    CompareMethodsConfig,
    SteerConfig,
    SteerSweepConfig,
    FallbackConfig,
    SesConfig,
    LogitLensConfig,
    ProbeConfig,
    FactNeuronsConfig,
    TraceConfig,
    Lrp2Config,
)

__all__ = [
    "CONFIGS",
    "CONFIG_FILE",
    "AblateConfig",
    "CompareMethodsConfig",
    "Config",
    "FactNeuronsConfig",
    "FallbackConfig",
    "GenerationConfig",
    "LapeConfig",
    "LogitLensConfig",
    "Lrp2Config",
    "ProbeConfig",
    "SesConfig",
    "SteerConfig",
    "SteerSweepConfig",
    "TraceConfig",
]
