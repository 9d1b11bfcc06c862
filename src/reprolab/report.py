"""Reports: summarise runs across seeds into tables and check the target."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

from reprolab.config import Config, TargetConfig
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


def pipeline_report(rows: Sequence[dict], config: Config) -> str:
    """The pipeline's Markdown report: one row per preset (single seed), with the target check."""
    target = config.target
    bayes = rows[0].get("val_bayes_accuracy")
    lines = [
        "# Before/after comparison",
        "",
        f"Dataset `{config.data.name}`, digest `{rows[0]['dataset_digest']}` (the same for every row); "
        f"seed {rows[0]['seed']}. Target: validation accuracy >= {target.min_val_accuracy:.2f} with "
        f"training accuracy < {target.max_train_accuracy:.2f}."
        + (f" Best achievable validation accuracy (Bayes): {bayes:.3f}." if bayes is not None else ""),
        "",
        "| preset | train acc | val acc | test acc | train-val gap | best epoch | epochs run | target met | MLflow run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['preset']} | {row['train_accuracy']:.3f} | {row['val_accuracy']:.3f} | "
            f"{row['test_accuracy']:.3f} | {row['train_val_gap']:.3f} | {row['best_epoch']} | "
            f"{row['epochs_run']} | {'yes' if row['target_met'] else 'no'} | `{row['mlflow_run_id']}` |")
    lines += ["", "![learning curves](learning_curves.png)", ""]
    return "\n".join(lines)


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on these machines)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def save_figure(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)
    pyplot().close(figure)


def plot_learning_curves(histories: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Training (eval mode) and validation accuracy per epoch, one panel per preset."""
    figure, axes = pyplot().subplots(1, len(histories), figsize=(4 * len(histories), 3.4), sharey=True,
                                squeeze=False)
    for axis, (preset, history) in zip(axes[0], histories.items()):
        epochs = [row["epoch"] for row in history]
        axis.plot(epochs, [row["train_eval_accuracy"] for row in history], label="train (eval mode)")
        axis.plot(epochs, [row["val_accuracy"] for row in history], label="validation")
        axis.set_title(preset)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="lower right")
    save_figure(figure, path)


def plot_confusion(matrix: list[list[int]], title: str, path: Path) -> None:
    """A confusion matrix (rows: actual, columns: predicted) as a PNG."""
    plot_confusions({title: matrix}, path)


def plot_confusions(matrices: dict[str, list[list[int]]], path: Path) -> None:
    """Confusion matrices side by side, one panel per title (rows: actual, columns: predicted)."""
    figure, axes = pyplot().subplots(1, len(matrices), figsize=(3.6 * len(matrices), 3.2), squeeze=False)
    for axis, (title, matrix) in zip(axes[0], matrices.items()):
        axis.imshow(matrix, cmap="Blues")
        dark = max(max(row) for row in matrix) / 2
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                axis.text(j, i, str(count), ha="center", va="center", color="white" if count > dark else "black")
        axis.set_xlabel("predicted")
        axis.set_ylabel("actual")
        axis.set_xticks(range(len(matrix)))
        axis.set_yticks(range(len(matrix)))
        axis.set_title(title, fontsize=9)
    save_figure(figure, path)
