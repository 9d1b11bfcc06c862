"""An audit by repeated stratified k-fold (`audit.resampling: kfold`): every job once per fold of
its side's training and validation splits pooled, each a run of its own (`data.fold` in its
configuration, so that its dataset, digest and run key are its own and it reproduces like any
other run), and each configuration's fold runs pooled per seed for the measurement
(`measure.pool_folds`). The test split is held out: no fold trains or validates on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

from reprolab import data as datasets
from reprolab.audit.design import side_of
from reprolab.audit.measure import Labels, Pooled, pool_folds
from reprolab.config import AuditConfig, FoldConfig, Resampling
from reprolab.data.folds import fold_indices, pool_labels
from reprolab.jobs.job import Job
from reprolab.results import RunResult


def resampling(audit: AuditConfig, split_seed: int) -> dict[str, Any]:
    """How the audit measured its configurations, as its summary.json says it."""
    if audit.resampling is Resampling.holdout:
        return {"method": "holdout"}
    return {"method": "kfold", "folds": audit.folds, "repeats": audit.repeats, "split_seed": split_seed}


def fold_jobs(jobs: Sequence[Job], folds: int, repeats: int) -> list[Job]:
    """Each job once per fold, on that fold of its dataset (built once per dataset and fold)."""
    built: dict[tuple[str, int], datasets.Dataset] = {}
    out = []
    for job in jobs:
        for index in range(folds * repeats):
            data = dataclasses.replace(job.config.data, fold=FoldConfig(folds, repeats, index))
            key = (job.data.digest, index)
            if key not in built:
                built[key] = datasets.build(data)
            config = dataclasses.replace(job.config, data=data)
            out.append(Job(config, job.preset, job.seed, built[key], job.code))
    return out


def pool(data: datasets.Dataset, folds: int, repeats: int, seed: int) -> tuple[Labels, list]:
    """A side's labels as the pooled measurement sees them (the pool as "train" and "val", and
    the test split), and every fold's (training, validation) positions in the pool."""
    arrays = {f"y_{split}": values for split, values in data.labels().items()}
    y = pool_labels(arrays)
    return {"train": y, "val": y, "test": data.splits["test"].y}, fold_indices(y, folds, repeats, seed)


def pooled(
    runs: Sequence[tuple[RunResult, Optional[FoldConfig]]], sides: dict[str, tuple[datasets.Dataset, int]]
) -> tuple[list[Pooled], dict[str, Labels]]:
    """Every configuration's fold runs pooled per seed, side by side (each side's dataset and the
    split seed that drew its folds), and each side's labels."""
    first = next(fold for _, fold in runs if fold is not None)
    measured: list[Pooled] = []
    labels = {}
    for side, (data, seed) in sides.items():
        labels[side], indices = pool(data, first.folds, first.repeats, seed)
        own = [(result, f.index) for result, f in runs if f is not None and side_of(result.preset) == side]
        measured += pool_folds(own, indices, labels[side])
    return measured, labels
