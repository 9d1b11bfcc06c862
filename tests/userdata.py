"""Datasets shaped like the public time-series classification archives (UCR/UEA), built by the
tests themselves: univariate or multivariate, 2 to 9 classes, tens to hundreds of sequences,
optionally of variable length. Each class is a noisy sinusoid of its own frequency and phase,
so a recurrent model can learn it in a few epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np


def series(
    n: int = 120,
    classes: int = 2,
    channels: int = 1,
    steps: int = 24,
    seed: int = 0,
    variable: bool = False,
) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """X [n, steps, channels] float64, labels 0..classes-1 (each class present), and the true
    lengths when `variable` (the steps past a sequence's length are zero, as padding tools leave them)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    t = np.arange(steps) / steps
    frequency = 1.0 + y[:, None, None]
    phase = (y[:, None, None] * 0.7) + 0.3 * np.arange(channels)[None, None, :]
    X = np.sin(2 * np.pi * frequency * t[None, :, None] + phase) + 0.3 * rng.standard_normal((n, steps, channels))
    lengths = None
    if variable:
        lengths = rng.integers(steps // 2, steps + 1, size=n)
        X[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
    return X, y.astype(np.int64), lengths


def pad_front(X: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The same sequences with their padding moved before the real steps."""
    out = np.zeros_like(X)
    steps = X.shape[1]
    for row, length in enumerate(lengths):
        out[row, steps - length :] = X[row, :length]
    return out


def save(path: Path, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path
