"""The audit's analysis: change derivation, ablation variants, intervals, needed/sufficient, verdict."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from conftest import CONF_DIR
from reprolab.audit import Change, ablation_variants, apply_changes, derive_changes, summarize
from reprolab.config import load_config
from reprolab.results import RunResult


@pytest.fixture(scope="module")
def presets():
    config = load_config([], CONF_DIR)
    return config.experiments["baseline"], config.experiments["regularized"]


def test_baseline_to_regularized_is_exactly_the_four_changes(presets):
    changes = {change.name: change.values for change in derive_changes(*presets)}
    assert changes == {
        "hidden size": {"model.hidden_size": (128, 32)},
        "dropout": {"model.dropout": (0.0, 0.3), "model.output_dropout": (0.0, 0.3)},
        "learning rate": {"train.lr": (0.01, 0.001)},
        "early stopping": {"train.early_stopping.enabled": (False, True)},
    }


def test_grouping_keeps_related_keys_together(presets):
    before = copy.deepcopy(presets[0])
    after = copy.deepcopy(presets[0])
    after.train.early_stopping.enabled = True
    after.train.early_stopping.patience = 5
    after.train.weight_decay = 0.01
    after.description = "ignored"
    changes = {change.name: sorted(change.values) for change in derive_changes(before, after)}
    assert changes == {
        "early stopping": ["train.early_stopping.enabled", "train.early_stopping.patience"],
        "train.weight_decay": ["train.weight_decay"],
    }


def test_identical_presets_have_no_changes(presets):
    assert derive_changes(presets[0], presets[0]) == []


def test_variants_apply_one_change_at_a_time(presets):
    before, after = presets
    variants = ablation_variants(before, after)
    assert len(variants) == 2 + 2 * 4
    added = variants["before + dropout"]
    assert (added.model.dropout, added.model.output_dropout, added.model.hidden_size) == (0.3, 0.3, 128)
    assert added.train == before.train
    removed = variants["after - early stopping"]
    assert not removed.train.early_stopping.enabled and removed.model == after.model
    # Applying every change to before gives after.
    rebuilt = apply_changes(before, derive_changes(before, after), "after")
    assert (rebuilt.model, rebuilt.train) == (after.model, after.train)


# -- analysis on made-up results: the arithmetic and the verdict's logic ---------------------


SIZES = {"train": 1000, "val": 400, "test": 400}


def _labels(sizes=SIZES) -> dict[str, np.ndarray]:
    return {split: np.arange(n) % 2 for split, n in sizes.items()}


def _predictions(y: np.ndarray, accuracy: float, seed: int) -> list[int]:
    """Predictions of `y` with exactly round(accuracy * n) right, which ones depending on the seed."""
    wrong = np.random.default_rng(seed).permutation(len(y))[: len(y) - round(accuracy * len(y))]
    predicted = y.copy()
    predicted[wrong] = 1 - predicted[wrong]
    return predicted.tolist()


def _result(label: str, seed: int, val: float, train: float, labels=None) -> RunResult:
    labels = labels or _labels()
    accuracies = {"train": train, "val": val, "test": val}
    predictions = {split: _predictions(y, accuracies[split], seed) for split, y in labels.items()}
    metrics = {
        f"{split}_accuracy": float(np.mean(np.array(predicted) == labels[split]))
        for split, predicted in predictions.items()
    }
    return RunResult(
        preset=label, seed=seed, metrics=metrics, fit={}, history=[], dataset_digest="d", predictions=predictions
    )


def _results(table: dict[str, tuple[float, float]], seeds=(0, 1, 2), labels=None) -> list[RunResult]:
    """Each label's (val, train) with a small seed-dependent wobble."""
    return [
        _result(label, seed, val + 0.005 * seed, train - 0.005 * seed, labels)
        for label, (val, train) in table.items()
        for seed in seeds
    ]


TARGET = load_config([], CONF_DIR).data.target  # validation >= 0.85, training < 0.92
TWO_CHANGES = [Change("dropout", {"model.dropout": (0.0, 0.3)}), Change("learning rate", {"train.lr": (0.01, 0.001)})]
CLEAR = {
    "before": (0.70, 1.00),
    "after": (0.90, 0.88),
    "before + dropout": (0.90, 0.88),
    "after - dropout": (0.75, 0.99),
    "before + learning rate": (0.72, 0.99),
    "after - learning rate": (0.90, 0.88),
}


def _summary(table, seeds=(0, 1, 2), sizes=SIZES, results=None):
    """The audit of made-up `results` (default: each label's (val, train) in `table`)."""
    labels = _labels(sizes)
    return summarize(
        results if results is not None else _results(table, seeds, labels),
        TWO_CHANGES,
        "baseline",
        "regularized",
        TARGET,
        0.95,
        {"before": "d", "after": "d"},
        {"before": labels, "after": labels},
    )


def test_needed_and_sufficient_follow_the_target_checks():
    summary = _summary(CLEAR)
    effects = {effect.change.name: effect for effect in summary.effects}
    assert (effects["dropout"].needed, effects["dropout"].sufficient) == (True, True)
    assert (effects["learning rate"].needed, effects["learning rate"].sufficient) == (False, False)
    alone = effects["dropout"].alone["val_accuracy"]
    assert alone.mean == pytest.approx(0.20) and alone.low > 0.1
    assert effects["dropout"].in_after["train_accuracy"].mean == pytest.approx(0.88 - 0.99)
    assert summary.variants["after"].holds and not summary.variants["before"].holds
    assert summary.verdict.startswith("regularized meets the target on 3/3 seeds (validation 0.905 [")
    for part in (
        "dropout closed most of the gap (+0.150 [",
        "without it 0/3 seeds meet the target",
        "learning rate is not needed (the target holds without it), and dropout alone is enough.",
    ):
        assert part in summary.verdict
    assert summary.warnings == []


def test_intervals_are_bootstrap_intervals_over_seeds_and_examples():
    summary = _summary(CLEAR)
    for check in summary.variants.values():
        for key in ("val_accuracy", "test_accuracy", "train_accuracy"):
            interval = check.stats[key]
            assert 0 <= interval.low <= interval.mean <= interval.high <= 1
    # With 400 validation sequences and p ~ 0.9, the sampling noise alone is +-1.96 * sqrt(0.09 / 400) ~ 0.03.
    val = summary.variants["after"].stats["val_accuracy"]
    assert 0.02 < (val.high - val.low) / 2 < 0.05
    # A configuration compared with itself has no effect, on every resample.
    same = _summary({**CLEAR, "after - learning rate": CLEAR["after"]})
    nothing = same.effects[1].in_after["val_accuracy"]
    assert (nothing.mean, nothing.low, nothing.high) == (0, 0, 0)


def test_a_tiny_split_gives_wide_intervals_inside_0_1_and_a_warning():
    tiny = {"train": 30, "val": 8, "test": 8}
    summary = _summary(
        {
            "before": (0.5, 1.0),
            "after": (1.0, 0.75),
            "before + dropout": (1.0, 0.75),
            "after - dropout": (0.625, 1.0),
            "before + learning rate": (0.5, 1.0),
            "after - learning rate": (1.0, 0.75),
        },
        sizes=tiny,
    )
    val = summary.variants["after"].stats["val_accuracy"]
    assert 0 <= val.low <= val.high <= 1
    for check in summary.variants.values():
        for interval in check.stats.values():
            assert -1 <= interval.low <= interval.high <= 1
    # Every seed is right on all 8, yet 8 examples cannot show an accuracy of 1 robustly.
    assert not summary.variants["after"].interval_clears
    assert any("only 8 sequences" in warning for warning in summary.warnings)
    assert "does not meet the target robustly" in summary.verdict
    assert "validation accuracy" in summary.verdict and "the interval's worst end" in summary.verdict


def test_a_target_that_holds_only_on_some_seeds_does_not_hold():
    results = _results(
        {
            "before": (0.70, 1.00),
            "after": (0.90, 0.88),
            "before + dropout": (0.70, 1.0),
            "after - dropout": (0.90, 0.88),
            "before + learning rate": (0.7, 1.0),
            "after - learning rate": (0.90, 0.88),
        }
    )
    results[3] = _result("after", 0, 0.80, 0.88)  # one seed of after misses the floor
    summary = _summary({}, results=results)
    after = summary.variants["after"]
    assert after.seeds_met == 2 and not after.holds
    assert all(effect.needed is None for effect in summary.effects)
    assert summary.verdict.startswith("regularized does not meet the target robustly (2/3 seeds")
    assert "validation accuracy 0.800 < 0.85 (seed 0)" in summary.verdict  # the bound that failed
