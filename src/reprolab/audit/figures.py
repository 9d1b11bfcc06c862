"""The audit's figures: each configuration's band over seeds, the effects of the ablation and
the attribution waterfall, in the colours of `reprolab.figures`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reprolab.audit.measure import Interval
from reprolab.audit.verdict import AuditSummary
from reprolab.config.schema import TargetConfig
from reprolab.figures import COLOURS, new_figure, save_figure
from reprolab.results import RunResult


def seed_bands(runs: dict[str, Sequence[RunResult]], colours: dict[str, str], target: TargetConfig, path: Path) -> None:
    """Validation (solid) and training accuracy in eval mode (dashed) per epoch: mean line and
    min-max band over seeds, one panel per configuration in its preset's colour (`colours`), as
    in the learning curves; the target's bounds as grey lines when they bound accuracy (the
    curves are not balanced accuracy)."""
    figure, axes = new_figure(5 * len(runs), 3.8, len(runs), sharey=True)
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
    save_figure(figure, path)


def ablation(summary: AuditSummary, path: Path) -> None:
    """Each change's effect on val acc, train acc and the gap, alone, within after and as its
    Shapley share, with intervals."""
    keys = (("val_accuracy", "val acc"), ("train_accuracy", "train acc"), ("train_val_gap", "train-val gap"))
    names = [effect.change.name for effect in summary.effects]
    contexts = (("alone", "alone"), ("in_after", "in after"), ("shapley", "Shapley share"))
    figure, axes = new_figure(4.6 * len(keys), 1.4 + 0.9 * len(names), len(keys), sharey=True)
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
    save_figure(figure, path)


def attribution(summary: AuditSummary, keys: Sequence[str], path: Path) -> None:
    """Before -> after as a waterfall, one panel per metric: before's mean, each change's Shapley
    share stacked on it (with its interval), ending exactly at after's mean, because the
    shares add up to the difference."""
    figure, axes = new_figure(1.6 + 1.3 * (len(summary.effects) + 2) * len(keys), 4.6, len(keys))
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
    save_figure(figure, path)
