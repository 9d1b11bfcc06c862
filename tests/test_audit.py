"""The audit's analysis: change derivation, ablation variants, intervals, needed/sufficient, verdict."""

from __future__ import annotations

import copy
import math

import pytest

from conftest import CONF_DIR
from reprolab.audit import Change, ablation_variants, apply_changes, derive_changes, mean_interval, summarize
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


def test_mean_interval_matches_the_t_distribution():
    mean, low, high = mean_interval([0.80, 0.82, 0.84, 0.86, 0.88])
    assert mean == pytest.approx(0.84)
    # t(0.975, 4) = 2.7764; sd = 0.0316228; half width = 2.7764 * 0.0316228 / sqrt(5)
    assert high - mean == pytest.approx(2.7764 * 0.0316228 / math.sqrt(5), rel=1e-4)
    assert mean - low == pytest.approx(high - mean)
    assert math.isnan(mean_interval([0.5])[1])


# -- analysis on made-up results: the arithmetic and the verdict's logic ---------------------


def _result(label: str, seed: int, val: float, train: float) -> RunResult:
    return RunResult(
        preset=label,
        seed=seed,
        metrics={"val_accuracy": val, "train_accuracy": train, "test_accuracy": val},
        fit={},
        history=[],
        dataset_digest="d",
    )


def _results(table: dict[str, tuple[float, float]], seeds=(0, 1, 2)) -> list[RunResult]:
    """Each label's (val, train) with a small seed-dependent wobble."""
    return [
        _result(label, seed, val + 0.002 * seed, train - 0.002 * seed)
        for label, (val, train) in table.items()
        for seed in seeds
    ]


TARGET = load_config([], CONF_DIR).data.target  # validation >= 0.85, training < 0.92
TWO_CHANGES = [Change("dropout", {"model.dropout": (0.0, 0.3)}), Change("learning rate", {"train.lr": (0.01, 0.001)})]


def _summary(table):
    return summarize(
        _results(table), TWO_CHANGES, "baseline", "regularized", TARGET, 0.95, {"before": "d", "after": "d"}
    )


def test_needed_and_sufficient_follow_the_target_checks():
    summary = _summary(
        {
            "before": (0.70, 1.00),
            "after": (0.88, 0.90),
            "before + dropout": (0.87, 0.91),
            "after - dropout": (0.75, 0.99),
            "before + learning rate": (0.72, 0.99),
            "after - learning rate": (0.87, 0.90),
        }
    )
    effects = {effect.change.name: effect for effect in summary.effects}
    assert (effects["dropout"].needed, effects["dropout"].sufficient) == (True, True)
    assert (effects["learning rate"].needed, effects["learning rate"].sufficient) == (False, False)
    # Paired by seed: the wobble cancels, so the interval collapses onto the difference.
    alone = effects["dropout"].alone["val_accuracy"]
    assert alone.mean == pytest.approx(0.17) and alone.low == pytest.approx(0.17)
    assert effects["dropout"].in_after["train_accuracy"].mean == pytest.approx(0.90 - 0.99)
    assert summary.variants["after"].holds and not summary.variants["before"].holds
    assert summary.verdict == (
        "regularized meets the target on 3/3 seeds (validation 0.882 [0.877, 0.887] vs 0.702 [0.697, 0.707] for "
        "baseline); dropout closed most of the gap (+0.130 [+0.130, +0.130] validation accuracy; without it 0/3 "
        "seeds meet the target); learning rate is not needed (the target holds without it), and dropout alone "
        "is enough."
    )


def test_a_target_that_holds_only_on_some_seeds_does_not_hold():
    results = _results(
        {
            "before": (0.70, 1.00),
            "after": (0.88, 0.90),
            "before + dropout": (0.70, 1.0),
            "after - dropout": (0.88, 0.90),
            "before + learning rate": (0.7, 1.0),
            "after - learning rate": (0.88, 0.90),
        }
    )
    results[3] = _result("after", 0, 0.80, 0.90)  # one seed of after misses the floor
    summary = summarize(results, TWO_CHANGES, "baseline", "regularized", TARGET, 0.95, {"before": "d", "after": "d"})
    after = summary.variants["after"]
    assert after.seeds_met == 2 and not after.holds
    assert all(effect.needed is None for effect in summary.effects)
    assert summary.verdict.startswith("regularized does not meet the target robustly (2/3 seeds")
