"""Measuring a configuration over seeds: each metric's mean with a bootstrap interval over
seeds and sequences, kept as per-seed values and draws so that differences pair by seed. With
k-fold, each seed's fold runs are pooled first (`pool_folds`): one measurement per seed, over
every sequence of the training and validation splits.
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


@dataclass
class Pooled:
    """One configuration's runs over the folds of one seed, as one measurement of it: per
    sequence, the share of its runs that were right (`pool_folds`), and the accuracies they give."""

    preset: str
    seed: int
    correct: dict[str, np.ndarray]  # split -> per sequence, the share of right answers
    metrics: dict[str, float]


def right(run: RunResult | Pooled, split: str, labels: Labels) -> np.ndarray:
    """Per sequence of `split`, whether the run was right (a pooled one: its share of right)."""
    if isinstance(run, Pooled):
        return run.correct[split]
    return np.asarray(run.predictions[split]) == labels[split]


def pool_folds(
    runs: Sequence[tuple[RunResult, int]], indices: Sequence[tuple[np.ndarray, np.ndarray]], labels: Labels
) -> list[Pooled]:
    """Each (configuration, seed)'s fold runs (each with its fold's index into `indices`, the
    (training, validation) positions of every fold in the pool) as one `Pooled`: every pooled
    sequence's share of right answers out of fold (validation: each repeat's one fold that held it
    out), and in the folds that trained on it (training); on test, over every fold's model.
    `labels` holds the pool's classes (as "train" and "val") and the test split's."""
    groups: dict[tuple[str, int], list[tuple[RunResult, int]]] = {}
    for run, index in runs:
        groups.setdefault((run.preset, run.seed), []).append((run, index))
    pooled = []
    for (preset, seed), group in groups.items():
        hits = {split: np.zeros(len(labels[split])) for split in SPLITS}
        seen = {split: np.zeros(len(labels[split])) for split in SPLITS}
        for run, index in group:
            for split, where in (("train", indices[index][0]), ("val", indices[index][1]), ("test", slice(None))):
                hits[split][where] += np.asarray(run.predictions[split]) == labels[split][where]
                seen[split][where] += 1
        if any((seen[split] == 0).any() for split in SPLITS):
            raise ValueError(f"{preset} seed {seed}: its {len(group)} fold runs do not cover every pooled sequence")
        correct = {split: hits[split] / seen[split] for split in SPLITS}
        metrics: dict[str, float] = {}
        for split, share in correct.items():
            classes = [share[labels[split] == c].mean() for c in np.unique(labels[split])]
            metrics |= {f"{split}_accuracy": float(share.mean()), f"{split}_balanced_accuracy": float(np.mean(classes))}
        pooled.append(Pooled(preset, seed, correct, metrics))
    return pooled


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

    def measure(self, runs: Sequence[RunResult | Pooled], labels: Labels, label: str) -> Measures:
        """Every metric of one configuration's runs (ordered by seed; with k-fold, each seed's
        folds `Pooled`): each split's accuracy and balanced accuracy (the mean of the classes'
        recalls), and the train-val gap."""
        coin = np.random.default_rng([BOOTSTRAP_SEED, zlib.crc32(label.encode())])
        values = {}
        for split in SPLITS:
            correct = np.array([right(run, split, labels) for run in runs], dtype=float)
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
