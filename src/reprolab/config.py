"""Typed configuration: compose `conf/` with Hydra, then validate against a small schema.

The schema is a set of dataclasses. OmegaConf rejects unknown keys and wrong types when the
composed config is merged onto it; `Config.check` then rejects out-of-range values. Every
error is a `ConfigError` whose message starts with the full key, so the CLI can print it as
one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

CELLS = ("rnn", "lstm", "gru")
MONITORS = ("val_loss", "val_accuracy")
DATA_SOURCES = ("synthetic", "npz")
CONFIG_NAME = "config"


class UserError(Exception):
    """An error the user can fix; the CLI prints its message as one line and exits with 2."""


class ConfigError(UserError, ValueError):
    """A configuration that cannot be used; the message names the offending key."""


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _require_one_of(value: str, choices: Sequence[str], key: str, what: str) -> None:
    _require(value in choices, key, f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


@dataclass
class GeneratorConfig:
    """Parameters of the built-in synthetic sequence task (see `reprolab.data`)."""

    seq_len: int = 20
    n_features: int = 10
    margin: float = 0.5
    label_noise: float = 0.1
    n_train: int = 150
    n_val: int = 2000
    n_test: int = 2000
    seed: int = 0

    def check(self, where: str) -> None:
        _require(self.seq_len >= 2, f"{where}.seq_len", f"must be >= 2, got {self.seq_len}")
        _require(self.n_features >= 1, f"{where}.n_features", f"must be >= 1, got {self.n_features}")
        _require(self.margin >= 0, f"{where}.margin", f"must be >= 0, got {self.margin}")
        _require(0 <= self.label_noise < 0.5, f"{where}.label_noise",
                 f"must be in [0, 0.5), got {self.label_noise}")
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            _require(value >= 1, f"{where}.{name}", f"must be >= 1, got {value}")


@dataclass
class DataConfig:
    """Where the dataset comes from and where its verified copy lives."""

    name: str = "synthetic"
    source: str = "synthetic"
    generator: Optional[GeneratorConfig] = None
    user_file: Optional[str] = None
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0
    prepared_path: str = "data/prepared/synthetic.npz"
    expected_digest: Optional[str] = None

    def check(self, where: str) -> None:
        _require_one_of(self.source, DATA_SOURCES, f"{where}.source", "source")
        if self.source == "synthetic":
            _require(self.generator is not None, f"{where}.generator", "required when source=synthetic")
            self.generator.check(f"{where}.generator")
        else:
            _require(bool(self.user_file), f"{where}.user_file",
                     "required when source=npz: the path of your .npz file")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            _require(0 < value < 1, f"{where}.{name}", f"must be in (0, 1), got {value}")
        _require(self.val_fraction + self.test_fraction < 1, f"{where}.val_fraction",
                 "val_fraction + test_fraction must leave some training data")


@dataclass
class ModelConfig:
    """A recurrent sequence classifier (see `reprolab.models.SequenceClassifier`)."""

    cell: str = "rnn"
    hidden_size: int = 32
    num_layers: int = 2
    dropout: float = 0.0
    output_dropout: float = 0.0

    def check(self, where: str) -> None:
        _require_one_of(self.cell, CELLS, f"{where}.cell", "cell")
        _require(self.hidden_size >= 1, f"{where}.hidden_size", f"must be >= 1, got {self.hidden_size}")
        _require(self.num_layers >= 1, f"{where}.num_layers", f"must be >= 1, got {self.num_layers}")
        for name in ("dropout", "output_dropout"):
            value = getattr(self, name)
            _require(0 <= value < 1, f"{where}.{name}", f"must be in [0, 1), got {value}")
        _require(self.dropout == 0 or self.num_layers >= 2, f"{where}.dropout",
                 "dropout inside the recurrent stack acts between layers: it needs num_layers >= 2")


@dataclass
class EarlyStoppingConfig:
    """Stop when the monitored validation metric has not improved for `patience` epochs."""

    enabled: bool = False
    monitor: str = "val_loss"
    patience: int = 20
    min_delta: float = 0.0

    def check(self, where: str) -> None:
        _require_one_of(self.monitor, MONITORS, f"{where}.monitor", "metric")
        _require(self.patience >= 1, f"{where}.patience", f"must be >= 1, got {self.patience}")
        _require(self.min_delta >= 0, f"{where}.min_delta", f"must be >= 0, got {self.min_delta}")


@dataclass
class TrainConfig:
    """Optimisation: Adam, batch size (null = full batch), epochs, early stopping, clipping."""

    lr: float = 0.001
    weight_decay: float = 0.0
    batch_size: Optional[int] = None
    max_epochs: int = 100
    grad_clip_norm: Optional[float] = None
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)

    def check(self, where: str) -> None:
        _require(self.lr > 0, f"{where}.lr", f"must be > 0, got {self.lr}")
        _require(self.weight_decay >= 0, f"{where}.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.batch_size is None or self.batch_size >= 1, f"{where}.batch_size",
                 f"must be >= 1 or null (full batch), got {self.batch_size}")
        _require(self.max_epochs >= 1, f"{where}.max_epochs", f"must be >= 1, got {self.max_epochs}")
        _require(self.grad_clip_norm is None or self.grad_clip_norm > 0, f"{where}.grad_clip_norm",
                 f"must be > 0 or null, got {self.grad_clip_norm}")
        self.early_stopping.check(f"{where}.early_stopping")


@dataclass
class ExperimentConfig:
    """A named preset: one model and one way of training it."""

    description: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self, where: str) -> None:
        self.model.check(f"{where}.model")
        self.train.check(f"{where}.train")


@dataclass
class TargetConfig:
    """What "fixed" means: validation accuracy at least this, training accuracy below that."""

    min_val_accuracy: float = 0.85
    max_train_accuracy: float = 0.92


@dataclass
class TrackingConfig:
    """Where runs are recorded. `uri: null` means MLflow's SQLite store at the repository root;
    the MLFLOW_TRACKING_URI environment variable overrides both."""

    enabled: bool = True
    uri: Optional[str] = None
    experiment_name: str = "reprolab"
    log_model: bool = True

    def check(self) -> None:
        # params.yaml is committed and logged as an artifact: no secrets in it.
        _require(not (self.uri and "@" in self.uri.split("://", 1)[-1].split("/", 1)[0]), "tracking.uri",
                 "holds credentials; put them in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
                 "(or MLFLOW_TRACKING_TOKEN) instead, never in the configuration")


@dataclass
class AuditConfig:
    """The ablation audit: which of the changes from `before` to `after` closed the gap."""

    before: str = "baseline"
    after: str = "regularized"
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    confidence: float = 0.95
    # Processes for the ablation's runs; null = one per core. Results do not depend on it.
    workers: Optional[int] = None
    log_models: bool = True

    def check(self, presets: Dict[str, "ExperimentConfig"]) -> None:
        for side in ("before", "after"):
            _require_one_of(getattr(self, side), list(presets), f"audit.{side}", "preset")
        _require(self.before != self.after, "audit.after", f"must differ from audit.before ({self.before!r})")
        _require(len(self.seeds) >= 2, "audit.seeds", f"needs at least 2 seeds for an interval, got {self.seeds}")
        _require(len(set(self.seeds)) == len(self.seeds), "audit.seeds", f"has repeated seeds: {self.seeds}")
        _require(0 < self.confidence < 1, "audit.confidence", f"must be in (0, 1), got {self.confidence}")
        _require(self.workers is None or self.workers >= 1, "audit.workers",
                 f"must be >= 1 or null (one per core), got {self.workers}")


@dataclass
class RunConfig:
    """Everything one training run needs: the preset's model and training, the data, the seed."""

    preset: str
    seed: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig


@dataclass
class Config:
    """The whole resolved configuration, as composed from `conf/` and written to params.yaml."""

    seed: int = 0
    experiment: str = "regularized"
    data: DataConfig = field(default_factory=DataConfig)
    experiments: Dict[str, ExperimentConfig] = field(default_factory=dict)
    target: TargetConfig = field(default_factory=TargetConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    def check(self) -> None:
        _require(bool(self.experiments), "experiments", "no experiment presets are defined")
        self.data.check("data")
        for name, preset in self.experiments.items():
            preset.check(f"experiments.{name}")
        self.preset(self.experiment)
        self.audit.check(self.experiments)
        self.tracking.check()

    def preset(self, name: str) -> ExperimentConfig:
        """The named experiment preset, or a ConfigError listing the known ones."""
        if name not in self.experiments:
            raise ConfigError(f"experiment: unknown preset {name!r}; choose one of "
                              f"{', '.join(self.experiments)}")
        return self.experiments[name]

    def run_config(self, preset: Optional[str] = None, seed: Optional[int] = None) -> RunConfig:
        """The single-run view of `preset` (default: `experiment`) with `seed` (default: `seed`)."""
        name = preset or self.experiment
        chosen = self.preset(name)
        return RunConfig(preset=name, seed=self.seed if seed is None else seed,
                         data=self.data, model=chosen.model, train=chosen.train)


def find_conf_dir(conf_dir: Optional[Path | str] = None) -> Path:
    """The Hydra config directory: `conf_dir`, else `./conf`."""
    path = Path(conf_dir) if conf_dir is not None else Path.cwd() / "conf"
    if not (path / f"{CONFIG_NAME}.yaml").is_file():
        raise ConfigError(f"config: no {CONFIG_NAME}.yaml in {path}; run from the repository root "
                          f"or pass --config-dir")
    return path.resolve()


def compose_raw(overrides: Sequence[str] = (), conf_dir: Optional[Path | str] = None) -> dict[str, Any]:
    """Compose `conf/config.yaml` with Hydra override strings into a plain, resolved dict."""
    path = find_conf_dir(conf_dir)
    try:
        with initialize_config_dir(config_dir=str(path), version_base=None):
            composed = compose(config_name=CONFIG_NAME, overrides=list(overrides))
        return OmegaConf.to_container(composed, resolve=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_composition_message(error)) from error


def validate(raw: dict[str, Any] | DictConfig) -> Config:
    """Check a composed config against the schema and ranges; return the typed `Config`."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
        config: Config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", None)
        message = _first_line(getattr(error, "msg", None) or error)
        raise ConfigError(f"{key}: {message}" if key else f"config: {message}") from error
    config.check()
    return config


def load_config(overrides: Sequence[str] = (), conf_dir: Optional[Path | str] = None) -> Config:
    """Compose `conf/` with overrides and validate it."""
    return validate(compose_raw(overrides, conf_dir))


def read_params(path: Path | str = "params.yaml") -> dict[str, Any]:
    """The raw mapping in a resolved params file, with clear errors for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params: {path} not found; write it with `reprolab compose`")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"params: {path} is not valid YAML: {_first_line(error)}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"params: {path} does not hold a mapping")
    return raw


def load_params(path: Path | str = "params.yaml") -> Config:
    """Read and validate a resolved params file (what DVC stages consume)."""
    return validate(read_params(path))


def to_dict(config: Config | RunConfig) -> dict[str, Any]:
    """A plain, nested dict of a typed config (for YAML files and tracking)."""
    return OmegaConf.to_container(OmegaConf.structured(config), resolve=True)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as one level with dotted keys: {"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _composition_message(error: Exception) -> str:
    """One line from Hydra's multi-line composition errors, keeping the useful part."""
    cause = error.__cause__
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and getattr(cause, "full_key", None):
        return f"{cause.full_key}: no such key (`reprolab compose -o -` prints every key)"
    lines = [line.strip().rstrip(".:") for line in str(error).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("Config search path", "provider="))]
    return "config: " + ("; ".join(lines) if lines else type(error).__name__)


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
