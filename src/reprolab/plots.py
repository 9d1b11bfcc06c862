"""Figures as PNG files (matplotlib's file-only Agg backend): learning curves, confusion
matrices, the audit's seed bands, effects and attribution waterfall. One colour per preset or configuration, the same
in every figure; confusion matrices always have the actual class on the rows (y axis) and the
predicted class on the columns (x axis), as DVC's confusion plots here do."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reprolab.audit import AuditSummary, Interval
    from reprolab.config import TargetConfig
    from reprolab.results import RunResult

# matplotlib's tab10, in order: preset i gets COLOURS[i] in every figure, in MLflow's runs list
# and charts (the `mlflow.runColor` tag), and in DVC's plots (.dvc/plots/by_preset.json).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def preset_colour(preset: str, presets: Sequence[str]) -> str:
    """The colour of `preset`, by its place among `presets` (grey for any other name)."""
    names = list(presets)
    return COLOURS[names.index(preset) % len(COLOURS)] if preset in names else "#7f7f7f"


def _figure(width: float, height: float, panels: int = 1, sharey: bool = False) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    axes = figure.subplots(1, panels, sharey=sharey, squeeze=False)[0]
    return figure, axes


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)


def learning_curves(histories: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Validation (solid) and training accuracy in eval mode (dashed) per epoch, one colour per
    preset, all presets on one panel so before and after can be compared."""
    figure, (axis,) = _figure(7.5, 4.2)
    for colour, (preset, history) in zip(COLOURS, histories.items()):
        epochs = [row["epoch"] for row in history]
        axis.plot(epochs, [row["val_accuracy"] for row in history], color=colour, label=f"{preset} validation")
        axis.plot(
            epochs,
            [row["train_eval_accuracy"] for row in history],
            color=colour,
            linestyle="--",
            linewidth=1,
            label=f"{preset} training",
        )
    axis.set_xlabel("epoch")
    axis.set_ylabel("accuracy")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=7, ncol=2)
    _save(figure, path)


def confusion_matrices(matrices: dict[str, list[list[int]]], path: Path) -> None:
    """Confusion matrices side by side, one panel per title (rows: actual, columns: predicted)."""
    figure, axes = _figure(3.6 * len(matrices), 3.4, len(matrices))
    for axis, (title, matrix) in zip(axes, matrices.items()):
        axis.imshow(matrix, cmap="Blues")
        dark = max(max(row) for row in matrix) / 2
        if len(matrix) <= 12:
            for i, row in enumerate(matrix):
                for j, count in enumerate(row):
                    axis.text(
                        j,
                        i,
                        str(count),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if count > dark else "black",
                    )
        axis.set_xlabel("predicted")
        axis.set_ylabel("actual")
        axis.set_xticks(range(len(matrix)))
        axis.set_yticks(range(len(matrix)))
        axis.set_title(title, fontsize=9)
    _save(figure, path)


def seed_bands(runs: dict[str, Sequence[RunResult]], colours: dict[str, str], target: TargetConfig, path: Path) -> None:
    """Validation (solid) and training accuracy in eval mode (dashed) per epoch: mean line and
    min-max band over seeds, one panel per configuration in its preset's colour (`colours`), as
    in the learning curves; the target's bounds as grey lines when they bound accuracy (the
    curves are not balanced accuracy)."""
    figure, axes = _figure(5 * len(runs), 3.8, len(runs), sharey=True)
    for axis, (label, results) in zip(axes, runs.items()):
        colour = colours[label]
        for key, name, style in (("val_accuracy", "validation", "-"), ("train_eval_accuracy", "training", "--")):
            longest = max(len(r.history) for r in results)
            epochs, means, lows, highs = [], [], [], []
            for epoch in range(longest):
                values = [r.history[epoch][key] for r in results if len(r.history) > epoch]
                epochs.append(epoch + 1)
                means.append(sum(values) / len(values))
                lows.append(min(values))
                highs.append(max(values))
            axis.plot(epochs, means, color=colour, linestyle=style, label=f"{name}, mean")
            axis.fill_between(epochs, lows, highs, color=colour, alpha=0.15, label=f"{name}, min-max")
        for bound, name in ((target.min_val_accuracy, "validation floor"), (target.max_train_accuracy, "training cap")):
            if bound is not None and target.metric.value == "accuracy":
                axis.axhline(bound, color="grey", linestyle=":", linewidth=1, label=name)
        axis.set_title(f"{label} ({len(results)} seeds)", fontsize=10)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="lower right", fontsize=8)
    _save(figure, path)


def ablation(summary: AuditSummary, path: Path) -> None:
    """Each change's effect on val acc, train acc and the gap, alone, within after and as its
    Shapley share, with intervals."""
    keys = (("val_accuracy", "val acc"), ("train_accuracy", "train acc"), ("train_val_gap", "train-val gap"))
    names = [effect.change.name for effect in summary.effects]
    contexts = (("alone", "alone"), ("in_after", "in after"), ("shapley", "Shapley share"))
    figure, axes = _figure(4.6 * len(keys), 1.4 + 0.9 * len(names), len(keys), sharey=True)
    height = 0.8 / len(contexts)
    for axis, (key, label) in zip(axes, keys):
        for offset, (field, context) in enumerate(contexts):
            stats: list[Interval] = [getattr(e, field)[key] for e in summary.effects]
            positions = [index + (offset - (len(contexts) - 1) / 2) * height for index in range(len(names))]
            axis.barh(
                positions,
                [s.mean for s in stats],
                height=height,
                color=COLOURS[offset],
                label=context,
                xerr=[[s.mean - s.low for s in stats], [s.high - s.mean for s in stats]],
                capsize=3,
            )
        axis.axvline(0, color="black", linewidth=0.8)
        axis.locator_params(axis="x", nbins=5)
        axis.set_title(f"effect on {label}", fontsize=10)
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    axes[0].legend(loc="best", fontsize=8)
    figure.suptitle(
        f"{summary.before} -> {summary.after}: mean effect, {round(summary.confidence * 100)}% "
        f"interval over {len(summary.seeds)} seeds",
        fontsize=10,
    )
    _save(figure, path)


def attribution(summary: AuditSummary, keys: Sequence[str], path: Path) -> None:
    """Before -> after as a waterfall, one panel per metric: before's mean, each change's Shapley
    share stacked on it (with its interval), ending exactly at after's mean, because the
    shares add up to the difference."""
    figure, axes = _figure(1.6 + 1.3 * (len(summary.effects) + 2) * len(keys), 4.6, len(keys))
    for axis, key in zip(axes, keys):
        attribution = summary.attribution[key]
        start = summary.variants["before"].stats[key]
        end = summary.variants["after"].stats[key]
        names = list(attribution.shares)
        levels = [start.mean]
        for name in names:
            levels.append(levels[-1] + attribution.shares[name].mean)
        shares = list(attribution.shares.values())
        ends = [start.low, end.low, *levels, *(level + s.low - s.mean for level, s in zip(levels[1:], shares))]
        tops = [start.high, end.high, *levels, *(level + s.high - s.mean for level, s in zip(levels[1:], shares))]
        bottom = min(ends) - 0.05 * (max(tops) - min(ends) + 0.01)
        if key != "train_val_gap":
            bottom = max(0.0, bottom)
        for index, (interval, colour) in enumerate(((start, COLOURS[0]), (end, COLOURS[1]))):
            x = 0 if index == 0 else len(names) + 1
            axis.bar(x, interval.mean - bottom, bottom=bottom, color=colour, width=0.6)
            axis.errorbar(
                x,
                interval.mean,
                yerr=[[interval.mean - interval.low], [interval.high - interval.mean]],
                color="black",
                capsize=4,
            )
        for index, name in enumerate(names, start=1):
            share = attribution.shares[name]
            colour = COLOURS[2] if share.mean >= 0 else COLOURS[3]
            axis.bar(index, share.mean, bottom=levels[index - 1], color=colour, width=0.6)
            axis.errorbar(
                index,
                levels[index],
                yerr=[[share.mean - share.low], [share.high - share.mean]],
                color="black",
                capsize=4,
            )
            axis.plot([index - 1.3, index + 0.3], [levels[index - 1]] * 2, color="grey", linewidth=0.8, linestyle=":")
        axis.set_ylim(bottom=bottom)
        axis.set_xticks(
            range(len(names) + 2), [summary.before, *names, summary.after], rotation=30, ha="right", fontsize=8
        )
        axis.set_title(f"{key}: {attribution.total.text(signed=True)} = sum of the shares", fontsize=9)
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(
        f"{summary.before} -> {summary.after}: Shapley shares with {round(summary.confidence * 100)}% intervals "
        f"over {len(summary.seeds)} seeds",
        fontsize=10,
    )
    _save(figure, path)
