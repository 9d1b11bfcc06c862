"""The audit's report: Markdown with the verdict, effects and target checks, and its figures."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from reprolab.audit import AFTER, BEFORE, METRICS, AuditSummary, Interval
from reprolab.config import TargetConfig
from reprolab.report import pyplot, save_figure
from reprolab.runs import RunResult

METRIC_LABELS = {"val_accuracy": "val acc", "test_accuracy": "test acc", "train_accuracy": "train acc",
                 "train_val_gap": "train-val gap"}
FIGURES = {"learning_curves": "learning_curves.png", "ablation": "ablation.png", "confusion": "confusion.png"}


def _seeds_text(seeds: Sequence[int]) -> str:
    contiguous = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}-{seeds[-1]}" if contiguous and len(seeds) > 2 else ", ".join(map(str, seeds))


def _yes_no(value) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def audit_markdown(summary: AuditSummary, descriptions: dict[str, str], audit_id: str) -> str:
    """The audit report as Markdown; figures are referenced by their file names beside it."""
    target, percent = summary.target, round(summary.confidence * 100)
    digests = summary.dataset_digests
    same_data = len(set(digests.values())) == 1
    lines = [
        "# Audit: which change closed the gap",
        "",
        f"**Verdict.** {summary.verdict}",
        "",
        f"- Before: `{summary.before}` ({descriptions[BEFORE]}). After: `{summary.after}` "
        f"({descriptions[AFTER]}).",
        f"- Seeds {_seeds_text(summary.seeds)} ({len(summary.seeds)} per configuration). Intervals are "
        f"{percent}% Student-t intervals across seeds; effects are paired by seed.",
        f"- Target: validation accuracy >= {target.min_val_accuracy:.2f} and training accuracy < "
        f"{target.max_train_accuracy:.2f}. A configuration *holds* the target when every seed meets it and "
        f"the intervals clear both thresholds.",
    ]
    if same_data:
        lines.append(f"- Dataset digest `{next(iter(digests.values()))}` on both sides, verified for every run.")
    else:
        lines.append("- **Different datasets** (allowed with --allow-dataset-mismatch): "
                     + ", ".join(f"{side} `{digest}`" for side, digest in digests.items())
                     + ". Effects mix the change with the change of data.")
    lines.append(f"- MLflow: each configuration and seed is a run tagged `reprolab.audit_id = '{audit_id}'` "
                 f"(search `tags.reprolab.audit_id = '{audit_id}'` in the UI); the summary run "
                 f"`audit {summary.before} -> {summary.after}` holds this report.")
    lines += ["", "## Changes from before to after", "", "| change | key | before | after |", "|---|---|---|---|"]
    for effect in summary.effects:
        for key, (old, new) in effect.change.values.items():
            lines.append(f"| {effect.change.name} | `{key}` | {old} | {new} |")
    header = [METRIC_LABELS[key] for key in METRICS]
    lines += ["", f"## Effect of each change (mean difference [{percent}% CI], paired by seed)", "",
              "`alone`: before + change, minus before. `in after`: after, minus after without the change. "
              "*Needed*: removing it from after breaks the target. *Sufficient*: before + it alone holds the "
              "target.", "",
              "| change | context | " + " | ".join(header) + " | needed | sufficient alone |",
              "|---|---|" + "---|" * len(header) + "---|---|"]
    for effect in summary.effects:
        for context, stats in (("alone", effect.alone), ("in after", effect.in_after)):
            cells = [stats[key].text(signed=True) for key in METRICS]
            flags = [_yes_no(effect.needed), _yes_no(effect.sufficient)] if context == "alone" else ["", ""]
            lines.append(f"| {effect.change.name} | {context} | " + " | ".join(cells + flags) + " |")
    lines += ["", f"## Target check per configuration (mean [{percent}% CI])", "",
              "| configuration | " + " | ".join(header) + " | seeds meeting target | intervals clear | holds |",
              "|---|" + "---|" * len(header) + "---|---|---|"]
    for label, check in summary.variants.items():
        cells = [check.stats[key].text() for key in METRICS]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {check.seeds_met}/{len(check.seeds)} | "
                     f"{_yes_no(check.interval_clears)} | **{_yes_no(check.holds)}** |")
    lines += ["", "## Figures", "",
              f"![learning curves, before vs after, seeds as bands]({FIGURES['learning_curves']})", "",
              f"![each change's effect with {percent}% intervals]({FIGURES['ablation']})", "",
              f"![test confusion matrices, summed over seeds]({FIGURES['confusion']})", "",
              "Per-run metrics and MLflow run ids: `runs.csv`.", ""]
    return "\n".join(lines)


def plot_seed_bands(runs: dict[str, Sequence[RunResult]], target: TargetConfig, path: Path) -> None:
    """Training (eval mode) and validation accuracy per epoch: mean line, min-max band over seeds,
    with the target's validation floor and training ceiling as dashed lines."""
    figure, axes = pyplot().subplots(1, len(runs), figsize=(5 * len(runs), 3.6), sharey=True, squeeze=False)
    for axis, (label, results) in zip(axes[0], runs.items()):
        for key, name in (("train_eval_accuracy", "train (eval mode)"), ("val_accuracy", "validation")):
            longest = max(len(r.history) for r in results)
            epochs, means, lows, highs = [], [], [], []
            for epoch in range(longest):
                values = [r.history[epoch][key] for r in results if len(r.history) > epoch]
                epochs.append(epoch + 1)
                means.append(sum(values) / len(values))
                lows.append(min(values))
                highs.append(max(values))
            line, = axis.plot(epochs, means, label=f"{name}, mean")
            axis.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.2, label=f"{name}, min-max")
        axis.axhline(target.min_val_accuracy, color="tab:orange", linestyle="--", linewidth=0.8)
        axis.axhline(target.max_train_accuracy, color="tab:blue", linestyle="--", linewidth=0.8)
        axis.set_title(f"{label} ({len(results)} seeds)")
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(loc="lower right", fontsize=8)
    save_figure(figure, path)


def plot_ablation(summary: AuditSummary, path: Path) -> None:
    """Each change's effect on val acc, train acc and the gap, alone and within after, with intervals."""
    keys = ("val_accuracy", "train_accuracy", "train_val_gap")
    names = [effect.change.name for effect in summary.effects]
    figure, axes = pyplot().subplots(1, len(keys), figsize=(4.6 * len(keys), 1.2 + 0.7 * len(names)),
                                     sharey=True, squeeze=False)
    height = 0.38
    for axis, key in zip(axes[0], keys):
        for offset, (context, color) in enumerate((("alone", "tab:blue"), ("in after", "tab:orange"))):
            stats: list[Interval] = [getattr(e, "alone" if context == "alone" else "in_after")[key]
                                     for e in summary.effects]
            positions = [index + (offset - 0.5) * height for index in range(len(names))]
            axis.barh(positions, [s.mean for s in stats], height=height, color=color, label=context,
                      xerr=[[s.mean - s.low for s in stats], [s.high - s.mean for s in stats]], capsize=3)
        axis.axvline(0, color="black", linewidth=0.8)
        axis.locator_params(axis="x", nbins=5)
        axis.set_title(f"effect on {METRIC_LABELS[key]}", fontsize=10)
        axis.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(range(len(names)), names)
    axes[0][0].invert_yaxis()
    axes[0][0].legend(loc="best", fontsize=8)
    figure.suptitle(f"{summary.before} -> {summary.after}: mean effect, {round(summary.confidence * 100)}% "
                    f"interval over {len(summary.seeds)} seeds", fontsize=10)
    save_figure(figure, path)


def summed_confusion(results: Sequence[RunResult]) -> list[list[int]]:
    """Element-wise sum of the runs' test confusion matrices."""
    size = len(results[0].confusion)
    return [[sum(r.confusion[i][j] for r in results) for j in range(size)] for i in range(size)]

