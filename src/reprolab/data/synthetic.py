"""The seeded synthetic task (its definition is in `reprolab.data`'s docstring)."""

from __future__ import annotations

import numpy as np

from reprolab.config import GeneratorConfig


def generate_synthetic(spec: GeneratorConfig) -> dict[str, np.ndarray]:
    """Draw the synthetic task's splits (train, val, test, in that order) from `spec.seed`."""
    rng = np.random.default_rng(spec.seed)
    direction = rng.standard_normal(spec.n_features)
    direction /= np.linalg.norm(direction)
    weights = np.arange(spec.seq_len) / (spec.seq_len - 1)
    threshold = spec.margin * np.sqrt(np.sum(weights**2))  # sd(s): each x_t . u is N(0, 1)
    arrays: dict[str, np.ndarray] = {}
    for split, size in (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test)):
        kept_X, kept_s, count = [], [], 0
        while count < size:
            X = rng.standard_normal((2 * size, spec.seq_len, spec.n_features))
            score = (X @ direction) @ weights
            keep = np.abs(score) >= threshold
            kept_X.append(X[keep])
            kept_s.append(score[keep])
            count += int(keep.sum())
        X = np.concatenate(kept_X)[:size]
        clean = (np.concatenate(kept_s)[:size] > 0).astype(np.int64)
        flipped = np.zeros(size, dtype=bool)
        flipped[rng.choice(size, size=round(spec.label_noise * size), replace=False)] = True
        arrays[f"X_{split}"] = X.astype(np.float32)
        arrays[f"y_{split}"] = clean ^ flipped.astype(np.int64)
        arrays[f"flipped_{split}"] = flipped
    return arrays
