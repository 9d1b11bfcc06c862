"""Audit groundwork: change derivation, ablation variants, intervals."""

from __future__ import annotations

import math

import pytest

from reprolab.audit import ablation_variants, apply_changes, derive_changes, mean_interval
from reprolab.config import ExperimentConfig, load_config

from conftest import CONF_DIR


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


def test_grouping_keeps_related_keys_together():
    before = ExperimentConfig()
    after = ExperimentConfig()
    after.train.early_stopping.enabled = True
    after.train.early_stopping.patience = 5
    after.train.weight_decay = 0.01
    after.description = "ignored"
    changes = {change.name: sorted(change.values) for change in derive_changes(before, after)}
    assert changes == {"early stopping": ["train.early_stopping.enabled", "train.early_stopping.patience"],
                       "train.weight_decay": ["train.weight_decay"]}


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
