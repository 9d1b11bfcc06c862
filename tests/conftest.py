"""Shared fixtures: the repository's conf/ and a small, fast configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprolab.config import Config, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"
PRESETS = ("baseline", "regularized", "lstm", "gru")


def quick_overrides(tmp_path: Path, epochs: int = 2) -> list[str]:
    """Overrides for the small built-in dataset and a couple of epochs per preset."""
    overrides = ["data=synthetic_small", f"data.prepared_path={tmp_path / 'small.npz'}"]
    overrides += [f"experiments.{name}.train.max_epochs={epochs}" for name in PRESETS]
    return overrides


@pytest.fixture
def quick_config(tmp_path: Path) -> Config:
    return load_config(quick_overrides(tmp_path), CONF_DIR)
