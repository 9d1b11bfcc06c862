"""The rules on metrics, each written once: the train-validation gap, the target check with the
bound that failed, and the confusion matrix. Plain Python and NumPy: the stages that judge
results import neither torch nor MLflow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np

from reprolab.config import TargetConfig

# What a metrics file and a report show: the headline numbers only.
HEADLINE = ("train_accuracy", "val_accuracy", "test_accuracy", "train_val_gap")


def train_val_gap(metrics: Mapping[str, float]) -> float:
    """Training accuracy minus validation accuracy: how much the model overfits."""
    return metrics["train_accuracy"] - metrics["val_accuracy"]


def with_gap(metrics: Mapping[str, float]) -> dict[str, float]:
    return {**metrics, "train_val_gap": train_val_gap(metrics)}


def target_keys(target: TargetConfig) -> tuple[str, str]:
    """The metrics the target bounds: ("val_accuracy", "train_accuracy"), or their balanced
    accuracies when `target.metric` is balanced_accuracy."""
    return f"val_{target.metric.value}", f"train_{target.metric.value}"


def target_words(target: TargetConfig) -> str:
    """The metric the target bounds, in words: "accuracy" or "balanced accuracy"."""
    return target.metric.value.replace("_", " ")


def describe_target(target: TargetConfig) -> str:
    """The target in words, with its bounds' inclusiveness, e.g. "validation accuracy >= 0.85
    and training accuracy < 0.92"."""
    parts, words = [], target_words(target)
    if target.min_val_accuracy is not None:
        parts.append(f"validation {words} >= {target.min_val_accuracy:g}")
    if target.max_train_accuracy is not None:
        parts.append(f"training {words} {'<=' if target.max_train_inclusive else '<'} {target.max_train_accuracy:g}")
    return " and ".join(parts) if parts else "no target set (data.target has no bound)"


def has_target(target: TargetConfig) -> bool:
    return target.min_val_accuracy is not None or target.max_train_accuracy is not None


def missed_bounds(metrics: Mapping[str, float], target: TargetConfig) -> list[str]:
    """Each bound the metrics miss, in words ("validation accuracy 0.741 < 0.85"); [] when met."""
    missed, words = [], target_words(target)
    val_key, train_key = target_keys(target)
    floor, ceiling = target.min_val_accuracy, target.max_train_accuracy
    if floor is not None and metrics[val_key] < floor:
        missed.append(f"validation {words} {metrics[val_key]:.3f} < {floor:g}")
    if ceiling is not None:
        train = metrics[train_key]
        if train > ceiling if target.max_train_inclusive else train >= ceiling:
            missed.append(f"training {words} {train:.3f} {'>' if target.max_train_inclusive else '>='} {ceiling:g}")
    return missed


def target_met(metrics: Mapping[str, float], target: TargetConfig) -> Optional[bool]:
    """Whether the metrics meet the target; None when no target is set, for there is nothing to
    meet. The one rule every table, JSON file and MLflow tag reads (`met_text`, `met_tag`)."""
    return not missed_bounds(metrics, target) if has_target(target) else None


def met_text(met: Optional[bool]) -> str:
    """A `target_met` in a table: "yes", "no" or "n/a" (no target)."""
    return "n/a" if met is None else ("yes" if met else "no")


def met_tag(met: Optional[bool]) -> str:
    """A `target_met` as an MLflow tag's value: "true", "false" or "n/a" (no target)."""
    return "n/a" if met is None else str(met).lower()


def class_metrics(
    actual: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, num_classes: int
) -> dict[str, float]:
    """Metrics that imbalanced classes cannot inflate: balanced accuracy (the mean of the
    classes' recalls), macro-F1 (the mean of their F1 scores), and each class's recall
    (`recall_class<k>`), over the classes that occur in `actual` (F1: in either)."""
    counts = np.array(confusion_matrix(actual, predicted, num_classes), dtype=float)
    right, actual_n, predicted_n = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    present = actual_n > 0
    recall = np.divide(right, actual_n, out=np.zeros_like(right), where=present)
    precision = np.divide(right, predicted_n, out=np.zeros_like(right), where=predicted_n > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(right), where=both > 0)
    scored = present | (predicted_n > 0)
    return {
        "balanced_accuracy": float(recall[present].mean()),
        "macro_f1": float(f1[scored].mean()),
        **{f"recall_class{k}": float(recall[k]) for k in np.flatnonzero(present)},
    }


NEAR_MAJORITY = 0.02  # training accuracy within this of the majority-class rate: the model did not fit
# Balanced accuracy within this share of the way from chance (1/K) to 1: the model barely tells the
# classes apart (0.6 for 2 classes, 0.28 for 10), whatever its accuracy says.
NEAR_CHANCE = 0.2
EARLY_BEST_EPOCH = 2  # stopped early with its best epoch at or before this: it learned almost nothing


def fit_findings(
    metrics: Mapping[str, float],
    fit: Mapping,
    train_class_counts: Sequence[int],
    predicted: Mapping[str, Sequence[int]],
) -> list[tuple[str, str]]:
    """What a trained model's numbers do not show, each as (kind, text): a training accuracy at
    (or near) the share of the largest training class ("did not fit"); a balanced accuracy near
    chance on a split ("near chance": one class recalled, the others hardly); a split on which
    every prediction is the same class ("one class"); an early stop whose best epoch was the
    first or second ("early stop")."""
    found = []
    majority = max(train_class_counts) / sum(train_class_counts)
    if metrics["train_accuracy"] <= majority + NEAR_MAJORITY:
        found.append(
            (
                "did not fit",
                f"training accuracy {metrics['train_accuracy']:.3f} is at the majority-class rate {majority:.3f}: the "
                f"model did not fit the training data; try a higher learning rate or more epochs, and inputs on a "
                f"common scale",
            )
        )
    chance = 1 / len(train_class_counts)
    for split in ("train", "val", "test"):
        balanced = metrics.get(f"{split}_balanced_accuracy")
        if balanced is None or (split == "train" and found) or balanced > chance + NEAR_CHANCE * (1 - chance):
            continue
        recalls = sorted(
            (int(key.rsplit("class", 1)[1]), value)
            for key, value in metrics.items()
            if key.startswith(f"{split}_recall_class")
        )
        shown = ", ".join(f"class {k} {value:.3f}" for k, value in recalls)
        found.append(
            (
                "near chance",
                f"{split} balanced accuracy {balanced:.3f} is near chance ({chance:.3f} for {len(train_class_counts)} "
                f"classes; recalls {shown}): the model barely tells the classes apart, whatever its accuracy says",
            )
        )
    for split, classes in predicted.items():
        if len(classes) > 1 and len(set(classes)) == 1:
            found.append(
                (
                    "one class",
                    f"every {split} prediction is class {classes[0]}: the model answers one class whatever the input",
                )
            )
    if fit.get("stopped_early") and fit["best_epoch"] <= EARLY_BEST_EPOCH:
        found.append(
            (
                "early stop",
                f"training stopped early with its best epoch at {fit['best_epoch']}: the validation metric never "
                f"improved after that, so the model learned almost nothing; a lower learning rate, a larger "
                f"train.early_stopping.patience or more validation sequences help",
            )
        )
    return found


def confusion_matrix(
    actual: Sequence[int] | np.ndarray, predicted: Sequence[int] | np.ndarray, num_classes: int
) -> list[list[int]]:
    """Counts with rows = actual class, columns = predicted class (the orientation everywhere)."""
    pairs = np.asarray(actual, dtype=np.int64) * num_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes).tolist()
