"""Reports: summarise runs across seeds into tables and check the target."""

from __future__ import annotations

import statistics
from typing import Sequence

from reprolab.config import TargetConfig
from reprolab.runs import RunResult

TABLE_METRICS = (("train_accuracy", "train acc"), ("val_accuracy", "val acc"),
                 ("test_accuracy", "test acc"), ("gap", "train-val gap"))


def meets_target(metrics: dict[str, float], target: TargetConfig) -> bool:
    """Validation accuracy at least the target and training accuracy below its ceiling."""
    return (metrics["val_accuracy"] >= target.min_val_accuracy
            and metrics["train_accuracy"] < target.max_train_accuracy)


def _mean_std(values: Sequence[float], digits: int = 3) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def comparison_table(results: Sequence[RunResult], target: TargetConfig) -> str:
    """A Markdown table, one row per preset: mean ± std across seeds, and the target check."""
    presets = list(dict.fromkeys(r.preset for r in results))
    header = ["preset", "seeds"] + [label for _, label in TABLE_METRICS] + ["best epoch", "target met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for preset in presets:
        runs = [r for r in results if r.preset == preset]
        cells = [preset, ",".join(str(r.seed) for r in runs)]
        for key, _ in TABLE_METRICS:
            cells.append(_mean_std([_value(r, key) for r in runs]))
        cells.append(_mean_std([r.fit["best_epoch"] for r in runs], digits=1))
        met = sum(meets_target(r.metrics, target) for r in runs)
        cells.append(f"{met}/{len(runs)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(results: Sequence[RunResult]) -> str:
    """A Markdown table with one row per run."""
    header = ["preset", "seed", "train acc", "val acc", "test acc", "best epoch", "epochs run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        lines.append(f"| {r.preset} | {r.seed} | {r.metrics['train_accuracy']:.3f} | "
                     f"{r.metrics['val_accuracy']:.3f} | {r.metrics['test_accuracy']:.3f} | "
                     f"{r.fit['best_epoch']} | {r.fit['epochs_run']} |")
    return "\n".join(lines)


def _value(result: RunResult, key: str) -> float:
    if key == "gap":
        return result.metrics["train_accuracy"] - result.metrics["val_accuracy"]
    return result.metrics[key]
