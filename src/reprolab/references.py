"""Reference classifiers beside the RNNs: one nearest neighbour (1-NN) over the training
sequences, by Euclidean distance and by dynamic time warping (DTW), the usual yardsticks for
time-series classification. They tell the user how far the models are from what simple methods
get on the same splits; they are never trained with seeds, never audited as a change.

The distances are computed here, with NumPy, from element-wise operations only (no BLAS, no
reordered sums), so that every x86-64 CPU finds the same neighbours: scikit-learn's brute-force
Euclidean distances go through a matrix product whose rounding depends on the CPU's kernels.
Ties go to the first training sequence. Padding (NaN steps) is honoured: DTW aligns each pair
over their real steps; Euclidean distance needs sequences of one length and is left out otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from reprolab.data import Dataset
from reprolab.metrics import class_metrics

CHUNK_CELLS = 4_000_000  # pairs x steps x steps held at once by DTW (about 32 MB of float64)


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of each step of each `a` [N, T, F] to each step of each `b`
    [M, S, F]: [N, M, T, S], feature by feature (element-wise, the same bits on any CPU)."""
    total = np.zeros((a.shape[0], b.shape[0], a.shape[1], b.shape[1]))
    for f in range(a.shape[2]):
        diff = a[:, None, :, None, f] - b[None, :, None, :, f]
        total += diff * diff
    return total


def dtw(a: np.ndarray, b: np.ndarray, a_len: np.ndarray, b_len: np.ndarray) -> np.ndarray:
    """DTW distance [N, M] of each `a` to each `b` over their first `a_len` / `b_len` steps: the
    smallest sum of squared step distances along a warping path (no window), square-rooted."""
    cost = squared_distances(np.nan_to_num(a), np.nan_to_num(b))
    n, m, t, s = cost.shape
    total = np.full((n, m, t + 1, s + 1), np.inf)
    total[:, :, 0, 0] = 0.0
    for i in range(1, t + 1):
        for j in range(1, s + 1):
            best = np.minimum(np.minimum(total[:, :, i - 1, j], total[:, :, i, j - 1]), total[:, :, i - 1, j - 1])
            total[:, :, i, j] = cost[:, :, i - 1, j - 1] + best
    # A cell depends only on the cells before it, so a pair's distance over its real steps is the
    # cell at its lengths, whatever the padding beyond them held.
    ends = total[np.arange(n)[:, None], np.arange(m)[None, :], a_len[:, None], b_len[None, :]]
    return np.sqrt(ends)


def euclidean(a: np.ndarray, b: np.ndarray, a_len: np.ndarray, b_len: np.ndarray) -> np.ndarray:
    """Euclidean distance [N, M] of sequences of one length, step by step."""
    total = np.zeros((a.shape[0], b.shape[0]))
    for step in range(a.shape[1]):
        for f in range(a.shape[2]):
            diff = a[:, None, step, f] - b[None, :, step, f]
            total += diff * diff
    return np.sqrt(total)


DISTANCES: dict[str, Callable[..., np.ndarray]] = {"euclidean": euclidean, "dtw": dtw}


def nearest(
    distance: Callable[..., np.ndarray], train: np.ndarray, train_len: np.ndarray, X: np.ndarray, X_len: np.ndarray
) -> np.ndarray:
    """For each sequence of `X`, the index of its nearest training sequence (the first of ties)."""
    steps = train.shape[1] * X.shape[1]
    rows = max(1, CHUNK_CELLS // max(1, len(train) * steps))
    found = [
        np.argmin(distance(X[i : i + rows], train, X_len[i : i + rows], train_len), axis=1)
        for i in range(0, len(X), rows)
    ]
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def label(name: str) -> str:
    return f"1-NN {'DTW' if name == 'dtw' else 'Euclidean'}"


def usable(name: str, data: Dataset) -> bool:
    """Euclidean distance needs every sequence at one length."""
    if name != "euclidean":
        return True
    return all(bool((split.lengths == split.X.shape[1]).all()) for split in data.splits.values())


def reference_metrics(name: str, data: Dataset) -> dict[str, float]:
    """A 1-NN classifier's metrics on the validation and test splits (its training accuracy is
    1 by construction and says nothing): accuracy, balanced accuracy, macro-F1, recalls."""
    train = data.splits["train"]
    metrics: dict[str, float] = {}
    for split_name in ("val", "test"):
        split = data.splits[split_name]
        index = nearest(DISTANCES[name], train.X, train.lengths, split.X, split.lengths)
        predicted = train.y[index]
        metrics[f"{split_name}_accuracy"] = float((predicted == split.y).mean()) if len(split.y) else 0.0
        measured = class_metrics(split.y, predicted, data.num_classes)
        metrics |= {f"{split_name}_{key}": value for key, value in measured.items()}
    return metrics


def references(names: Sequence[str], data: Dataset) -> dict[str, dict[str, float]]:
    """Each named reference's metrics, keyed by its label ("1-NN DTW"); those the data cannot
    take (Euclidean on sequences of several lengths) are left out."""
    return {label(name): reference_metrics(name, data) for name in names if usable(name, data)}
