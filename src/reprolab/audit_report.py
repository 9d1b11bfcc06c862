"""The audit's report as Markdown: the verdict, the changes, their effects and the target checks."""

from __future__ import annotations

from collections.abc import Sequence

from reprolab.audit import AFTER, BEFORE, METRICS, AuditSummary
from reprolab.metrics import describe_target
from reprolab.results import RunResult

METRIC_LABELS = {
    "val_accuracy": "val acc",
    "test_accuracy": "test acc",
    "train_accuracy": "train acc",
    "train_val_gap": "train-val gap",
}
FIGURES = {"learning_curves": "learning_curves.png", "ablation": "ablation.png", "confusion": "confusion.png"}


def _seeds_text(seeds: Sequence[int]) -> str:
    contiguous = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}-{seeds[-1]}" if contiguous and len(seeds) > 2 else ", ".join(map(str, seeds))


def _yes_no(value) -> str:
    return "n/a" if value is None else ("yes" if value else "no")


def audit_markdown(summary: AuditSummary, descriptions: dict[str, str], audit_id: str, reused: int) -> str:
    """The audit report as Markdown; figures are referenced by their file names beside it.
    `reused` runs were not trained again: finished runs with the same run key stood in."""
    target, percent = summary.target, round(summary.confidence * 100)
    digests = summary.dataset_digests
    same_data = len(set(digests.values())) == 1
    lines = [
        "# Audit: which change closed the gap",
        "",
        f"**Verdict.** {summary.verdict}",
        "",
        *[f"> **Warning.** {warning}\n" for warning in summary.warnings],
        f"- Before: `{summary.before}` ({descriptions[BEFORE]}). After: `{summary.after}` ({descriptions[AFTER]}).",
        f"- Seeds {_seeds_text(summary.seeds)} ({len(summary.seeds)} per configuration); splits of "
        + ", ".join(f"{size} {split}" for split, size in summary.split_sizes.items())
        + f" sequences. Intervals are {percent}% bootstrap intervals over seeds and examples (they "
        f"include the sampling noise of the finite splits); effects are paired by seed and example.",
        f"- Target: {describe_target(target)}. A configuration *holds* the target when every seed meets it "
        f"and the intervals clear its bounds.",
    ]
    if same_data:
        lines.append(f"- Dataset digest `{next(iter(digests.values()))}` on both sides, verified for every run.")
    else:
        lines.append(
            "- **Different datasets** (allowed with --allow-dataset-mismatch): "
            + ", ".join(f"{side} `{digest}`" for side, digest in digests.items())
            + ". Effects mix the change with the change of data."
        )
    runs = len(summary.variants) * len(summary.seeds)
    lines.append(
        f"- MLflow: {runs - reused} runs trained for this audit, nested under its summary run "
        f"`audit {summary.before} -> {summary.after}` (which holds this report) and tagged "
        f"`reprolab.audit_id = '{audit_id}'`; {reused} reused from earlier finished runs with the same "
        f"run key (settings, seed, dataset digest, training code). `runs.csv` lists every run id."
    )
    lines += ["", "## Changes from before to after", "", "| change | key | before | after |", "|---|---|---|---|"]
    for effect in summary.effects:
        for key, (old, new) in effect.change.values.items():
            lines.append(f"| {effect.change.name} | `{key}` | {old} | {new} |")
    header = [METRIC_LABELS[key] for key in METRICS]
    lines += [
        "",
        f"## Effect of each change (mean difference [{percent}% CI], paired by seed)",
        "",
        "`alone`: before + change, minus before. `in after`: after, minus after without the change. "
        "*Needed*: removing it from after breaks the target. *Sufficient*: before + it alone holds the "
        "target.",
        "",
        "| change | context | " + " | ".join(header) + " | needed | sufficient alone |",
        "|---|---|" + "---|" * len(header) + "---|---|",
    ]
    for effect in summary.effects:
        for context, stats in (("alone", effect.alone), ("in after", effect.in_after)):
            cells = [stats[key].text(signed=True) for key in METRICS]
            flags = [_yes_no(effect.needed), _yes_no(effect.sufficient)] if context == "alone" else ["", ""]
            lines.append(f"| {effect.change.name} | {context} | " + " | ".join(cells + flags) + " |")
    lines += [
        "",
        f"## Target check per configuration (mean [{percent}% CI])",
        "",
        "| configuration | " + " | ".join(header) + " | seeds meeting target | intervals clear | holds |",
        "|---|" + "---|" * len(header) + "---|---|---|",
    ]
    for label, check in summary.variants.items():
        cells = [check.stats[key].text() for key in METRICS]
        lines.append(
            f"| {label} | " + " | ".join(cells) + f" | {check.seeds_met}/{len(check.seeds)} | "
            f"{_yes_no(check.interval_clears)} | **{_yes_no(check.holds)}** |"
        )
    lines += [
        "",
        "## Figures",
        "",
        f"![learning curves, before vs after, seeds as bands]({FIGURES['learning_curves']})",
        "",
        f"![each change's effect with {percent}% intervals]({FIGURES['ablation']})",
        "",
        f"![test confusion matrices, summed over seeds]({FIGURES['confusion']})",
        "",
        "Per-run metrics and MLflow run ids: `runs.csv`.",
        "",
    ]
    return "\n".join(lines)


def summed_confusion(results: Sequence[RunResult]) -> list[list[int]]:
    """Element-wise sum of the runs' test confusion matrices."""
    size = len(results[0].confusion)
    return [[sum(r.confusion[i][j] for r in results) for j in range(size)] for i in range(size)]
