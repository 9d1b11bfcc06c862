"""What a run gives, as plain values: recorded in MLflow (`result.json`), reused by sweeps,
summarised by reports and the audit. No torch here."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

# What each epoch's record holds besides its number (`history.csv`, MLflow's `epoch/*` metrics).
HISTORY_KEYS = ("train_loss", "train_accuracy", "train_eval_accuracy", "val_loss", "val_accuracy")
HISTORY_COLUMNS: dict[str, type] = {"epoch": int, **dict.fromkeys(HISTORY_KEYS, float)}  # history.csv


SCHEMA = 1  # of result.json: a newer one is refused, not misread


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
    # SHA-256 of the trained weights (`reprolab.models.weights_digest`); empty in older results.
    weights_sha256: str = ""

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA, **asdict(self)})

    def findings(self, train_labels) -> list[tuple[str, str]]:
        """What its numbers do not show, as (kind, text) (`reprolab.metrics.fit_findings`), given
        the training labels."""
        from collections import Counter

        from reprolab.metrics import fit_findings

        counts = list(Counter(map(int, train_labels)).values())
        return fit_findings(self.metrics, self.fit, counts, self.predictions)

    def warnings(self, train_labels) -> list[str]:
        return [text for _, text in self.findings(train_labels)]

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        """Read a result.json: one of a newer schema is refused (ValueError), not misread; one of
        an older reprolab (no schema) lacks only the fields added since, which have defaults."""
        values = json.loads(text)
        if values.get("schema", 0) > SCHEMA:
            raise ValueError(f"its schema is {values['schema']}; this reprolab reads up to {SCHEMA}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known - {"schema"})
        if unknown:
            raise ValueError(f"it holds fields this reprolab does not know ({', '.join(unknown)})")
        return cls(**{key: value for key, value in values.items() if key in known})


def text_digest(text: str) -> str:
    """SHA-256 of a text file's UTF-8 bytes: what a run records of its result.json."""
    return hashlib.sha256(text.encode()).hexdigest()


def disagreement(result: RunResult, labels: Mapping[str, Any], num_classes: int) -> Optional[str]:
    """Where `result`'s metrics are not what its own predictions and the dataset's labels give
    (each split's accuracy and class-balanced metrics, the test confusion matrix); None when
    every one agrees. A forged result.json whose tags and logged metrics were rewritten to match
    it still has to agree with its predictions, and they with the labels the command holds."""
    import numpy as np

    from reprolab.metrics import class_metrics, confusion_matrix

    for split, actual in labels.items():
        predicted = result.predictions.get(split)
        if predicted is None or len(predicted) != len(actual):
            return f"it holds no predictions for the {len(actual)} {split} sequences to check its metrics against"
        y, p = np.asarray(actual), np.asarray(predicted)
        expected = {"accuracy": int((p == y).sum()) / len(y), **class_metrics(y, p, num_classes)}
        for key, value in expected.items():
            recorded = result.metrics.get(f"{split}_{key}")
            if recorded is not None and recorded != value:
                return f"its {split}_{key} ({recorded}) is not what its own predictions give ({value})"
    if (
        "test" in labels
        and result.confusion
        and result.confusion != confusion_matrix(labels["test"], result.predictions["test"], num_classes)
    ):
        return "its test confusion matrix is not what its own predictions give"
    return None


def runs_warnings(
    results: Sequence[RunResult],
    train_labels: Mapping[str, Any],
    data_warnings: Sequence[str] = (),
    names: Optional[Sequence[str]] = None,
) -> list[str]:
    """Every warning of the runs a report or audit rests on, once per kind: the data's as they
    are, then each kind of `RunResult.findings` with how many runs it concerns, which, and the
    first run's text. `train_labels` maps each run's preset to the training labels it had;
    `names` says how to name each run (default: its preset and seed)."""
    kinds: dict[str, list[tuple[str, str]]] = {}
    for index, result in enumerate(results):
        name = names[index] if names else f"{result.preset} seed {result.seed}"
        for kind, text in result.findings(train_labels[result.preset]):
            kinds.setdefault(kind, []).append((name, text))
    warnings = list(dict.fromkeys(data_warnings))
    for found in kinds.values():
        (first, text), concerned = found[0], list(dict.fromkeys(name for name, _ in found))
        if len(concerned) == 1:
            warnings.append(f"{first}: {text}")
        else:
            listed = ", ".join(concerned[:4]) + (", ..." if len(concerned) > 4 else "")
            warnings.append(f"{len(concerned)} of {len(results)} runs ({listed}); {first}: {text}")
    return warnings
