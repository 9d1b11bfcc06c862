"""Many jobs in a pool of local processes. A worker that dies (killed, out of memory) breaks
the pool: a new one reruns the jobs not finished, as Dask does, so a lost worker costs time.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from reprolab.entrypoint import one_line
from reprolab.jobs.job import Job, WorkerError, worker_context
from reprolab.jobs.worker import run_pickled, start_pool_worker

MAX_LOST_POOLS = 3  # losses of workers (or their data) a sweep outlives: a job that kills its worker each time stops it


def on_local_processes(jobs: Sequence[Job], order: list[int], workers: int, finish: Callable) -> None:
    """The jobs in a pool of local processes. A worker that dies (killed, out of memory) breaks
    the pool: a new one reruns the jobs not finished, as Dask does, so a lost worker costs time."""
    from concurrent.futures.process import BrokenProcessPool

    remaining = list(order)
    until_done(
        remaining,
        lambda: _one_pool(jobs, remaining, workers, finish),
        BrokenProcessPool,
        lambda count, cause: (
            f"compute: local worker processes died {count} times ({cause}); look for the out-of-memory killer "
            f"in the system log, or lower --workers"
        ),
        lambda left: f"a worker process died; rerunning the {left} runs not finished in new workers",
    )


def until_done(
    remaining: list[int],
    run_batch: Callable[[], None],
    lost: type[BaseException],
    too_many: Callable[[int, str], str],
    again: Callable[[int], str],
) -> None:
    """Call `run_batch` (it takes each finished job out of `remaining`) until no job is left. A
    batch that fails with `lost` (a worker, or its data, gone) is sent again with the jobs not
    finished, saying `again(jobs left)`; lost more than MAX_LOST_POOLS times, the sweep stops
    with WorkerError(`too_many(times, cause)`)."""
    losses = 0
    while remaining:
        try:
            run_batch()
        except lost as error:
            losses += 1
            if losses > MAX_LOST_POOLS:
                raise WorkerError(too_many(losses, one_line(error)[:120])) from error
            print(f"reprolab: {again(len(remaining))}", file=sys.stderr, flush=True)


def _one_pool(jobs: Sequence[Job], remaining: list[int], workers: int, finish: Callable) -> None:
    """Run the jobs of `remaining` in one pool, taking each out of it as it finishes."""
    with ProcessPoolExecutor(max_workers=workers, mp_context=worker_context(), initializer=start_pool_worker) as pool:
        futures = {pool.submit(run_pickled, jobs[index]): index for index in remaining}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    finish(futures[future], *pickle.loads(future.result()))
                    remaining.remove(futures[future])
        except BaseException:
            for future in pending:
                future.cancel()
            raise
