"""Sweeps: many independent runs (configurations x seeds), spread over processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from reprolab.config import Config
from reprolab.data import Dataset
from reprolab.results import RunResult

if TYPE_CHECKING:
    from reprolab.training import TrainResult


@dataclass
class Job:
    """One run to do: `preset` of `config` with `seed`, on `data`."""

    config: Config
    preset: str
    seed: int
    data: Dataset


def _run_job(job: Job) -> tuple[TrainResult, RunResult]:
    from reprolab.training import run_one

    return run_one(job.config, job.preset, job.seed, job.data, progress=False)


OnResult = Callable[[Job, "TrainResult", RunResult], None]


def run_jobs(
    jobs: Sequence[Job], workers: Optional[int] = None, on_result: Optional[OnResult] = None
) -> list[RunResult]:
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
