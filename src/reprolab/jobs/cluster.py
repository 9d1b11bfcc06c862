"""Many jobs on a Dask cluster, given its scheduler's address. Dask reruns elsewhere the jobs
of a worker that dies, so a lost worker costs time, not results.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError
from typing import Any

from reprolab.entrypoint import UserError, one_line
from reprolab.jobs.job import Job, WorkerError
from reprolab.jobs.local import until_done
from reprolab.jobs.worker import run_parts, worker_training_code

LOST_WORKER_WAIT_S = 1.0


class _LostData(WorkerError):
    """A job the scheduler cancelled: the data it needed was lost with a worker (see on_dask)."""


def on_dask(jobs: Sequence[Job], order: list[int], address: str, finish: Callable) -> None:
    """The jobs on a Dask cluster. Dask reruns a lost worker's jobs, but not the data scattered
    to it: its memory manager keeps one copy of scattered data, and when the worker holding it
    dies, every job waiting on it is cancelled ("already forgotten"). The jobs not finished are
    then sent again with their data, so a lost worker costs time here too."""
    with dask_client(address) as client:
        remaining = list(order)
        until_done(
            remaining,
            lambda: _dask_batch(client, jobs, remaining, address, finish),
            _LostData,
            lambda count, cause: (
                f"compute: the Dask cluster at {address} lost its workers' data {count} times ({cause}); look at "
                f"the workers' logs, or run locally without --scheduler"
            ),
            lambda left: f"the Dask cluster lost a dataset with a worker; sending the {left} runs not finished again",
        )


def _dask_batch(client: Any, jobs: Sequence[Job], remaining: list[int], address: str, finish: Callable) -> None:
    """Submit the jobs of `remaining` (each dataset is sent once), highest cost first, taking each
    out of it as it finishes."""
    shared: dict[int, Any] = {}
    for index in remaining:
        data = jobs[index].data
        if id(data) not in shared:
            # On every worker: a dataset held by one would draw every job to it (locality). A
            # worker that died since the scheduler last listed it closes the connection: the
            # data is lost with it as surely as after the jobs were sent, and sent again alike.
            try:
                shared[id(data)] = client.scatter(data, hash=False, broadcast=True)
            except OSError as error:  # distributed's CommClosedError among them
                time.sleep(LOST_WORKER_WAIT_S)  # time for the scheduler to drop the dead worker
                raise _LostData(
                    f"compute: sending a dataset to the Dask cluster at {address} failed ({one_line(error)[:200]})"
                ) from error
    batch = uuid.uuid4().hex[:8]
    driver = worker_training_code()  # this process's
    futures = {
        client.submit(
            run_parts,
            jobs[index].config,
            jobs[index].preset,
            jobs[index].seed,
            shared[id(jobs[index].data)],
            jobs[index].code,
            driver,
            key=f"reprolab-{batch}-{index}",
            priority=rank,
            pure=False,
        ): index
        for rank, index in enumerate(reversed(remaining))  # Dask runs higher priorities first
    }
    for index, (trained, result) in dask_as_completed(client, futures, address):
        finish(index, trained, result)
        remaining.remove(index)


def dask_client(address: str):
    """A client of the scheduler at `address`, or one line saying why there is none."""
    try:
        from distributed import Client
    except ImportError:
        raise WorkerError("compute: Dask is not installed here; pip install 'dask[distributed]'") from None
    try:
        return Client(address, timeout=10, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as error:
        raise WorkerError(
            f"compute: cannot reach the Dask scheduler at {address} ({one_line(error)[:200]}); start it with "
            f"`dask scheduler`, or run locally without --scheduler / DASK_SCHEDULER_ADDRESS / compute.scheduler"
        ) from error


def dask_as_completed(client: Any, futures: dict, address: str) -> Iterator[tuple[int, Any]]:
    """(index, value) of each future as it finishes; a job's own UserError passes as it is, the
    cluster's failures become one line; what is left is cancelled when the caller stops."""
    from distributed import as_completed

    try:
        for future in as_completed(futures, loop=client.loop):
            try:
                value = future.result()
            except UserError:
                raise
            except CancelledError as error:
                raise _LostData(
                    f"compute: the Dask cluster at {address} failed a job ({one_line(error)[:200]})"
                ) from error
            except Exception as error:
                raise WorkerError(
                    f"compute: the Dask cluster at {address} failed a job ({one_line(error)[:200]})"
                ) from error
            yield futures[future], value
    finally:
        client.cancel(list(futures))
