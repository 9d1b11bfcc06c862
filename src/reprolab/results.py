"""What a run gives, as plain values: recorded in MLflow (`result.json`), reused by sweeps,
summarised by reports and the audit. No torch here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

# What each epoch's record holds besides its number (`history.csv`, MLflow's `epoch/*` metrics).
HISTORY_KEYS = ("train_loss", "train_accuracy", "train_eval_accuracy", "val_loss", "val_accuracy")
HISTORY_COLUMNS: dict[str, type] = {"epoch": int, **dict.fromkeys(HISTORY_KEYS, float)}  # history.csv


@dataclass
class RunResult:
    """The outcome of one run: final metrics, fit summary, per-epoch history, and each split's
    predicted classes (from which confusion matrices and intervals are made)."""

    preset: str
    seed: int
    metrics: dict[str, float]
    fit: dict
    history: list[dict[str, float]]
    dataset_digest: str
    predictions: dict[str, list[int]] = field(default_factory=dict)
    # Test-split counts, rows = actual class, columns = predicted class.
    confusion: list[list[int]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        return cls(**json.loads(text))
