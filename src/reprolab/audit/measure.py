"""Measuring a configuration over seeds: each metric's mean with a bootstrap interval over
seeds and sequences, kept as per-seed values and draws so that differences pair by seed.
"""

from __future__ import annotations

import functools
import operator
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reprolab.results import RunResult

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


def level_bounds(key: str) -> tuple[float, float]:
    return DIFFERENCE if key == "train_val_gap" else LEVEL
