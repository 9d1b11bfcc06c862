"""Many jobs at once (the audit, `reprolab compare`), the longest first: on a Dask cluster
when given a scheduler's address, else over local processes; results in job order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Optional

from reprolab.jobs.cluster import dask_as_completed, dask_client, on_dask
from reprolab.jobs.job import Job, expected_cost, run_job
from reprolab.jobs.local import on_local_processes
from reprolab.jobs.recorded import stop_running
from reprolab.results import RunResult
from reprolab.training import TrainResult

OnResult = Callable[[Job, "TrainResult", RunResult], None]


def run_jobs(
    jobs: Sequence[Job],
    workers: Optional[int] = None,
    on_result: Optional[OnResult] = None,
    scheduler: Optional[str] = None,
) -> list[RunResult]:
    """Every job, results in job order: on the Dask cluster at `scheduler`, else spread over
    `workers` local processes (default: one per core). The longest jobs start first.

    `on_result` is called in this process as each run finishes (e.g. to record it), so a
    failure later keeps what finished before; the first error cancels the jobs not started.
    """
    results: dict[int, RunResult] = {}

    def finish(index: int, trained: TrainResult, result: RunResult) -> None:
        if on_result is not None:
            on_result(jobs[index], trained, result)
        results[index] = result

    order = sorted(range(len(jobs)), key=lambda index: -expected_cost(jobs[index]))
    if scheduler:
        on_dask(jobs, order, scheduler, finish)
    elif max(1, min(workers or os.cpu_count() or 1, len(jobs))) == 1:
        for index in order:
            finish(index, *run_job(jobs[index]))
    else:
        on_local_processes(jobs, order, min(workers or os.cpu_count() or 1, len(jobs)), finish)
    return [results[index] for index in range(len(jobs))]


def call_each(
    function: Callable[..., Any],
    calls: Sequence[tuple],
    finish: Callable[[int, Any], None],
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
) -> None:
    """`function(*call)` for each call, on the Dask cluster at `scheduler` or in `workers` threads
    here (for functions whose work runs in processes of their own); `finish(index, value)` in
    this thread as each one ends."""
    if scheduler:
        with dask_client(scheduler) as client:
            batch = uuid.uuid4().hex[:8]
            futures = {
                client.submit(function, *call, key=f"reprolab-{batch}-{index}", pure=False): index
                for index, call in enumerate(calls)
            }
            for index, value in dask_as_completed(client, futures, scheduler):
                finish(index, value)
        return
    from concurrent.futures import ThreadPoolExecutor, as_completed

    with ThreadPoolExecutor(max_workers=max(1, min(workers or os.cpu_count() or 1, len(calls)))) as pool:
        pending = {pool.submit(function, *call): index for index, call in enumerate(calls)}
        try:
            for future in as_completed(pending):
                finish(pending[future], future.result())
        except BaseException:
            for future in pending:
                future.cancel()
            stop_running()  # the calls that run processes of their own end now, not when those finish
            raise
