"""The audit's analysis: which changes separate two presets, the ablation variants, and what
each change does to the metrics across seeds, with confidence intervals and a verdict.

Pure functions on configs and `RunResult`s; `audit_run` runs and records the variants,
`audit_report` renders the result.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import OmegaConf

from reprolab.config import ExperimentConfig, TargetConfig, differences, to_dict
from reprolab.metrics import meets_target, train_val_gap
from reprolab.results import RunResult

# Keys that make one change together: the first matching prefix names the group.
CHANGE_GROUPS = (
    ("train.early_stopping.", "early stopping"),
    ("model.dropout", "dropout"),
    ("model.output_dropout", "dropout"),
    ("model.hidden_size", "hidden size"),
    ("train.lr", "learning rate"),
)
IGNORED_KEYS = ("description",)


@dataclass
class Change:
    """One logical change: its name and, per key, the (before, after) values."""

    name: str
    values: dict[str, tuple[Any, Any]]


def _plain(preset: ExperimentConfig) -> dict[str, Any]:
    return {key: value for key, value in to_dict(preset).items() if key not in IGNORED_KEYS}


def _group(key: str) -> str:
    return next((name for prefix, name in CHANGE_GROUPS if key.startswith(prefix)), key)


def derive_changes(before: ExperimentConfig, after: ExperimentConfig) -> list[Change]:
    """Every differing key between two presets, related keys grouped, in config order.

    Inside a group, only keys that differ are listed, but applying the change sets the whole
    group's differing keys together (e.g. early stopping's enabled flag with its patience).
    """
    changes: dict[str, Change] = {}
    for key, old, new in differences(_plain(before), _plain(after)):
        name = _group(key)
        changes.setdefault(name, Change(name, {})).values[key] = (old, new)
    return list(changes.values())


def apply_changes(preset: ExperimentConfig, changes: Sequence[Change], side: str) -> ExperimentConfig:
    """A copy of `preset` with each change's keys set to their `side` ("before"/"after") values."""
    index = {"before": 0, "after": 1}[side]
    node = OmegaConf.structured(copy.deepcopy(preset))
    for change in changes:
        for key, values in change.values.items():
            OmegaConf.update(node, key, values[index])
    changed = OmegaConf.to_object(node)
    assert isinstance(changed, ExperimentConfig)
    return changed


BEFORE, AFTER = "before", "after"


def added_label(change: Change) -> str:
    return f"{BEFORE} + {change.name}"


def removed_label(change: Change) -> str:
    return f"{AFTER} - {change.name}"


def ablation_variants(before: ExperimentConfig, after: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """before, after, before + each change alone, after - each change alone.

    Labels starting with "before" train on the before side's data, the others on the after's.
    """
    changes = derive_changes(before, after)
    variants = {BEFORE: before, AFTER: after}
    for change in changes:
        variants[added_label(change)] = apply_changes(before, [change], "after")
        variants[removed_label(change)] = apply_changes(after, [change], "before")
    return variants


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t confidence interval across seeds: (mean, low, high)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


# -- analysis of the ablation's runs ---------------------------------------------------------

# The metrics an audit reports, with the direction that is better.
METRICS = {"val_accuracy": "higher", "test_accuracy": "higher", "train_accuracy": "lower", "train_val_gap": "lower"}


@dataclass
class Interval:
    """Mean across seeds with its confidence interval."""

    mean: float
    low: float
    high: float

    def text(self, signed: bool = False) -> str:
        number = "{:+.3f}" if signed else "{:.3f}"
        return f"{number.format(self.mean)} [{number.format(self.low)}, {number.format(self.high)}]"


@dataclass
class VariantCheck:
    """One configuration of the ablation across seeds, checked against the target."""

    label: str
    seeds: list[int]
    stats: dict[str, Interval]
    seeds_met: int
    interval_clears: bool  # the val interval is above the floor and the train interval below the ceiling

    @property
    def every_seed(self) -> bool:
        return self.seeds_met == len(self.seeds)

    @property
    def holds(self) -> bool:
        """The target holds robustly: on every seed, and the intervals clear the thresholds."""
        return self.every_seed and self.interval_clears


@dataclass
class ChangeEffect:
    """What one change does, paired by seed: alone on top of before, and within after."""

    change: Change
    alone: dict[str, Interval]  # (before + change) - before
    in_after: dict[str, Interval]  # after - (after - change)
    needed: Optional[bool]  # removing it breaks the target (None if after itself fails)
    sufficient: bool  # before + change alone meets the target


@dataclass
class AuditSummary:
    """Everything the audit concludes, as values for the report, the JSON metrics and MLflow."""

    before: str
    after: str
    seeds: list[int]
    confidence: float
    target: TargetConfig
    dataset_digests: dict[str, str]
    variants: dict[str, VariantCheck]
    effects: list[ChangeEffect]
    verdict: str


def _metric(result: RunResult, key: str) -> float:
    return train_val_gap(result.metrics) if key == "train_val_gap" else result.metrics[key]


def _interval(values: Sequence[float], confidence: float) -> Interval:
    return Interval(*mean_interval(values, confidence))


def check_variant(label: str, runs: Sequence[RunResult], target: TargetConfig, confidence: float) -> VariantCheck:
    """Mean and interval of every metric, seeds meeting the target, intervals against it."""
    stats = {key: _interval([_metric(run, key) for run in runs], confidence) for key in METRICS}
    met = sum(meets_target(r.metrics, target) for r in runs)
    # The interval's worst ends must meet the target too: the lowest validation accuracy and
    # the highest training accuracy the interval allows.
    clears = meets_target(
        {"val_accuracy": stats["val_accuracy"].low, "train_accuracy": stats["train_accuracy"].high}, target
    )
    return VariantCheck(label, [r.seed for r in runs], stats, met, clears)


def paired_effect(
    with_change: Sequence[RunResult], without: Sequence[RunResult], confidence: float
) -> dict[str, Interval]:
    """Per metric, the mean of (with - without) over seeds that both sides ran, with an interval."""
    by_seed = {r.seed: r for r in without}
    pairs = [(r, by_seed[r.seed]) for r in with_change if r.seed in by_seed]
    return {key: _interval([_metric(a, key) - _metric(b, key) for a, b in pairs], confidence) for key in METRICS}


def summarize(
    results: Sequence[RunResult],
    changes: Sequence[Change],
    before: str,
    after: str,
    target: TargetConfig,
    confidence: float,
    dataset_digests: dict[str, str],
) -> AuditSummary:
    """Check every variant against the target and measure each change's effect."""
    by_label: dict[str, list[RunResult]] = {}
    for result in results:
        by_label.setdefault(result.preset, []).append(result)
    variants = {label: check_variant(label, runs, target, confidence) for label, runs in by_label.items()}
    after_holds = variants[AFTER].holds
    effects = [
        ChangeEffect(
            change=change,
            alone=paired_effect(by_label[added_label(change)], by_label[BEFORE], confidence),
            in_after=paired_effect(by_label[AFTER], by_label[removed_label(change)], confidence),
            needed=(not variants[removed_label(change)].holds) if after_holds else None,
            sufficient=variants[added_label(change)].holds,
        )
        for change in changes
    ]
    summary = AuditSummary(
        before, after, sorted({r.seed for r in results}), confidence, target, dataset_digests, variants, effects, ""
    )
    summary.verdict = verdict(summary)
    return summary


def _names(effects: Sequence[ChangeEffect]) -> str:
    names = [effect.change.name for effect in effects]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def verdict(summary: AuditSummary) -> str:
    """The audit's answer in one sentence: the change that closed most of the gap, the others
    that are needed too, those that are not, and whether any is enough on its own."""
    after, before = summary.variants[AFTER], summary.variants[BEFORE]
    n = len(summary.seeds)
    val = after.stats["val_accuracy"]
    if not after.holds:
        return (
            f"{summary.after} does not meet the target robustly ({after.seeds_met}/{n} seeds, validation "
            f"accuracy {val.text()}), so no change can be credited with closing the gap."
        )

    def without(effect: ChangeEffect) -> int:
        return summary.variants[removed_label(effect.change)].seeds_met

    ranked = sorted(summary.effects, key=lambda e: e.in_after["val_accuracy"].mean, reverse=True)
    needed = [e for e in ranked if e.needed]
    unneeded = [e for e in ranked if not e.needed]
    sufficient = [e for e in ranked if e.sufficient]
    parts = [
        f"{summary.after} meets the target on {n}/{n} seeds (validation {val.text()} vs "
        f"{before.stats['val_accuracy'].text()} for {summary.before})"
    ]
    if needed:
        main = needed[0]
        parts.append(
            f"{main.change.name} closed most of the gap ({main.in_after['val_accuracy'].text(signed=True)} "
            f"validation accuracy; without it {without(main)}/{n} seeds meet the target)"
        )
        if len(needed) > 1:
            seeds = sorted({without(e) for e in needed[1:]})
            parts.append(
                f"{_names(needed[1:])} {'is' if len(needed) == 2 else 'are'} also needed (without "
                f"{'it' if len(needed) == 2 else 'each'}, {' or '.join(map(str, seeds))}/{n} seeds)"
            )
    if unneeded:
        parts.append(
            f"{_names(unneeded)} {'is' if len(unneeded) == 1 else 'are'} not needed "
            f"(the target holds without {'it' if len(unneeded) == 1 else 'each'})"
        )
    parts.append(
        f"{_names(sufficient)} alone {'is' if len(sufficient) == 1 else 'are each'} enough"
        if sufficient
        else "no change is enough on its own"
    )
    return "; ".join(parts[:-1]) + ", and " + parts[-1] + "."
