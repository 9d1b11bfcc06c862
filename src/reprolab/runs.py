"""Runs: train and evaluate one (preset, seed) on the verified dataset, or many in parallel."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from reprolab import data as datasets
from reprolab.config import Config
from reprolab.training import TrainResult, evaluate, train


@dataclass
class RunResult:
    """The outcome of one run, as plain values: final metrics, fit summary, per-epoch history."""

    preset: str
    seed: int
    metrics: dict[str, float]
    fit: dict
    history: list[dict[str, float]]
    dataset_digest: str


def run_one(config: Config, preset: str, seed: int, data: Optional[datasets.Dataset] = None,
            progress: bool = True) -> tuple[TrainResult, RunResult]:
    """Train `preset` with `seed` and evaluate it on every split (eval mode)."""
    data = data or datasets.load(config.data)
    trained = train(config.run_config(preset, seed), data, progress=progress)
    result = RunResult(preset=preset, seed=seed, metrics=evaluate(trained.model, data),
                       fit=trained.fit_summary(), history=trained.history, dataset_digest=data.digest)
    return trained, result


def _run_in_worker(job: tuple[Config, str, int]) -> RunResult:
    config, preset, seed = job
    return run_one(config, preset, seed, progress=False)[1]


def run_many(config: Config, presets: Sequence[str], seeds: Iterable[int],
             workers: Optional[int] = None) -> list[RunResult]:
    """Every (preset, seed) pair, spread over `workers` processes (default: one per core).

    Each run is single-threaded and seeded, so results do not depend on the worker count.
    """
    jobs = [(config, preset, seed) for preset in presets for seed in seeds]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        return [_run_in_worker(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_run_in_worker, jobs))
