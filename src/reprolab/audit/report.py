"""The audit's report as Markdown: the verdict, the changes, their effects and the target checks."""

from __future__ import annotations

from collections.abc import Sequence

from reprolab.audit.design import AFTER, BEFORE
from reprolab.audit.measure import METRICS
from reprolab.audit.verdict import AuditSummary
from reprolab.metrics import describe_target, met_text, target_words
from reprolab.results import RunResult

METRIC_LABELS = {
    "val_accuracy": "val acc",
    "test_accuracy": "test acc",
    "train_accuracy": "train acc",
    "train_val_gap": "train-val gap",
    "val_balanced_accuracy": "val bal acc",
    "test_balanced_accuracy": "test bal acc",
}
FIGURES = {
    "learning_curves": "learning_curves.png",
    "attribution": "attribution.png",
    "ablation": "ablation.png",
    "confusion": "confusion.png",
}


def _seeds_text(seeds: Sequence[int]) -> str:
    contiguous = list(seeds) == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{seeds[0]}-{seeds[-1]}" if contiguous and len(seeds) > 2 else ", ".join(map(str, seeds))


def _times(repeats: int) -> str:
    return "once" if repeats == 1 else f"repeated {repeats} times"


def _resampling_text(summary: AuditSummary) -> str:
    sizes, how = summary.split_sizes, summary.resampling
    if how["method"] != "kfold":
        return "splits of " + ", ".join(f"{size} {split}" for split, size in sizes.items()) + " sequences."
    return (
        f"measured by stratified {how['folds']}-fold cross-validation ({_times(how['repeats'])}) over the "
        f"{sizes['val']} training and validation sequences pooled (split seed {how['split_seed']}): each "
        f"configuration and seed is {how['folds'] * how['repeats']} runs, one per fold, and every pooled sequence is "
        f"judged by the runs that held it out; the {sizes['test']} test sequences are held out from every fold and "
        f"never pick a change."
    )


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
        f"- Seeds {_seeds_text(summary.seeds)} ({len(summary.seeds)} per configuration); "
        + _resampling_text(summary)
        + f" Intervals are {percent}% intervals over seeds (Student's t) and held-out examples "
        f"(the Bayesian bootstrap): they include the sampling noise of the finite splits; effects are "
        f"paired by seed and example.",
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
    runs = (
        len(summary.variants)
        * len(summary.seeds)
        * summary.resampling.get("folds", 1)
        * summary.resampling.get("repeats", 1)
    )
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
    lines += _attribution_lines(summary, header, percent)
    lines += [
        "",
        f"## Effect of each change alone and within after (mean difference [{percent}% CI])",
        "",
        "`alone`: before + change, minus before. `in after`: after, minus after without the change. "
        "*Needed*: after without it misses the target (judged by the intervals: *cannot tell* when they "
        "neither clear nor miss it). *Sufficient*: before + it alone holds the target.",
        "",
        "| change | context | " + " | ".join(header) + " | needed | sufficient alone |",
        "|---|---|" + "---|" * len(header) + "---|---|",
    ]
    for effect in summary.effects:
        for context, stats in (("alone", effect.alone), ("in after", effect.in_after)):
            cells = [stats[key].text(signed=True) for key in METRICS]
            flags = [effect.needed, effect.sufficient] if context == "alone" else ["", ""]
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
        seeds_met = f"{check.seeds_met}/{len(check.seeds)}" if check.targeted else "n/a"
        clear = met_text(check.interval_clears if check.targeted else None)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {seeds_met} | {clear} | **{met_text(check.holds)}** |")
    lines += [
        "",
        "## Figures",
        "",
        f"![learning curves, before vs after, seeds as bands]({FIGURES['learning_curves']})",
        "",
        f"![before to after as a waterfall of the Shapley shares]({FIGURES['attribution']})",
        "",
        f"![each change's effect with {percent}% intervals]({FIGURES['ablation']})",
        "",
        f"![test confusion matrices, summed over seeds]({FIGURES['confusion']})",
        "",
        "Per-run metrics and MLflow run ids: `runs.csv`.",
        "",
    ]
    return "\n".join(lines)


def _attribution_lines(summary: AuditSummary, header: list[str], percent: int) -> list[str]:
    """The Shapley shares of each metric's difference, the check that they add up, the pairwise
    interactions and the greedy path."""
    attribution = summary.attribution
    names = [effect.change.name for effect in summary.effects]
    worst = max(value.sum_error for value in attribution.values())
    lines = [
        "",
        f"## Attribution: each change's Shapley share (mean [{percent}% CI])",
        "",
        f"A change's share is its effect averaged over every combination of the other changes (all "
        f"{2 ** len(names)} configurations were trained); the shares add up to the whole before -> after "
        f"difference, on every seed and resample (largest gap here: {worst:.1e}). docs/audit.md explains it.",
        "",
        "| change | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(header),
    ]
    for name in names:
        lines.append(
            f"| {name} | " + " | ".join(attribution[key].shares[name].text(signed=True) for key in METRICS) + " |"
        )
    lines.append(
        f"| **sum = {summary.after} - {summary.before}** | "
        + " | ".join(attribution[key].total.text(signed=True) for key in METRICS)
        + " |"
    )
    if len(names) > 1:
        lines += [
            "",
            "Pairwise interactions (Shapley interaction index: what the pair adds together beyond its two "
            "effects, averaged over the other changes; 0 when the effects simply add):",
            "",
            "| pair | " + " | ".join(header) + " |",
            "|---|" + "---|" * len(header),
        ]
        for pair in attribution["val_accuracy"].interactions:
            cells = [attribution[key].interactions[pair].text(signed=True) for key in METRICS]
            lines.append(f"| {' x '.join(pair)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Greedy path (Fawcett & Hoos 2016): from before, add the change that raises validation "
        f"{target_words(summary.target)} "
        "most, then the next; unlike the shares, its order depends on the path.",
        "",
        "| step | added | " + " | ".join(header) + " | holds the target |",
        "|---|---|" + "---|" * len(header) + "---|",
    ]
    for index, step in enumerate(summary.path, start=1):
        cells = [
            step.stats[key].text() if key != "train_val_gap" else step.stats[key].text(signed=True) for key in METRICS
        ]
        holds = met_text(step.holds)
        lines.append(f"| {index} | {step.change} | " + " | ".join(cells) + f" | {holds} |")
    return lines


def summed_confusion(results: Sequence[RunResult]) -> list[list[int]]:
    """Element-wise sum of the runs' test confusion matrices."""
    size = len(results[0].confusion)
    return [[sum(r.confusion[i][j] for r in results) for j in range(size)] for i in range(size)]
