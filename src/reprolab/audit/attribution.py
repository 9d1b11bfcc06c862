"""What each change does: alone, within after, and its Shapley share of the before -> after
difference (the shares add up to it), the pairwise interactions, and the greedy path.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

from reprolab.audit.checks import VariantCheck, Verdict
from reprolab.audit.design import AFTER, BEFORE, Change
from reprolab.audit.measure import DIFFERENCE, Interval, Measure, combine
from reprolab.config import TargetConfig
from reprolab.metrics import target_keys


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
class Lead:
    """How far the largest share (by size) stands above the next: the interval of |largest| -
    |next| (each share's sign taken from its mean, so paired by seed and resample like any other
    difference). Only where it excludes 0 can one change be named as the largest."""

    largest: str
    next: str
    size_difference: Interval

    @property
    def clear(self) -> bool:
        return self.size_difference.low > 0


@dataclass
class Attribution:
    """A metric's before -> after difference split into the changes' Shapley values, which add
    up to it exactly, with the pairwise interaction indices."""

    total: Interval
    shares: dict[str, Interval]
    interactions: dict[tuple[str, str], Interval]
    sum_error: float  # |sum of shares - total|, over the means and every resample
    lead: Optional[Lead] = None  # None with a single change


@dataclass
class PathStep:
    """One step of the greedy path from before to after: the change added and where it leads."""

    change: str
    label: str
    stats: dict[str, Interval]
    holds: Optional[bool]  # None when no target is set


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


def attribution_of(key, measures, changes, named, interval, confidence) -> Attribution:
    names = [change.name for change in changes]
    total = measures[AFTER][key] - measures[BEFORE][key]

    def measure_of(terms: Sequence[tuple[float, frozenset[str]]]) -> Measure:
        return combine([(weight, measures[named[subset]]) for weight, subset in terms])[key]

    shares = {name: measure_of(shapley_terms(names, name)) for name in names}
    summed = functools.reduce(operator.add, shares.values())
    error = float(max(np.abs(summed.per_seed - total.per_seed).max(), np.abs(summed.draws - total.draws).max()))
    pairs = list(itertools.combinations(names, 2))
    lead = None
    if len(names) > 1:
        largest, runner_up = sorted(names, key=lambda name: abs(shares[name].mean), reverse=True)[:2]

        def size(name: str) -> Measure:
            return shares[name] * (1.0 if shares[name].mean >= 0 else -1.0)

        lead = Lead(largest, runner_up, interval(size(largest) - size(runner_up), confidence, DIFFERENCE))
    return Attribution(
        total=interval(total, confidence, DIFFERENCE),
        shares={name: interval(share, confidence, DIFFERENCE) for name, share in shares.items()},
        interactions={
            pair: interval(measure_of(interaction_terms(names, pair)), confidence, DIFFERENCE) for pair in pairs
        },
        sum_error=error,
        lead=lead,
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
        path.append(PathStep(best, named[chosen], check.stats, check.holds))
    return path
