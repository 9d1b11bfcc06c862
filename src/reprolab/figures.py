"""Figures as PNG files (matplotlib's file-only Agg backend, imported when a figure is drawn):
one colour per preset or configuration, the same in every figure, in MLflow's runs list and in
DVC's plots; learning curves and confusion matrices, which always have the actual class on the
rows (y axis) and the predicted class on the columns (x axis), as DVC's confusion plots here do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


# matplotlib's tab10, in order: preset i gets COLOURS[i] in every figure, in MLflow's runs list
# and charts (the `mlflow.runColor` tag), and in DVC's plots (.dvc/plots/by_preset.json).
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def preset_colour(preset: str, presets: Sequence[str]) -> str:
    """The colour of `preset`, by its place among `presets` (grey for any other name)."""
    names = list(presets)
    return COLOURS[names.index(preset) % len(COLOURS)] if preset in names else "#7f7f7f"


def new_figure(width: float, height: float, panels: int = 1, sharey: bool = False) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    axes = figure.subplots(1, panels, sharey=sharey, squeeze=False)[0]
    return figure, axes


def save_figure(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=100)


def learning_curves(histories: dict[str, list[dict[str, float]]], path: Path) -> None:
    """Validation (solid) and training accuracy in eval mode (dashed) per epoch, one colour per
    preset, all presets on one panel so before and after can be compared."""
    figure, (axis,) = new_figure(7.5, 4.2)
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
    save_figure(figure, path)


def confusion_matrices(matrices: dict[str, list[list[int]]], path: Path) -> None:
    """Confusion matrices side by side, one panel per title (rows: actual, columns: predicted)."""
    figure, axes = new_figure(3.6 * len(matrices), 3.4, len(matrices))
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
    save_figure(figure, path)
