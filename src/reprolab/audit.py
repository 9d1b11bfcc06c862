"""The audit's analysis: which changes separate two presets, the ablation variants, and what
each change does to the metrics across seeds, with bootstrap intervals and a verdict.

Pure functions on configs and `RunResult`s; `audit_run` runs and records the variants,
`audit_report` renders the result.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf

from reprolab.config import ExperimentConfig, TargetConfig, differences, to_dict
from reprolab.metrics import meets_target, missed_bounds, train_val_gap
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


# -- analysis of the ablation's runs ---------------------------------------------------------

# The metrics an audit reports, with the direction that is better.
METRICS = {"val_accuracy": "higher", "test_accuracy": "higher", "train_accuracy": "lower", "train_val_gap": "lower"}
SPLIT_OF = {"train_accuracy": "train", "val_accuracy": "val", "test_accuracy": "test"}
RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # the resampling is seeded too: the same runs give the same report
SMALL_SPLIT = 100  # below this many sequences, one sequence moves an accuracy by more than 0.01

Labels = dict[str, np.ndarray]  # split -> the true classes


@dataclass
class Interval:
    """Mean across seeds with its bootstrap interval."""

    mean: float
    low: float
    high: float

    def text(self, signed: bool = False) -> str:
        number = "{:+.3f}" if signed else "{:.3f}"
        return f"{number.format(self.mean)} [{number.format(self.low)}, {number.format(self.high)}]"

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


class Bootstrap:
    """Resamples of seeds and of the held-out splits' examples, drawn once and shared by every
    configuration of a side, so that paired differences use the same draws on both sides.

    A resample draws the seeds with replacement and weights each held-out split's examples with
    Dirichlet(1, ..., 1) weights (the Bayesian bootstrap), shared by every seed: the split's
    sampling noise is common to all seeds, and averaging over seeds does not shrink it. One
    pseudo-example, half right, joins each held-out split with the weight of a real one, so that
    a split whose every example is right still leaves room for error (8 of 8 gives about
    [0.8, 1]); on thousands of examples it changes nothing. The training split is not
    resampled: its accuracy is a property of the fit on those very sequences (the target's
    "training below 92%"), not an estimate for unseen ones, so its interval is over seeds only.
    A configuration's accuracy on a resample is the seed-weighted mean of its weighted
    accuracies; the interval is the percentile interval of those values, inside [0, 1].
    """

    RESAMPLED = ("val", "test")

    def __init__(self, seeds: int, split_sizes: dict[str, int]):
        # At most about 4e7 weights per split (160 MB): fewer resamples for very large splits,
        # whose sampling noise is small anyway.
        resamples = int(min(RESAMPLES, max(200, 4e7 // (max(split_sizes.values()) + 1))))
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        self.seed_weights = rng.multinomial(seeds, [1 / seeds] * seeds, size=resamples) / seeds
        self.example_weights = {}
        for split in self.RESAMPLED:
            weights = rng.standard_exponential((resamples, split_sizes[split] + 1), dtype=np.float32)
            self.example_weights[split] = weights / weights.sum(axis=1, keepdims=True)

    def draws(self, runs: Sequence[RunResult], labels: Labels) -> dict[str, np.ndarray]:
        """Per metric, its value on every resample (runs ordered by seed)."""
        values = {}
        for key, split in SPLIT_OF.items():
            correct = np.array([np.asarray(run.predictions[split]) == labels[split] for run in runs], dtype=float)
            if split in self.RESAMPLED:
                correct = np.hstack([correct, np.full((len(runs), 1), 0.5)])  # the pseudo-example
                weighted = np.einsum("bs,sn,bn->b", self.seed_weights, correct, self.example_weights[split])
            else:
                weighted = self.seed_weights @ correct.mean(axis=1)
            values[key] = np.clip(weighted, 0.0, 1.0)  # float32 weights can sum to 1 +- 1e-7
        values["train_val_gap"] = values["train_accuracy"] - values["val_accuracy"]
        return values


def _interval(mean: float, draws: np.ndarray, confidence: float) -> Interval:
    """The percentile interval of the draws, stretched to hold the observed mean (the
    pseudo-example pulls every draw a little towards 0.5, which matters only where every
    example agrees: 8 of 8 right is 1.000 [0.817, 1.000], not [0.817, 0.998])."""
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(mean, min(float(low), mean), max(float(high), mean))


@dataclass
class VariantCheck:
    """One configuration of the ablation across seeds, checked against the target."""

    label: str
    seeds: list[int]
    stats: dict[str, Interval]
    seeds_met: int
    interval_clears: bool  # the val interval is above the floor and the train interval below the ceiling
    missed: list[str]  # the bounds missed, by a seed or by the interval's worst end

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
    split_sizes: dict[str, int]  # of the after side's dataset
    variants: dict[str, VariantCheck]
    effects: list[ChangeEffect]
    warnings: list[str]
    verdict: str


def _metric(result: RunResult, key: str) -> float:
    return train_val_gap(result.metrics) if key == "train_val_gap" else result.metrics[key]


def _means(runs: Sequence[RunResult]) -> dict[str, float]:
    return {key: statistics.fmean(_metric(run, key) for run in runs) for key in METRICS}


def check_variant(
    label: str, runs: Sequence[RunResult], draws: dict[str, np.ndarray], target: TargetConfig, confidence: float
) -> VariantCheck:
    """Mean and interval of every metric, seeds meeting the target, intervals against it."""
    means = _means(runs)
    stats = {key: _interval(means[key], draws[key], confidence) for key in METRICS}
    missed: list[str] = []
    for run in runs:
        missed += [f"{bound} (seed {run.seed})" for bound in missed_bounds(run.metrics, target)]
    met = sum(meets_target(r.metrics, target) for r in runs)
    # The interval's worst ends must meet the target too: the lowest validation accuracy and
    # the highest training accuracy the interval allows.
    worst = {"val_accuracy": stats["val_accuracy"].low, "train_accuracy": stats["train_accuracy"].high}
    interval_missed = missed_bounds(worst, target)
    missed += [f"{bound} (the interval's worst end)" for bound in interval_missed]
    return VariantCheck(label, [r.seed for r in runs], stats, met, not interval_missed, missed)


def paired_effect(
    with_change: Sequence[RunResult],
    without: Sequence[RunResult],
    draws_with: dict[str, np.ndarray],
    draws_without: dict[str, np.ndarray],
    confidence: float,
) -> dict[str, Interval]:
    """Per metric, the mean over seeds of (with - without), with the interval of the same
    difference over the shared resamples (the same seeds and examples on both sides)."""
    with_means, without_means = _means(with_change), _means(without)
    return {
        key: _interval(with_means[key] - without_means[key], draws_with[key] - draws_without[key], confidence)
        for key in METRICS
    }


def summarize(
    results: Sequence[RunResult],
    changes: Sequence[Change],
    before: str,
    after: str,
    target: TargetConfig,
    confidence: float,
    dataset_digests: dict[str, str],
    labels: dict[str, Labels],
) -> AuditSummary:
    """Check every variant against the target and measure each change's effect.

    `labels` holds each side's true classes per split ("before", "after"): labels starting
    with "before" were trained on the before side's data, the others on the after side's."""
    by_label: dict[str, list[RunResult]] = {}
    for result in sorted(results, key=lambda r: r.seed):
        by_label.setdefault(result.preset, []).append(result)
    seeds = [run.seed for run in by_label[AFTER]]
    for label, runs in by_label.items():
        if [run.seed for run in runs] != seeds:
            raise ValueError(f"{label} ran seeds {[run.seed for run in runs]}, {AFTER} ran {seeds}")
    sizes = {split: len(values) for split, values in labels[AFTER].items()}
    bootstrap = {
        side: Bootstrap(len(seeds), {s: len(v) for s, v in side_labels.items()}) for side, side_labels in labels.items()
    }

    def side(label: str) -> str:
        return BEFORE if label.startswith(BEFORE) else AFTER

    draws = {label: bootstrap[side(label)].draws(runs, labels[side(label)]) for label, runs in by_label.items()}
    variants = {label: check_variant(label, runs, draws[label], target, confidence) for label, runs in by_label.items()}
    after_holds = variants[AFTER].holds

    def effect(with_label: str, without_label: str) -> dict[str, Interval]:
        return paired_effect(
            by_label[with_label], by_label[without_label], draws[with_label], draws[without_label], confidence
        )

    effects = [
        ChangeEffect(
            change=change,
            alone=effect(added_label(change), BEFORE),
            in_after=effect(AFTER, removed_label(change)),
            needed=(not variants[removed_label(change)].holds) if after_holds else None,
            sufficient=variants[added_label(change)].holds,
        )
        for change in changes
    ]
    summary = AuditSummary(before, after, seeds, confidence, target, dataset_digests, sizes, variants, effects, [], "")
    summary.verdict = verdict(summary)
    summary.warnings = small_split_warnings(summary)
    return summary


def _names(effects: Sequence[ChangeEffect]) -> str:
    names = [effect.change.name for effect in effects]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _ranked(summary: AuditSummary) -> list[ChangeEffect]:
    return sorted(summary.effects, key=lambda e: e.in_after["val_accuracy"].mean, reverse=True)


def verdict(summary: AuditSummary) -> str:
    """The audit's answer in one sentence: the change that closed most of the gap, the others
    that are needed too, those that are not, and whether any is enough on its own."""
    after, before = summary.variants[AFTER], summary.variants[BEFORE]
    n = len(summary.seeds)
    val = after.stats["val_accuracy"]
    if not after.holds:
        return (
            f"{summary.after} does not meet the target robustly ({after.seeds_met}/{n} seeds, validation "
            f"accuracy {val.text()}; missed: {'; '.join(after.missed[:3])}), so no change can be credited "
            f"with closing the gap."
        )

    def without(effect: ChangeEffect) -> int:
        return summary.variants[removed_label(effect.change)].seeds_met

    ranked = _ranked(summary)
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


def small_split_warnings(summary: AuditSummary) -> list[str]:
    """Where the data is too small for what the audit claims: a split so small that one
    sequence moves an accuracy by more than 0.01, and claimed effects whose interval holds 0."""
    warnings = []
    n_val = summary.split_sizes["val"]
    if n_val < SMALL_SPLIT:
        half = (lambda i: (i.high - i.low) / 2)(summary.variants[AFTER].stats["val_accuracy"])
        warnings.append(
            f"The validation split has only {n_val} sequences: one sequence moves validation accuracy by "
            f"{1 / n_val:.3f}, and the interval of {summary.after}'s validation accuracy is ±{half:.3f} wide; "
            f"effects smaller than that cannot be told from chance. A larger validation split (more data, or a "
            f"larger data.val_fraction) narrows them."
        )
    claimed = [e for e in summary.effects if e.needed or e.sufficient]
    ranked = _ranked(summary)
    if summary.variants[AFTER].holds and ranked and ranked[0] not in claimed and ranked[0].needed:
        claimed.insert(0, ranked[0])
    for effect in claimed:
        val = effect.in_after["val_accuracy"] if effect.needed else effect.alone["val_accuracy"]
        if val.contains(0.0):
            warnings.append(
                f"{effect.change.name}'s effect on validation accuracy, {val.text(signed=True)}, includes 0: with "
                f"{len(summary.seeds)} seeds and {n_val} validation sequences it cannot be told from chance."
            )
    return warnings
