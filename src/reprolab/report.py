"""Reports as Markdown: the pipeline's before/after table, and tables across seeds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from reprolab.config import TargetConfig
from reprolab.metrics import describe_target, has_target, missed_bounds, train_val_gap

if TYPE_CHECKING:
    from reprolab.results import RunResult


def target_cell(metrics: dict[str, float], target: TargetConfig) -> str:
    """ "yes", "no: <the bound that failed>", or "-" when no target is set."""
    if not has_target(target):
        return "-"
    missed = missed_bounds(metrics, target)
    return "no: " + "; ".join(missed) if missed else "yes"


def _mean_std(values: Sequence[float], digits: int = 3) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def comparison_table(results: Sequence[RunResult], target: TargetConfig) -> str:
    """A Markdown table, one row per preset: mean ± sample std across seeds, and the target check."""
    presets = list(dict.fromkeys(r.preset for r in results))
    header = ["preset", "seeds", "train acc", "val acc", "test acc", "train-val gap", "best epoch", "target met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for preset in presets:
        runs = [r for r in results if r.preset == preset]
        cells = [preset, ",".join(str(r.seed) for r in runs)]
        cells += [
            _mean_std([r.metrics[key] for r in runs]) for key in ("train_accuracy", "val_accuracy", "test_accuracy")
        ]
        cells.append(_mean_std([train_val_gap(r.metrics) for r in runs]))
        cells.append(_mean_std([r.fit["best_epoch"] for r in runs], digits=1))
        cells.append(
            f"{sum(not missed_bounds(r.metrics, target) for r in runs)}/{len(runs)}" if has_target(target) else "-"
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(results: Sequence[RunResult], target: TargetConfig) -> str:
    """A Markdown table with one row per run."""
    header = ["preset", "seed", "train acc", "val acc", "test acc", "best epoch", "epochs run", "target met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        lines.append(
            f"| {r.preset} | {r.seed} | {r.metrics['train_accuracy']:.3f} | "
            f"{r.metrics['val_accuracy']:.3f} | {r.metrics['test_accuracy']:.3f} | "
            f"{r.fit['best_epoch']} | {r.fit['epochs_run']} | {target_cell(r.metrics, target)} |"
        )
    return "\n".join(lines)


def _cell(metrics: dict, key: str) -> str:
    return f"{metrics[key]:.3f}" if key in metrics else "-"


def pipeline_report(
    rows: Sequence[dict],
    data_name: str,
    target: TargetConfig,
    bayes: Optional[float],
    figures: dict[str, str],
    warnings: Sequence[str] = (),
) -> str:
    """The pipeline's Markdown report: one row per preset (single seed), with the target check,
    and the warnings about the data and the fits (docs/your-data.md).

    Each row is a preset's `train.json` (metrics, fit, seed, digest, MLflow run id)."""
    first = rows[0]
    lines = [
        "# Before/after comparison",
        "",
        f"Dataset `{data_name}`, digest `{first['dataset_digest']}` (the same for every row); seed {first['seed']}. "
        f"Target: {describe_target(target)}."
        + (f" Best achievable validation accuracy (Bayes): {bayes:.3f}." if bayes is not None else ""),
        "",
        *[f"> **Warning.** {warning}\n" for warning in warnings],
        "| preset | train acc | val acc | test acc | train-val gap | val bal acc | test bal acc | test macro-F1 "
        "| best epoch | epochs run | target met | MLflow run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        metrics = row["metrics"]
        balanced = [_cell(metrics, key) for key in ("val_balanced_accuracy", "test_balanced_accuracy", "test_macro_f1")]
        lines.append(
            f"| {row['preset']} | {metrics['train_accuracy']:.3f} | {metrics['val_accuracy']:.3f} | "
            f"{metrics['test_accuracy']:.3f} | {train_val_gap(metrics):.3f} | {' | '.join(balanced)} | "
            f"{row['best_epoch']} | {row['epochs_run']} | {target_cell(metrics, target)} | "
            f"`{row['mlflow_run_id'] or '-'}` |"
        )
    lines += [
        "",
        "Balanced accuracy is the mean of the classes' recalls, and macro-F1 the mean of their F1 scores: "
        "a model that answers the largest class scores no better than chance on them. Test recall per class:",
        "",
    ]
    for row in rows:
        recalls = sorted(
            (int(key.rsplit("class", 1)[1]), value)
            for key, value in row["metrics"].items()
            if key.startswith("test_recall_class")
        )
        lines.append(f"- {row['preset']}: " + (", ".join(f"class {k} {v:.3f}" for k, v in recalls) or "-"))
    lines.append("")
    lines += [f"![{title}]({name})\n" for title, name in figures.items()]
    return "\n".join(lines)
