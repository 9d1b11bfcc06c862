"""Repeated stratified k-fold over the training and validation splits pooled (scikit-learn's
`RepeatedStratifiedKFold`, seeded by `data.split_seed`): fold `index` of `folds` x `repeats` is
a dataset whose training split is the pool without the fold and whose validation split is the
fold; the test split is kept as it is, so that it is never used to pick a change. The pool holds
the training split first, then the validation split, in their own order.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from reprolab.config import FoldConfig
from reprolab.data.dataset import DataError

POOLED = ("train", "val")  # the splits k-fold resamples; test is held out


def pool_labels(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """The pool's classes: the training split's, then the validation split's."""
    return np.concatenate([arrays[f"y_{split}"] for split in POOLED])


def fold_indices(y: np.ndarray, folds: int, repeats: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training, validation) positions in the pool of every fold, repeat by repeat; a class with
    fewer sequences than folds is refused in one line."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    counts = Counter(int(label) for label in y)
    label, fewest = min(counts.items(), key=lambda item: item[1])
    if fewest < folds:
        raise DataError(
            f"audit.folds={folds}: class {label} has {fewest} sequences in the training and validation splits "
            f"together, fewer than the folds, so a fold could not hold one of each class; set audit.folds to at "
            f"most {fewest}"
        )
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def fold_arrays(arrays: dict[str, np.ndarray], fold: FoldConfig, seed: int) -> dict[str, np.ndarray]:
    """The arrays of one fold: training and validation taken from the pool, the rest as given."""
    train, val = fold_indices(pool_labels(arrays), fold.folds, fold.repeats, seed)[fold.index]
    out = dict(arrays)
    for kind in ("X", "y", "flipped"):
        if all(f"{kind}_{split}" in arrays for split in POOLED):
            pool = np.concatenate([arrays[f"{kind}_{split}"] for split in POOLED])
            out[f"{kind}_train"], out[f"{kind}_val"] = pool[train], pool[val]
    return out
