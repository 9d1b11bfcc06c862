"""The configuration's schema: types, choices (enums) and ranges, and no defaults, so `conf/`
and the schema cannot disagree: a key that `conf/` does not set is an error. `check_ranges`
rejects values out of range or not finite; `check` methods hold the rules that span several
keys. Every error is a `ConfigError` whose message starts with the full key."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from reprolab.config.rules import SEED, check_ranges, check_seeds, ranged, require, require_choice

# Sections that say where runs are computed and recorded, not what they compute: no stage depends
# on them, and params.yaml may differ from conf/ in them (`reprolab compose tracking=server`)
# without being stale. The exception is compute.numerics, the kernels that compute the numbers.
NOT_RESULTS = ("tracking", "compute")


class Cell(str, Enum):
    rnn = "rnn"
    lstm = "lstm"
    gru = "gru"


class Monitor(str, Enum):
    val_loss = "val_loss"
    val_accuracy = "val_accuracy"


class Numerics(str, Enum):
    portable = "portable"
    native = "native"


class Reference(str, Enum):  # the reference classifiers beside the models (`reprolab.references`)
    euclidean, dtw = "euclidean", "dtw"


class Resampling(str, Enum):
    """How an audit measures a configuration: on the validation split, or by repeated stratified
    k-fold over the training and validation splits pooled; the test split is held out either way."""

    holdout, kfold = "holdout", "kfold"


class DataSource(str, Enum):
    synthetic = "synthetic"
    npz = "npz"


class Layout(str, Enum):
    """How a user's X is laid out: auto = [N, steps, features] unless that is surely wrong."""

    auto = "auto"
    ntf = "ntf"  # [N, steps, features]
    nft = "nft"  # [N, features, steps], e.g. [N, channels, T]


class Normalize(str, Enum):
    """How the inputs are scaled: standard = per feature, with the training split's mean and sd."""

    none = "none"
    standard = "standard"


class TargetMetric(str, Enum):
    """Which accuracy a target bounds: plain, or balanced (the mean of the classes' recalls)."""

    accuracy = "accuracy"
    balanced_accuracy = "balanced_accuracy"


class Padding(str, Enum):
    """Where a user's `lengths` array says the padding of shorter sequences sits."""

    end = "end"
    front = "front"


class Device(str, Enum):
    auto = "auto"  # cuda when available, else cpu
    cpu = "cpu"
    cuda = "cuda"


@dataclass
class GeneratorConfig:
    """The built-in synthetic sequence task (see `reprolab.data`)."""

    seq_len: int = field(metadata=ranged(2, 10_000))
    n_features: int = field(metadata=ranged(1, 10_000))
    # In standard deviations of the score; sequences closer to the boundary are drawn again, so
    # a margin m keeps a share 2(1 - Phi(m)) of the draws: at 3, 1 in 370; at 10, none in 10^22
    # (the generator would never finish).
    margin: float = field(metadata=ranged(0, 3))
    label_noise: float = field(metadata=ranged(0, 0.5, high_open=True))
    n_train: int = field(metadata=ranged(1, 1_000_000))
    n_val: int = field(metadata=ranged(1, 1_000_000))
    n_test: int = field(metadata=ranged(1, 1_000_000))
    seed: int = field(metadata=SEED)

    def check(self, where: str) -> None:
        values = (self.n_train + self.n_val + self.n_test) * self.seq_len * self.n_features
        require(
            values <= 200_000_000,
            f"{where}.n_train",
            f"the splits would hold {values:,} numbers ({values * 4 / 1e9:.1f} GB); keep them under 200,000,000",
        )


@dataclass
class TargetConfig:
    """What "fixed" means for a dataset. Either bound may be null (off).

    Met when validation `metric` >= `min_val_accuracy` and training `metric` < `max_train_accuracy`
    (<= when `max_train_inclusive`), `metric` being accuracy or balanced accuracy."""

    metric: TargetMetric = field()
    min_val_accuracy: Optional[float] = field(metadata=ranged(0, 1))
    max_train_accuracy: Optional[float] = field(metadata=ranged(0, 1))
    max_train_inclusive: bool = field()


@dataclass
class FoldConfig:
    """One fold of repeated stratified k-fold over the training and validation splits pooled
    (`reprolab.data.folds`): `index` in 0 .. folds x repeats - 1, repeat by repeat."""

    folds: int = field(metadata=ranged(2, 100))
    repeats: int = field(metadata=ranged(1, 100))
    index: int = field(metadata=ranged(0, 9_999))

    def check(self, where: str) -> None:
        total = self.folds * self.repeats
        require(self.index < total, f"{where}.index", f"must be below folds x repeats ({total}), got {self.index}")


@dataclass
class DataConfig:
    """Where the dataset comes from, where its verified copy lives, and its target."""

    name: str = field()
    source: DataSource = field()
    generator: Optional[GeneratorConfig] = field()
    user_file: Optional[str] = field()
    layout: Layout = field()
    padding: Padding = field()
    normalize: Normalize = field()
    val_fraction: float = field(metadata=ranged(0, 1, low_open=True, high_open=True))
    test_fraction: float = field(metadata=ranged(0, 1, low_open=True, high_open=True))
    split_seed: int = field(metadata=SEED)
    prepared_path: str = field()
    expected_digest: Optional[str] = field()  # of the whole dataset, a fold's too
    target: TargetConfig = field()
    fold: Optional[FoldConfig] = field()  # null: the splits as they are; an audit's k-fold sets it

    def check(self, where: str) -> None:
        require(
            bool(self.name.strip()) and "/" not in self.name,
            f"{where}.name",
            f"must be a non-empty name without '/', got {self.name!r}",
        )
        if self.source is DataSource.synthetic:
            require(self.generator is not None, f"{where}.generator", "required when source=synthetic")
        else:
            require(bool(self.user_file), f"{where}.user_file", "required when source=npz: the path of your .npz file")
        require(
            self.val_fraction + self.test_fraction < 1,
            f"{where}.val_fraction",
            "val_fraction + test_fraction must leave some training data",
        )
        require(
            self.expected_digest is None or len(self.expected_digest) == 64,
            f"{where}.expected_digest",
            "must be a 64-character SHA-256 (as printed by `reprolab prepare`) or null",
        )
        prepared = os.path.normpath(self.prepared_path)
        require(
            os.path.isabs(prepared) or not prepared.startswith(".."),
            f"{where}.prepared_path",
            f"{self.prepared_path!r} leaves the repository; give a path inside it (data/prepared/...) or an "
            f"absolute path",
        )
        if self.fold is not None:
            self.fold.check(f"{where}.fold")


@dataclass
class ModelConfig:
    """A recurrent sequence classifier (see `reprolab.models.SequenceClassifier`)."""

    cell: Cell = field()
    hidden_size: int = field(metadata=ranged(1, 4096))
    num_layers: int = field(metadata=ranged(1, 16))
    dropout: float = field(metadata=ranged(0, 1, high_open=True))  # between recurrent layers
    output_dropout: float = field(metadata=ranged(0, 1, high_open=True))  # on the last step's output

    def check(self, where: str) -> None:
        require(
            self.dropout == 0 or self.num_layers >= 2,
            f"{where}.dropout",
            "dropout inside the recurrent stack acts between layers: it needs num_layers >= 2",
        )


@dataclass
class EarlyStoppingConfig:
    """Stop when the monitored validation metric has not improved for `patience` epochs."""

    enabled: bool = field()
    monitor: Monitor = field()
    patience: int = field(metadata=ranged(1, 100_000))
    min_delta: float = field(metadata=ranged(0, 1_000_000))


@dataclass
class TrainConfig:
    """Adam, batch size (null = full batch), epochs, clipping, early stopping, device."""

    lr: float = field(metadata=ranged(0, 1, low_open=True))
    weight_decay: float = field(metadata=ranged(0, 1))
    batch_size: Optional[int] = field(metadata=ranged(1, 10_000_000))
    max_epochs: int = field(metadata=ranged(1, 100_000))
    grad_clip_norm: Optional[float] = field(metadata=ranged(0, 1_000_000, low_open=True))
    early_stopping: EarlyStoppingConfig = field()
    device: Device = field()


@dataclass
class ExperimentConfig:
    """A named preset: one model and one way of training it."""

    description: str = field()
    model: ModelConfig = field()
    train: TrainConfig = field()


@dataclass
class TrackingConfig:
    """Where runs are recorded: `uri: null` is MLflow's SQLite store at the repository root;
    the MLFLOW_TRACKING_URI environment variable overrides both."""

    enabled: bool = field()
    uri: Optional[str] = field()
    experiment_name: str = field()
    log_model: bool = field()
    log_sweep_models: bool = field()  # the runs of an audit or a compare log their models too

    def check(self) -> None:
        require(bool(self.experiment_name.strip()), "tracking.experiment_name", "must not be empty")
        # MLflow keeps 500 characters; a longer name fails only when the store is first written.
        require(
            len(self.experiment_name) <= 500,
            "tracking.experiment_name",
            f"must be at most 500 characters (MLflow's limit), got {len(self.experiment_name)}",
        )
        # params.yaml is committed and logged as an artifact: no secrets in it.
        host = (self.uri or "").split("://", 1)[-1].split("/", 1)[0]
        require(
            "@" not in host,
            "tracking.uri",
            "holds credentials; put them in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
            "(or MLFLOW_TRACKING_TOKEN) instead, never in the configuration",
        )


@dataclass
class AuditConfig:
    """The ablation audit: which of the changes from `before` to `after` closed the gap."""

    before: str = field()
    after: str = field()
    seeds: list[int] = field(metadata=SEED)
    confidence: float = field(metadata=ranged(0.5, 1, high_open=True))
    resampling: Resampling = field()
    folds: int = field(metadata=ranged(2, 100))  # of kfold
    repeats: int = field(metadata=ranged(1, 100))  # of kfold

    def check(self, presets: Sequence[str]) -> None:
        for side in ("before", "after"):
            require_choice(getattr(self, side), presets, f"audit.{side}", "preset")
        require(self.before != self.after, "audit.after", f"must differ from audit.before ({self.before!r})")
        check_seeds(self.seeds, "audit.seeds")


@dataclass
class ComputeConfig:
    """Where sweeps (audit, compare) run, and with which kernels (`numerics`: the only key here
    that changes a result, so the training stages depend on it; `reprolab.numerics`)."""

    scheduler: Optional[str] = field()  # a Dask scheduler address; DASK_SCHEDULER_ADDRESS wins
    workers: Optional[int] = field(metadata=ranged(1, 1024))  # local processes; null = one per core
    reuse: bool = field()  # reuse a FINISHED MLflow run with the same run key instead of training
    numerics: Numerics = field()  # portable: the same bits on every x86-64-v3 CPU; native: this CPU's


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

    seed: int = field(metadata=SEED)
    experiment: str = field()
    data: DataConfig = field()
    experiments: dict[str, ExperimentConfig] = field()
    tracking: TrackingConfig = field()
    audit: AuditConfig = field()
    compute: ComputeConfig = field()
    references: list[Reference] = field()

    def check(self) -> None:
        require(bool(self.experiments), "experiments", "no experiment presets are defined")
        check_ranges(self)
        self.data.check("data")
        if self.data.generator is not None:
            self.data.generator.check("data.generator")
        for name, preset in self.experiments.items():
            preset.model.check(f"experiments.{name}.model")
        self.preset(self.experiment)
        self.audit.check(list(self.experiments))
        self.tracking.check()

    def preset(self, name: str) -> ExperimentConfig:
        """The named experiment preset, or a ConfigError listing the known ones."""
        require_choice(name, list(self.experiments), "experiment", "preset")
        return self.experiments[name]

    def run_config(self, preset: Optional[str] = None, seed: Optional[int] = None) -> RunConfig:
        """The single-run view of `preset` (default: `experiment`) with `seed` (default: `seed`)."""
        name = preset or self.experiment
        chosen = self.preset(name)
        return RunConfig(
            preset=name,
            seed=self.seed if seed is None else seed,
            data=self.data,
            model=chosen.model,
            train=chosen.train,
        )
