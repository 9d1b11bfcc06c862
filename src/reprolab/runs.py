"""Runs: train and evaluate one (preset, seed) on the verified dataset, or many in parallel."""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

import torch

from reprolab import data as datasets
from reprolab.config import Config
from reprolab.training import TrainResult, confusion_matrix, evaluate, predict, train


@dataclass
class RunResult:
    """The outcome of one run, as plain values: final metrics, fit summary, per-epoch history."""

    preset: str
    seed: int
    metrics: dict[str, float]
    fit: dict
    history: list[dict[str, float]]
    dataset_digest: str
    # Test-split counts, rows = actual class, columns = predicted class.
    confusion: list[list[int]] = field(default_factory=list)


@dataclass
class Job:
    """One run to do: `preset` of `config` (whose data it trains on) with `seed`."""

    config: Config
    preset: str
    seed: int


def run_one(config: Config, preset: str, seed: int, data: Optional[datasets.Dataset] = None,
            progress: bool = True) -> tuple[TrainResult, RunResult]:
    """Train `preset` with `seed` and evaluate it on every split (eval mode)."""
    data = data or datasets.load(config.data)
    trained = train(config.run_config(preset, seed), data, progress=progress)
    test = data.splits["test"]
    confusion = confusion_matrix(torch.from_numpy(test.y), predict(trained.model, test.X).argmax(dim=1),
                                 data.num_classes)
    result = RunResult(preset=preset, seed=seed, metrics=evaluate(trained.model, data),
                       fit=trained.fit_summary(), history=trained.history, dataset_digest=data.digest,
                       confusion=confusion)
    return trained, result


def _run_job(job: Job) -> tuple[TrainResult, RunResult]:
    return run_one(job.config, job.preset, job.seed, progress=False)


OnResult = Callable[[Job, TrainResult, RunResult], None]


def run_jobs(jobs: Sequence[Job], workers: Optional[int] = None,
             on_result: Optional[OnResult] = None) -> list[RunResult]:
    """Every job, spread over `workers` processes (default: one per core), results in job order.

    Each run is single-threaded and seeded, so results do not depend on the worker count.
    `on_result` is called in this process as each run finishes (e.g. to record it), so a
    failure later keeps what finished before; the first error cancels the jobs not started.
    """
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    results: dict[int, RunResult] = {}

    def finish(index: int, trained: TrainResult, result: RunResult) -> None:
        if on_result is not None:
            on_result(jobs[index], trained, result)
        results[index] = result

    if workers == 1:
        for index, job in enumerate(jobs):
            finish(index, *_run_job(job))
        return [results[index] for index in range(len(jobs))]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run_job, job): index for index, job in enumerate(jobs)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    finish(futures[future], *future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            raise
    return [results[index] for index in range(len(jobs))]


def run_many(config: Config, presets: Sequence[str], seeds: Iterable[int],
             workers: Optional[int] = None) -> list[RunResult]:
    """Every (preset, seed) pair of one config, in parallel (see `run_jobs`)."""
    return run_jobs([Job(config, preset, seed) for preset in presets for seed in seeds], workers)
