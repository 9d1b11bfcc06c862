"""What a worker process runs: a pool worker's start (signals, kernels), a job sent to it
pickled, and the check that a Dask worker trains with the driver's code and kernels.
"""

from __future__ import annotations

import functools
import os
import pickle
import signal
import threading
from typing import Any, Optional

from reprolab.config import Config
from reprolab.data import Dataset
from reprolab.entrypoint import INTERRUPTED, die_with_parent, raise_on_signal
from reprolab.jobs.job import Job, WorkerError, run_job
from reprolab.record.code import RecordedCode

_in_job = threading.Event()  # set while a pool worker runs a job


def start_pool_worker() -> None:
    """A local pool's worker: it dies with its driver, and a signal stops it. In a job, the
    signal is the usual KeyboardInterrupt (a run being logged ends KILLED), then the worker
    exits; outside a job it exits at once. The pool stops its workers with SIGTERM when one
    of them died, and a worker that answered with its result or error instead would wait for
    good on a pipe the pool no longer reads."""
    die_with_parent()

    def on_signal(signum: int, frame: Any) -> None:
        if not _in_job.is_set():
            os._exit(INTERRUPTED)
        raise_on_signal(signum, frame)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)


def run_pickled(job: Job) -> bytes:
    """A job in a local pool, its result as plain pickle: multiprocessing's own pickler passes
    tensors through shared-memory files, which a file-size limit (`ulimit -f`) refuses with a
    torch traceback, and which leak when a worker dies."""
    _in_job.set()
    try:
        result = run_job(job)
    except KeyboardInterrupt:  # stopped (see start_pool_worker)
        os._exit(INTERRUPTED)
    finally:
        _in_job.clear()
    return pickle.dumps(result)


def run_parts(
    config: Config, preset: str, seed: int, data: Dataset, code: Optional[RecordedCode], driver: dict[str, str]
):
    """A job on a Dask worker, which must train as the driver would (`driver`: its training code
    and libraries, `sources.training_code`)."""
    _undo_dask_malloc_setting()
    _check_trains_as(driver, shipped=code is not None)
    return run_job(Job(config, preset, seed, data, code))


@functools.lru_cache(maxsize=1)
def worker_training_code() -> dict[str, str]:
    from reprolab.sources import training_code

    return training_code()


def _check_trains_as(driver: dict[str, str], shipped: bool) -> None:
    """A Dask worker runs the reprolab and libraries it was started with, not the driver's: a
    result it trained with other code would be recorded under a run key that is not its own.
    With recorded code shipped in the job, only the libraries must agree."""
    here = worker_training_code()
    keys = ("torch", "numpy") if shipped else ("code", "torch", "numpy")
    differing = [f"{key} {here[key][:12]} there, {driver[key][:12]} here" for key in keys if here[key] != driver[key]]
    if differing:
        raise WorkerError(
            f"compute: a Dask worker trains with other code or libraries than this command ({'; '.join(differing)}; "
            f"training code as the digest of reprolab.training and what it imports): start the workers from this "
            f"checkout and environment"
        )


def _undo_dask_malloc_setting() -> None:
    """Dask's nanny starts its workers with MALLOC_TRIM_THRESHOLD_=65536, to hand memory back
    to the system. Setting it also stops glibc from raising its mmap threshold as it does by
    itself, so every tensor of 128 KB or more was mapped and unmapped again, and training ran
    1.5x slower on a worker (8.4 s -> 13.1 s for one run here, most of it system time). Put both
    thresholds back where glibc's own adjustment would take them (mallopt; glibc only)."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 64 * 1024 * 1024)
