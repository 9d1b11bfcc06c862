"""A configuration judged against the target across seeds: met on every seed, and the
intervals clear the bounds; what `reprolab compare` and the pipeline's report show too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from reprolab.audit.measure import Bootstrap, Interval, Labels, Pooled, level_bounds
from reprolab.config import TargetConfig
from reprolab.metrics import has_target, missed_bounds, target_keys, target_met
from reprolab.results import RunResult

Verdict = str  # "yes", "no", "cannot tell" or "n/a"
NEGATED = {"yes": "no", "no": "yes", "cannot tell": "cannot tell", "n/a": "n/a"}


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
    targeted: bool = True  # False when no target is set: nothing holds or fails

    @property
    def every_seed(self) -> bool:
        return self.seeds_met == len(self.seeds)

    @property
    def holds(self) -> Optional[bool]:
        """The target holds robustly: on every seed, and the intervals clear the thresholds;
        None when no target is set."""
        return (self.every_seed and self.interval_clears) if self.targeted else None

    def judged(self) -> Verdict:
        """Whether this configuration meets the target, as far as its intervals can tell; "n/a"
        when no target is set."""
        if not self.targeted:
            return "n/a"
        return "yes" if self.holds else ("no" if self.clearly_fails else "cannot tell")


def _missed(
    runs: Sequence[RunResult | Pooled], stats: dict[str, Interval], target: TargetConfig
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
    label: str, runs: Sequence[RunResult | Pooled], stats: dict[str, Interval], target: TargetConfig
) -> VariantCheck:
    """Seeds meeting the target, and the intervals against it."""
    missed, clears, fails = _missed(runs, stats, target)
    met = sum(bool(target_met(r.metrics, target)) for r in runs)
    return VariantCheck(label, [r.seed for r in runs], stats, met, clears, fails, missed, has_target(target))


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
        stats = {key: bootstrap.interval(m, confidence, level_bounds(key)) for key, m in measures.items()}
        checks[preset] = check_variant(preset, runs, stats, target)
    return checks
