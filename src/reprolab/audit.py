"""The audit's analysis: which changes separate two presets, the ablation variants, and what
each change does to the metrics across seeds, with bootstrap intervals and a verdict.

Pure functions on configs and `RunResult`s; `audit_run` runs and records the variants,
`audit_report` renders the result.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import operator
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf

from reprolab.config import ExperimentConfig, TargetConfig, differences, to_dict
from reprolab.metrics import has_target, meets_target, missed_bounds, target_keys, target_words
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
# Beyond MAX_CHANGES changes, one change per section of the preset.
SECTION_NAMES = {"model": "model settings", "train": "training settings"}


@dataclass
class Change:
    """One logical change: its name and, per key, the (before, after) values; `merged` names the
    changes it stands for when there were too many to audit one by one (else empty)."""

    name: str
    values: dict[str, tuple[Any, Any]]
    merged: list[str] = field(default_factory=list)


def _plain(preset: ExperimentConfig) -> dict[str, Any]:
    return {key: value for key, value in to_dict(preset).items() if key not in IGNORED_KEYS}


def _group(key: str) -> str:
    return next((name for prefix, name in CHANGE_GROUPS if key.startswith(prefix)), key)


def derive_changes(before: ExperimentConfig, after: ExperimentConfig, room: Optional[int] = None) -> list[Change]:
    """Every differing key between two presets, related keys grouped, in config order.

    Inside a group, only keys that differ are listed, but applying the change sets the whole
    group's differing keys together (e.g. early stopping's enabled flag with its patience).
    More than `room` (default MAX_CHANGES) changes are grouped by section (`by_section`).
    """
    changes: dict[str, Change] = {}
    for key, old, new in differences(_plain(before), _plain(after)):
        name = _group(key)
        changes.setdefault(name, Change(name, {})).values[key] = (old, new)
    fits = len(changes) <= (MAX_CHANGES if room is None else room)
    return list(changes.values()) if fits else by_section(list(changes.values()))


CODE = "training code"  # a change of the code that trains, between runs made by different code


def code_change(before: str, after: str, module: str) -> Change:
    """The training code as one more change, between the codes named `before` and `after`
    (`module` is the module whose import closure is the training code)."""
    return Change(CODE, {module: (before, after)})


def by_section(changes: Sequence[Change]) -> list[Change]:
    """One change per section of the preset ("model settings", "training settings"), each
    standing for the changes whose keys lie there: all 2^k combinations of more than
    MAX_CHANGES changes are too many to train, and a group's share is still exact."""
    grouped: dict[str, Change] = {}
    for change in changes:
        for key, values in change.values.items():
            section = key.split(".")[0]
            name = SECTION_NAMES.get(section, section)
            group = grouped.setdefault(name, Change(name, {}))
            group.values[key] = values
            if change.name not in group.merged:
                group.merged.append(change.name)
    return list(grouped.values())


def apply_changes(preset: ExperimentConfig, changes: Sequence[Change], side: str) -> ExperimentConfig:
    """A copy of `preset` with each change's keys set to their `side` ("before"/"after") values
    (the training code is no key of a preset: which code trains is the caller's)."""
    index = {"before": 0, "after": 1}[side]
    node = OmegaConf.structured(copy.deepcopy(preset))
    for change in changes:
        if change.name == CODE:
            continue
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


MAX_CHANGES = 6  # 2^6 = 64 configurations per seed: beyond that, changes are grouped by section


def coalition_label(changes: Sequence[Change], names: frozenset[str]) -> str:
    """The configuration that applies the changes in `names` to before: "before", "after",
    "before + X" (one change), "after - X" (all but one), else "before + X + Y"."""
    if not names:
        return BEFORE
    if len(names) == len(changes):
        return AFTER
    if len(names) == 1:
        return added_label(next(c for c in changes if c.name in names))
    if len(names) == len(changes) - 1:
        return removed_label(next(c for c in changes if c.name not in names))
    return " + ".join([BEFORE] + [c.name for c in changes if c.name in names])


def coalitions(changes: Sequence[Change]) -> dict[frozenset[str], str]:
    """Every subset of the changes (2^k), smallest first, with its configuration's label."""
    names = [change.name for change in changes]
    subsets = [frozenset(chosen) for size in range(len(names) + 1) for chosen in itertools.combinations(names, size)]
    return {subset: coalition_label(changes, subset) for subset in subsets}


def ablation_variants(before: ExperimentConfig, after: ExperimentConfig) -> dict[str, ExperimentConfig]:
    """Every combination of the changes applied to before (2^k configurations, before and after
    among them), by label. Labels starting with "before" train on the before side's data, the
    others on the after's."""
    changes = derive_changes(before, after)
    return {
        label: apply_changes(before, [c for c in changes if c.name in subset], "after")
        for subset, label in coalitions(changes).items()
    }


# -- analysis of the runs ---------------------------------------------------------------------

# The metrics an audit reports, with the direction that is better.
METRICS = {
    "val_accuracy": "higher",
    "test_accuracy": "higher",
    "train_accuracy": "lower",
    "train_val_gap": "lower",
    "val_balanced_accuracy": "higher",
    "test_balanced_accuracy": "higher",
}
SPLITS = ("train", "val", "test")
RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # the resampling is seeded too: the same runs give the same report
SMALL_SPLIT = 100  # below this many sequences, one sequence moves an accuracy by more than 0.01

Labels = dict[str, np.ndarray]  # split -> the true classes


@dataclass
class Interval:
    """Mean across seeds with its interval."""

    mean: float
    low: float
    high: float

    def text(self, signed: bool = False) -> str:
        number = "{:+.3f}" if signed else "{:.3f}"
        return f"{number.format(self.mean)} [{number.format(self.low)}, {number.format(self.high)}]"

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass
class Measure:
    """One metric of one configuration, or a weighted sum of configurations (an effect, a
    Shapley value): its value on each seed, and its mean over seeds on each resample of the
    held-out examples. Linear: a sum of measures is the measure of the sum."""

    per_seed: np.ndarray
    draws: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.per_seed.mean())

    def __add__(self, other: Measure) -> Measure:
        return Measure(self.per_seed + other.per_seed, self.draws + other.draws)

    def __sub__(self, other: Measure) -> Measure:
        return Measure(self.per_seed - other.per_seed, self.draws - other.draws)

    def __mul__(self, weight: float) -> Measure:
        return Measure(self.per_seed * weight, self.draws * weight)


Measures = dict[str, Measure]  # metric -> its measure


def combine(terms: Sequence[tuple[float, Measures]]) -> Measures:
    """The weighted sum of configurations' measures, metric by metric."""
    return {
        key: functools.reduce(operator.add, (measures[key] * weight for weight, measures in terms)) for key in METRICS
    }


class Bootstrap:
    """The two sources of noise in a mean over seeds, measured apart and added.

    The held-out examples: each resample weights a split's examples with Dirichlet(1, ..., 1)
    weights (the Bayesian bootstrap), the same for every seed and every configuration of a side,
    so that differences are paired by example. One pseudo-example joins each held-out split with
    the weight of a real one, right or wrong at random (a fair coin per configuration and
    resample): a split whose every example is right still leaves room for error (8 of 8 is not
    a certain 1), and two configurations that agree on every example still differ by up to one
    sequence's weight; on thousands of examples it changes nothing.

    The seeds: few seeds say little about their spread, so the seed component is Student's t
    with n - 1 degrees of freedom scaled by the seeds' standard error (s / sqrt(n)), not a
    resample of the seeds (which is too narrow with 2-5 seeds). Each draw of a measure is its
    example draw plus the seed standard error times a t draw; the interval is the percentile
    interval of those sums. The training split is not resampled: its accuracy is a property of
    the fit on those very sequences, so its interval is over seeds (and the pseudo-example) only.
    """

    RESAMPLED = ("val", "test")

    def __init__(self, seeds: int, split_sizes: dict[str, int], resamples: int):
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        self.seed_noise = rng.standard_t(max(seeds - 1, 1), size=resamples)
        self.example_weights = {}
        for split in self.RESAMPLED:
            weights = rng.standard_exponential((resamples, split_sizes[split] + 1), dtype=np.float32)
            self.example_weights[split] = weights / weights.sum(axis=1, keepdims=True)

    @staticmethod
    def resamples_for(split_sizes: Sequence[int]) -> int:
        """At most about 4e7 weights per split (160 MB): fewer resamples for very large splits,
        whose sampling noise is small anyway."""
        return int(min(RESAMPLES, max(200, 4e7 // (max(split_sizes) + 1))))

    def measure(self, runs: Sequence[RunResult], labels: Labels, label: str) -> Measures:
        """Every metric of one configuration's runs (ordered by seed): each split's accuracy and
        balanced accuracy (the mean of the classes' recalls), and the train-val gap."""
        coin = np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(label.encode())])
        values = {}
        for split in SPLITS:
            correct = np.array([np.asarray(run.predictions[split]) == labels[split] for run in runs], dtype=float)
            classes = np.unique(labels[split])
            members = (labels[split][:, None] == classes[None, :]).astype(float)  # example x class
            rate = correct.mean(axis=0)  # each example's rate of being right over the seeds
            if split in self.RESAMPLED:
                weights = self.example_weights[split]
                pseudo = coin.integers(0, 2, size=len(weights)).astype(float)  # the pseudo-example
                real, extra = weights[:, :-1], weights[:, -1:]
                draws = real @ rate + extra[:, 0] * pseudo
                # Each class's weighted recall, the pseudo-example joining every class.
                recalls = (real @ (members * rate[:, None]) + extra * pseudo[:, None]) / (real @ members + extra)
            else:  # not resampled: only the pseudo-example, with the weight of one real sequence
                pseudo = coin.integers(0, 2, size=len(self.seed_noise)).astype(float)
                draws = (rate.sum() + pseudo) / (len(rate) + 1)
                recalls = (rate @ members + pseudo[:, None]) / (members.sum(axis=0) + 1)
            per_class = correct @ members / members.sum(axis=0)  # seed x class
            values[f"{split}_accuracy"] = Measure(correct.mean(axis=1), draws)
            values[f"{split}_balanced_accuracy"] = Measure(per_class.mean(axis=1), recalls.mean(axis=1))
        values["train_val_gap"] = values["train_accuracy"] - values["val_accuracy"]
        return values

    def interval(self, measure: Measure, confidence: float, bounds: tuple[float, float]) -> Interval:
        """The percentile interval of example draw + seed standard error x t draw, inside
        `bounds` and stretched to hold the observed mean."""
        n = len(measure.per_seed)
        spread = float(measure.per_seed.std(ddof=1)) / np.sqrt(n) if n > 1 else 0.0
        draws = measure.draws - measure.draws.mean() + measure.mean + spread * self.seed_noise
        tail = (1 - confidence) / 2 * 100
        low, high = np.clip(np.percentile(draws, [tail, 100 - tail]), *bounds)
        return Interval(measure.mean, min(float(low), measure.mean), max(float(high), measure.mean))


LEVEL, DIFFERENCE = (0.0, 1.0), (-1.0, 1.0)  # the bounds of an accuracy and of a difference of two


def _level_bounds(key: str) -> tuple[float, float]:
    return DIFFERENCE if key == "train_val_gap" else LEVEL


Verdict = str  # "yes", "no", "cannot tell" or "n/a"
NEGATED = {"yes": "no", "no": "yes", "cannot tell": "cannot tell"}


@dataclass
class VariantCheck:
    """One configuration across seeds, checked against the target."""

    label: str
    seeds: list[int]
    stats: dict[str, Interval]
    seeds_met: int
    interval_clears: bool  # the val interval is above the floor and the train interval below the ceiling
    clearly_fails: bool  # even the intervals' best ends miss a bound
    missed: list[str]  # the bounds missed, by a seed or by the interval's worst end

    @property
    def every_seed(self) -> bool:
        return self.seeds_met == len(self.seeds)

    @property
    def holds(self) -> bool:
        """The target holds robustly: on every seed, and the intervals clear the thresholds."""
        return self.every_seed and self.interval_clears

    def judged(self) -> Verdict:
        """Whether this configuration meets the target, as far as its intervals can tell."""
        return "yes" if self.holds else ("no" if self.clearly_fails else "cannot tell")


@dataclass
class ChangeEffect:
    """What one change does, paired by seed and example: alone on top of before, within after,
    and its Shapley value (its average effect over every combination of the other changes)."""

    change: Change
    alone: dict[str, Interval]  # (before + change) - before
    in_after: dict[str, Interval]  # after - (after - change)
    shapley: dict[str, Interval]
    needed: Verdict  # does after without it miss the target? "n/a" when after itself does not hold
    sufficient: Verdict  # does before + it alone hold the target? "n/a" when no target is set


@dataclass
class Attribution:
    """A metric's before -> after difference split into the changes' Shapley values, which add
    up to it exactly, with the pairwise interaction indices."""

    total: Interval
    shares: dict[str, Interval]
    interactions: dict[tuple[str, str], Interval]
    sum_error: float  # |sum of shares - total|, over the means and every resample


@dataclass
class PathStep:
    """One step of the greedy path from before to after: the change added and where it leads."""

    change: str
    label: str
    stats: dict[str, Interval]
    holds: Optional[bool]  # None when no target is set


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
    attribution: dict[str, Attribution]
    path: list[PathStep]
    gap_before: bool  # the before side overfits: its train-val gap is above 0 beyond noise
    warnings: list[str]
    verdict: str


def _missed(
    runs: Sequence[RunResult], stats: dict[str, Interval], target: TargetConfig
) -> tuple[list[str], bool, bool]:
    missed: list[str] = []
    for run in runs:
        missed += [f"{bound} (seed {run.seed})" for bound in missed_bounds(run.metrics, target)]
    # The interval's worst ends must meet the target too: the lowest validation accuracy and the
    # highest training accuracy the interval allows; when even the best ends miss, it fails.
    val, train = target_keys(target)
    worst = {val: stats[val].low, train: stats[train].high}
    best = {val: stats[val].high, train: stats[train].low}
    interval_missed = missed_bounds(worst, target)
    missed += [f"{bound} (the interval's worst end)" for bound in interval_missed]
    return missed, not interval_missed, bool(missed_bounds(best, target))


def check_variant(
    label: str, runs: Sequence[RunResult], stats: dict[str, Interval], target: TargetConfig
) -> VariantCheck:
    """Seeds meeting the target, and the intervals against it."""
    missed, clears, fails = _missed(runs, stats, target)
    met = sum(meets_target(r.metrics, target) for r in runs)
    return VariantCheck(label, [r.seed for r in runs], stats, met, clears, fails, missed)


def seed_checks(
    results: Sequence[RunResult], labels: Labels, target: TargetConfig, confidence: float
) -> dict[str, VariantCheck]:
    """Each preset's runs over its seeds, as the audit judges a configuration: every metric's
    mean with its interval, and the target check (met on every seed, and the intervals clear
    the bounds). What `reprolab compare` and the pipeline's report show."""
    by_preset: dict[str, list[RunResult]] = {}
    for result in sorted(results, key=lambda r: r.seed):
        by_preset.setdefault(result.preset, []).append(result)
    sizes = {split: len(values) for split, values in labels.items()}
    resamples = Bootstrap.resamples_for(list(sizes.values()))
    checks = {}
    for preset, runs in by_preset.items():
        bootstrap = Bootstrap(len(runs), sizes, resamples)
        measures = bootstrap.measure(runs, labels, preset)
        stats = {key: bootstrap.interval(m, confidence, _level_bounds(key)) for key, m in measures.items()}
        checks[preset] = check_variant(preset, runs, stats, target)
    return checks


def shapley_terms(names: Sequence[str], player: str) -> list[tuple[float, frozenset[str]]]:
    """The Shapley value of `player` as a weighted sum of the coalitions' values:
    sum over S without it of |S|! (k - |S| - 1)! / k! * (v(S + player) - v(S))."""
    others = [name for name in names if name != player]
    k = len(names)
    terms = []
    for size in range(k):
        weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
        for chosen in itertools.combinations(others, size):
            terms += [(weight, frozenset(chosen) | {player}), (-weight, frozenset(chosen))]
    return terms


def interaction_terms(names: Sequence[str], pair: tuple[str, str]) -> list[tuple[float, frozenset[str]]]:
    """The Shapley interaction index of a pair (Grabisch 1997): sum over S without either of
    |S|! (k - |S| - 2)! / (k - 1)! * (v(S + i + j) - v(S + i) - v(S + j) + v(S))."""
    i, j = pair
    others = [name for name in names if name not in pair]
    k = len(names)
    terms = []
    for size in range(k - 1):
        weight = math.factorial(size) * math.factorial(k - size - 2) / math.factorial(k - 1)
        for chosen in itertools.combinations(others, size):
            base = frozenset(chosen)
            terms += [(weight, base | {i, j}), (-weight, base | {i}), (-weight, base | {j}), (weight, base)]
    return terms


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
    """Check every configuration against the target, measure each change's effect and split
    the before -> after difference into the changes' Shapley values.

    `labels` holds each side's true classes per split ("before", "after"): configurations whose
    label starts with "before" were trained on the before side's data, the others on the after's."""
    by_label: dict[str, list[RunResult]] = {}
    for result in sorted(results, key=lambda r: r.seed):
        by_label.setdefault(result.preset, []).append(result)
    seeds = [run.seed for run in by_label[AFTER]]
    for label, runs in by_label.items():
        if [run.seed for run in runs] != seeds:
            raise ValueError(f"{label} ran seeds {[run.seed for run in runs]}, {AFTER} ran {seeds}")
    sizes = {
        side: {split: len(values) for split, values in side_labels.items()} for side, side_labels in labels.items()
    }
    resamples = Bootstrap.resamples_for([n for side in sizes.values() for n in side.values()])
    bootstrap = {side: Bootstrap(len(seeds), side_sizes, resamples) for side, side_sizes in sizes.items()}

    def side(label: str) -> str:
        return BEFORE if label.startswith(BEFORE) else AFTER

    measures = {
        label: bootstrap[side(label)].measure(runs, labels[side(label)], label) for label, runs in by_label.items()
    }
    interval = bootstrap[AFTER].interval

    def stats(terms: Sequence[tuple[float, str]]) -> dict[str, Interval]:
        combined = combine([(weight, measures[label]) for weight, label in terms])
        return {key: interval(value, confidence, DIFFERENCE) for key, value in combined.items()}

    variants = {
        label: check_variant(
            label,
            by_label[label],
            {key: interval(m, confidence, _level_bounds(key)) for key, m in measures[label].items()},
            target,
        )
        for label in by_label
    }
    targeted = has_target(target)
    after_holds = variants[AFTER].holds
    named = coalitions(changes)
    everything = frozenset(change.name for change in changes)
    names = [change.name for change in changes]

    def shapley(name: str) -> list[tuple[float, str]]:
        return [(weight, named[subset]) for weight, subset in shapley_terms(names, name)]

    effects = [
        ChangeEffect(
            change=change,
            alone=stats([(1, named[frozenset({change.name})]), (-1, BEFORE)]),
            in_after=stats([(1, AFTER), (-1, named[everything - {change.name}])]),
            shapley=stats(shapley(change.name)),
            needed=NEGATED[variants[named[everything - {change.name}]].judged()] if targeted and after_holds else "n/a",
            sufficient=variants[named[frozenset({change.name})]].judged() if targeted else "n/a",
        )
        for change in changes
    ]
    attribution = {key: _attribution(key, measures, changes, named, interval, confidence) for key in METRICS}
    summary = AuditSummary(
        before,
        after,
        seeds,
        confidence,
        target,
        dataset_digests,
        sizes[AFTER],
        variants,
        effects,
        attribution,
        greedy_path(changes, variants, named, target),
        gap_before=variants[BEFORE].stats["train_val_gap"].low > 0,
        warnings=[],
        verdict="",
    )
    summary.verdict = verdict(summary)
    summary.warnings = grouping_warnings(changes) + small_split_warnings(summary)
    return summary


def _attribution(key, measures, changes, named, interval, confidence) -> Attribution:
    names = [change.name for change in changes]
    total = measures[AFTER][key] - measures[BEFORE][key]

    def measure_of(terms: Sequence[tuple[float, frozenset[str]]]) -> Measure:
        return combine([(weight, measures[named[subset]]) for weight, subset in terms])[key]

    shares = {name: measure_of(shapley_terms(names, name)) for name in names}
    summed = functools.reduce(operator.add, shares.values())
    error = float(max(np.abs(summed.per_seed - total.per_seed).max(), np.abs(summed.draws - total.draws).max()))
    pairs = list(itertools.combinations(names, 2))
    return Attribution(
        total=interval(total, confidence, DIFFERENCE),
        shares={name: interval(share, confidence, DIFFERENCE) for name, share in shares.items()},
        interactions={
            pair: interval(measure_of(interaction_terms(names, pair)), confidence, DIFFERENCE) for pair in pairs
        },
        sum_error=error,
    )


def greedy_path(
    changes: Sequence[Change], variants: dict[str, VariantCheck], named: dict[frozenset[str], str], target: TargetConfig
) -> list[PathStep]:
    """From before, add at each step the change that raises mean validation accuracy (balanced
    accuracy, if the target names it) most (Fawcett & Hoos 2016's ablation path): which change
    first, second, ... and where each step leads. Its order depends on the path taken; the
    Shapley values do not."""
    key = target_keys(target)[0]
    chosen: frozenset[str] = frozenset()
    path = []
    for _ in changes:
        options = [change.name for change in changes if change.name not in chosen]
        best = max(options, key=lambda name: variants[named[chosen | {name}]].stats[key].mean)
        chosen = chosen | {best}
        check = variants[named[chosen]]
        path.append(PathStep(best, named[chosen], check.stats, check.holds if has_target(target) else None))
    return path


def _names(names: Sequence[str]) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _shares_text(attribution: Attribution) -> str:
    ranked = sorted(attribution.shares.items(), key=lambda item: abs(item[1].mean), reverse=True)
    return ", ".join(f"{name} {share.text(signed=True)}" for name, share in ranked)


def verdict(summary: AuditSummary) -> str:
    """The audit's answer in a few sentences: whether there was a gap, whether after meets the
    target, and which changes moved the metrics, by their Shapley shares. Nothing is claimed
    that the intervals do not support."""
    after, before = summary.variants[AFTER], summary.variants[BEFORE]
    n = len(summary.seeds)
    key = target_keys(summary.target)[0]  # validation accuracy, or balanced accuracy if the target names it
    words = target_words(summary.target)
    val = summary.attribution[key]
    gap = summary.attribution["train_val_gap"]
    sentences = []
    if not summary.gap_before:
        sentences.append(
            f"{summary.before} does not overfit beyond noise (train-val gap "
            f"{before.stats['train_val_gap'].text(signed=True)}), so there was no gap to close"
        )
    if not has_target(summary.target):
        sentences.append("No target is set (data.target), so nothing is said about meeting one")
    elif not after.holds:
        sentences.append(
            f"{summary.after} does not meet the target robustly ({after.seeds_met}/{n} seeds, validation "
            f"{words} {after.stats[key].text()}; missed: {'; '.join(after.missed[:3])}), so no "
            f"change can be credited with meeting it"
        )
    else:
        sentences.append(
            f"{summary.after} meets the target on {n}/{n} seeds (validation {words} {after.stats[key].text()} vs "
            f"{before.stats[key].text()} for {summary.before})"
        )
        sentences += _needed_and_sufficient(summary.effects)
    sentences.append(
        f"From {summary.before} to {summary.after}, validation {words} moves by {val.total.text(signed=True)} "
        f"and the train-val gap by {gap.total.text(signed=True)}; the Shapley shares of the validation change "
        f"(they add up to it): {_shares_text(val)}"
    )
    told = [e for e in summary.effects if not e.shapley[key].contains(0.0)]
    if told:
        largest = max(told, key=lambda e: abs(e.shapley[key].mean))
        sentences.append(f"{largest.change.name} has the largest share that can be told from chance")
    else:
        sentences.append("no change's share can be told from chance with these seeds and sequences")
    sizes = summary.split_sizes
    if sizes["val"] < SMALL_SPLIT and sizes["test"] > sizes["val"]:
        test = summary.attribution[key.replace("val_", "test_", 1)]
        sentences.append(
            f"these rest on {sizes['val']} validation sequences; on the {sizes['test']} test sequences, test "
            f"{words} moves by {test.total.text(signed=True)}, with shares {_shares_text(test)}"
        )
    return ". ".join(sentence[0].upper() + sentence[1:] for sentence in sentences) + "."


def _needed_and_sufficient(effects: Sequence[ChangeEffect]) -> list[str]:
    """What the intervals say about needing each change, and about each being enough alone."""
    needed = [e.change.name for e in effects if e.needed == "yes"]
    unneeded = [e.change.name for e in effects if e.needed == "no"]
    unclear = [e.change.name for e in effects if e.needed == "cannot tell"]
    sufficient = [e.change.name for e in effects if e.sufficient == "yes"]
    sentences = []
    if needed:
        sentences.append(
            f"without {_names(needed)} it misses the target: {'it is' if len(needed) == 1 else 'each is'} needed"
        )
    if unneeded:
        one = len(unneeded) == 1
        sentences.append(
            f"{_names(unneeded)} {'is' if one else 'are'} not needed "
            f"(the target holds without {'it' if one else 'each'})"
        )
    if unclear:
        sentences.append(
            f"whether {_names(unclear)} {'is' if len(unclear) == 1 else 'are'} needed, the intervals cannot tell"
        )
    sentences.append(
        f"{_names(sufficient)} alone {'is' if len(sufficient) == 1 else 'are each'} enough"
        if sufficient
        else "no change is enough on its own"
    )
    return sentences


def grouping_warnings(changes: Sequence[Change]) -> list[str]:
    """What grouping the changes by section (`by_section`) hides."""
    groups = [change for change in changes if change.merged]
    if not groups:
        return []
    count = sum(len(change.merged) for change in groups)  # by_section groups every change
    return [
        f"{count} changes are more than the {MAX_CHANGES} whose every combination the audit trains, so they are "
        f"grouped by section: "
        + "; ".join(f"{change.name} ({', '.join(change.merged)})" for change in groups)
        + ". A group's share is that of its changes together. For each change's own share, audit in steps "
        f"through an intermediate preset, at most {MAX_CHANGES} changes apart."
    ]


def small_split_warnings(summary: AuditSummary) -> list[str]:
    """Where the evidence is too thin for what the audit claims: a split so small that one
    sequence moves an accuracy by more than 0.01, or too few seeds."""
    warnings = []
    n_val = summary.split_sizes["val"]
    if n_val < SMALL_SPLIT:
        after = summary.variants[AFTER].stats["val_accuracy"]
        warnings.append(
            f"The validation split has only {n_val} sequences: one sequence moves validation accuracy by "
            f"{1 / n_val:.3f}, and the interval of {summary.after}'s validation accuracy is "
            f"{after.low:.3f}-{after.high:.3f}; effects smaller than that cannot be told from chance. A larger "
            f"validation split (more data, or a larger data.val_fraction) narrows them."
        )
    if len(summary.seeds) < 3:
        warnings.append(
            f"Only {len(summary.seeds)} seeds: their spread is barely estimated (Student's t with 1 degree of "
            f"freedom), so the intervals are wide. 3-5 seeds (--seeds 0-4) narrow them."
        )
    return warnings
