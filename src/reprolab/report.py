"""Reports as Markdown: the pipeline's before/after table, and tables across seeds."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional

from reprolab.audit.checks import VariantCheck
from reprolab.config import TargetConfig
from reprolab.metrics import describe_target, has_target, met_text, missed_bounds, target_met, train_val_gap

if TYPE_CHECKING:
    from reprolab.results import RunResult


def target_cell(metrics: dict[str, float], target: TargetConfig) -> str:
    """ "yes", "no: <the bound that failed>", or "n/a" when no target is set (`target_met`)."""
    met = target_met(metrics, target)
    return "no: " + "; ".join(missed_bounds(metrics, target)) if met is False else met_text(met)


# The over-seeds table's metrics and their column names.
SEED_COLUMNS = {
    "train_accuracy": "train acc",
    "val_accuracy": "val acc",
    "test_accuracy": "test acc",
    "train_val_gap": "train-val gap",
    "val_balanced_accuracy": "val bal acc",
    "test_balanced_accuracy": "test bal acc",
}


def seeds_verdict(check: VariantCheck, target: TargetConfig) -> str:
    """Whether a preset meets the target over its seeds: "yes (5/5 seeds, intervals clear)",
    "no (0/5 seeds): <the first bound missed>" when even the intervals' best ends miss,
    "cannot tell (4/5 seeds): ..." otherwise, "no seed met it (0/3 seeds), but the intervals
    cannot rule it out: ..." when none did; "n/a" with no target."""
    judged = check.judged()
    if judged == "n/a":
        return judged
    seeds = f"{check.seeds_met}/{len(check.seeds)} seeds"
    if judged == "yes":
        return f"yes ({seeds}, intervals clear)"
    missed = check.missed[0] + ("; ..." if len(check.missed) > 1 else "")
    if judged == "no":
        return f"no ({seeds}): {missed}"
    if check.seeds_met == 0:
        return f"no seed met it ({seeds}), but the intervals cannot rule it out: {missed}"
    return f"cannot tell ({seeds}): {missed}"


def comparison_table(results: Sequence[RunResult], checks: dict[str, VariantCheck], target: TargetConfig) -> str:
    """A Markdown table, one row per preset over its seeds: each metric's mean with its interval
    (over seeds and held-out examples, as the audit's: `audit.seed_checks` gives `checks`), the
    mean best epoch, and whether the target holds over the seeds (`seeds_verdict`)."""
    header = ["preset", "seeds", *SEED_COLUMNS.values(), "best epoch", "target met over the seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for preset, check in checks.items():
        runs = [r for r in results if r.preset == preset]
        cells = [preset, ",".join(map(str, check.seeds))]
        cells += [check.stats[key].text(signed=key == "train_val_gap") for key in SEED_COLUMNS]
        cells += [f"{statistics.mean(r.fit['best_epoch'] for r in runs):.1f}", seeds_verdict(check, target)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_note(confidence: float, seeds: int, target: TargetConfig) -> str:
    """How to read `comparison_table` over `seeds` seeds."""
    few = (
        f" With only {seeds} seeds the seeds' spread is barely estimated and the intervals are wide; 3-5 "
        "seeds narrow them."
        if seeds < 3
        else ""
    )
    return (
        f"Mean [{round(confidence * 100)}% interval] over the seeds; the intervals include the seeds' spread "
        "(Student's t) and the sampling noise of the finite splits (the Bayesian bootstrap), as the audit's "
        "(docs/audit.md). "
        + (
            "*Target met*: yes when every seed meets it and the intervals clear its bounds; no when even the "
            "intervals' best ends miss one; cannot tell otherwise."
            if has_target(target)
            else "No target is set (data.target), so *target met* is n/a."
        )
        + few
    )


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
    over_seeds: tuple[Sequence[int], str, str],
    warnings: Sequence[str] = (),
    references: str = "",
) -> str:
    """The pipeline's Markdown report: every preset over the seeds (`over_seeds`: the seeds, the
    `comparison_table` and its `seeds_note`) and the `references_table` after them, as `compare`
    shows them, then one row per preset for the seed whose model the pipeline keeps, with the
    target check, and the warnings about the data and the fits (docs/your-data.md).

    Each row is a preset's `train.json` (metrics, fit, seed, digest, MLflow run id)."""
    first = rows[0]
    seeds, table, note = over_seeds
    lines = [
        "# Before/after comparison",
        "",
        f"Dataset `{data_name}`, digest `{first['dataset_digest']}` (the same for every run). "
        f"Target: {describe_target(target)}."
        + (f" Best achievable validation accuracy (Bayes): {bayes:.3f}." if bayes is not None else ""),
        "",
        *[f"> **Warning.** {warning}\n" for warning in warnings],
        f"## Over seeds {', '.join(map(str, seeds))}",
        "",
        note,
        "",
        table,
        "",
        *([references, ""] if references else []),
        f"## Seed {first['seed']}: the models in models/",
        "",
        "| preset | train acc | val acc | test acc | train-val gap | val bal acc | test bal acc | test macro-F1 "
        "| best epoch | epochs run | target met on this seed | MLflow run |",
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


def references_table(found: dict[str, dict[str, float]], run_ids: dict[str, str]) -> str:
    """The reference classifiers (`reprolab.references`) as a Markdown section, "" when none:
    what simple methods get on the same splits, to read the presets against."""
    if not found:
        return ""
    keys = ("val_accuracy", "test_accuracy", "val_balanced_accuracy", "test_balanced_accuracy", "test_macro_f1")
    lines = [
        "References: one nearest neighbour over the training sequences, on the same splits (no seeds, no "
        "training, never audited); a preset far below them has not learned what the data allows.",
        "",
        "| reference | val acc | test acc | val bal acc | test bal acc | test macro-F1 | MLflow run |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, metrics in found.items():
        cells = [_cell(metrics, key) for key in keys]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | `{run_ids.get(label, '-')}` |")
    return "\n".join(lines)
