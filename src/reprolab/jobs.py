"""Training jobs run in worker processes; their results come back to this process, the driver,
which is the only one that records them in MLflow.

- One job in the background (`train_in_background`: a training stage, `reprolab train`): a
  forked process imports torch and trains while the driver imports MLflow and opens the run on
  the other core; each epoch's record streams back as it is made.
- Many jobs at once (`run_jobs`: the audit, `reprolab compare`), spread over local processes
  or, given a scheduler's address, over a Dask cluster; the longest start first.

Each run is single-threaded and seeded, so a result does not depend on where it ran. Dask
reruns elsewhere the jobs of a worker that dies, so a lost worker costs time, not results.
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, CancelledError, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from reprolab import numerics
from reprolab.config import ComputeConfig, Config
from reprolab.data import Dataset
from reprolab.entrypoint import INTERRUPTED, UserError, die_with_parent, one_line, raise_on_signal
from reprolab.results import RunResult

if TYPE_CHECKING:
    from reprolab.recorded_code import RecordedCode
    from reprolab.training import TrainResult


def _context() -> Any:
    """How workers start: by forking the driver, which shares its dataset and its imports for
    free, unless the driver has imported a GPU build of torch: a forked child cannot use CUDA
    once its parent has touched it (asking whether a GPU is there can), so they start as fresh
    interpreters. Every run sets torch to one thread before it computes
    (`training.seed_everything`), so thread pools that the driver's torch may have started are
    never needed in a forked child, as in PyTorch's DataLoader workers."""
    torch = sys.modules.get("torch")
    gpu_build = torch is not None and (torch.version.cuda or getattr(torch.version, "hip", None))
    return multiprocessing.get_context("spawn" if gpu_build else "fork")


@dataclass
class Job:
    """One run to do: `preset` of `config` with `seed`, on `data`, trained by this code or by a
    run's recorded `code` (`reprolab.recorded_code`)."""

    config: Config
    preset: str
    seed: int
    data: Dataset
    code: Optional[RecordedCode] = None


class WorkerError(UserError, RuntimeError):
    """A worker process, or the cluster, that could not give a result."""


# Seeding is process-wide: a process trains one job at a time, even in a multi-threaded worker.
_ONE_AT_A_TIME = threading.Lock()


def _run_job(job: Job, on_epoch: Optional[Callable[[dict[str, float]], None]] = None, progress: bool = False):
    # In this process, or in the one recorded code trains in: a Dask worker may not have it yet.
    numerics.apply(job.config.compute.numerics.value)
    if job.code is not None:
        return _run_recorded(job, job.code)
    from reprolab.training import run_one

    with _ONE_AT_A_TIME:
        return run_one(job.config, job.preset, job.seed, job.data, progress=progress, on_epoch=on_epoch)


def _run_recorded(job: Job, code: RecordedCode):
    """A job for recorded code: trained by that code in a process of its own, on the data its
    own `build` makes from the job's settings, which must be the job's dataset."""
    from reprolab.config import to_dict
    from reprolab.recorded_code import CodeError, TrainedElsewhere, train

    user_file = job.config.data.user_file
    data_file = (Path(user_file).name, Path(user_file).read_bytes()) if user_file else None
    try:
        again = train(code.archive, to_dict(job.config), data_file, job.preset, job.seed)
    except CodeError as error:
        raise WorkerError(f"compute: {code.label} could not train {job.preset}, seed {job.seed}: {error}") from error
    result = RunResult.from_json(json.dumps(again["result"]))
    if result.dataset_digest != job.data.digest:
        raise WorkerError(
            f"compute: {code.label} builds other data from these data settings (digest {result.dataset_digest[:12]}…, "
            f"not {job.data.digest[:12]}…): its runs cannot be compared with this code's on one dataset"
        )
    return TrainedElsewhere(again["device"], again.get("kernels")), result


_in_job = threading.Event()


def _start_pool_worker() -> None:
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


def _run_pickled(job: Job) -> bytes:
    """A job in a local pool, its result as plain pickle: multiprocessing's own pickler passes
    tensors through shared-memory files, which a file-size limit (`ulimit -f`) refuses with a
    torch traceback, and which leak when a worker dies."""
    _in_job.set()
    try:
        result = _run_job(job)
    except KeyboardInterrupt:  # stopped (see _start_pool_worker)
        os._exit(INTERRUPTED)
    finally:
        _in_job.clear()
    return pickle.dumps(result)


def _run_parts(
    config: Config, preset: str, seed: int, data: Dataset, code: Optional[RecordedCode], driver: dict[str, str]
):
    """A job on a Dask worker, which must train as the driver would (`driver`: its training code
    and libraries, `sources.training_code`)."""
    _undo_dask_malloc_setting()
    _check_trains_as(driver, shipped=code is not None)
    return _run_job(Job(config, preset, seed, data, code))


@functools.lru_cache(maxsize=1)
def _worker_training_code() -> dict[str, str]:
    from reprolab.sources import training_code

    return training_code()


def _check_trains_as(driver: dict[str, str], shipped: bool) -> None:
    """A Dask worker runs the reprolab and libraries it was started with, not the driver's: a
    result it trained with other code would be recorded under a run key that is not its own.
    With recorded code shipped in the job, only the libraries must agree."""
    here = _worker_training_code()
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


GATES = {"rnn": 1, "gru": 3, "lstm": 4}  # weight matrices per recurrent layer


def expected_cost(job: Job) -> float:
    """A relative guess at a job's duration, to start the longest first: epochs times the
    recurrent weights times the sequences it runs over each epoch (training, then evaluation of
    training and validation). Early stopping is guessed to stop after three times its patience."""
    preset = job.config.preset(job.preset)
    model, train = preset.model, preset.train
    epochs = train.max_epochs
    if train.early_stopping.enabled:
        epochs = min(epochs, 3 * train.early_stopping.patience)
    weights = (
        GATES[model.cell.value] * model.num_layers * model.hidden_size * (model.hidden_size + job.data.num_features)
    )
    splits = job.data.splits
    return float(epochs * weights * (2 * len(splits["train"].y) + len(splits["val"].y)))


def scheduler_address(compute: ComputeConfig, flag: Optional[str] = None) -> Optional[str]:
    """Where to send jobs: the command's flag, else DASK_SCHEDULER_ADDRESS, else compute.scheduler;
    None runs them in local processes."""
    return flag or os.environ.get("DASK_SCHEDULER_ADDRESS") or compute.scheduler


# -- one job in the background -------------------------------------------------------------


def _background_main(job: Job, channel: Connection, progress: bool) -> None:
    """The forked worker: train, sending ("epoch", record) per epoch and ("done", result) or
    ("error", exception) at the end. A driver that is gone ends it at the next epoch."""
    driver = os.getppid()
    die_with_parent()

    def send(kind: str, payload: Any) -> None:
        # Plain pickle: multiprocessing's own would pass tensors as handles into this
        # process's memory, which are gone once it exits.
        channel.send_bytes(pickle.dumps((kind, payload)))

    def send_epoch(record: dict[str, float]) -> None:
        if os.getppid() != driver:
            os._exit(1)
        send("epoch", record)

    try:
        send("done", _run_job(job, send_epoch, progress))
    except KeyboardInterrupt:  # the driver stopped it, or Ctrl-C reached the whole group
        pass
    except UserError as error:
        send("error", error)
    except BaseException:  # a bug: keep its traceback for the driver to show
        send("error", RuntimeError(traceback.format_exc()))
    finally:
        channel.close()


class BackgroundTraining:
    """A job training in a forked worker; `result` streams its epochs and returns its result."""

    def __init__(self, job: Job, progress: bool = True):
        context = _context()
        self._channel, child_end = context.Pipe(duplex=False)
        self._process = context.Process(target=_background_main, args=(job, child_end, progress), daemon=True)
        self.started = time.time()
        self._process.start()
        child_end.close()

    def elapsed(self) -> float:
        return time.time() - self.started

    def result(self, on_epoch: Optional[Callable[[dict[str, float]], None]] = None) -> tuple[TrainResult, RunResult]:
        """Wait for the worker; call `on_epoch` with each epoch's record as it arrives."""
        while True:
            try:
                kind, payload = pickle.loads(self._channel.recv_bytes())
            except EOFError:
                self._process.join(5)
                raise WorkerError(
                    f"the training process ended without a result (exit status {self._process.exitcode})"
                ) from None
            if kind == "epoch":
                if on_epoch is not None:
                    on_epoch(payload)
            elif kind == "error":
                raise payload
            else:
                return payload

    def close(self) -> None:
        """Stop the worker if it still runs (the driver failed or was interrupted)."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._channel.close()

    def __enter__(self) -> BackgroundTraining:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def train_in_background(job: Job, progress: bool = True) -> BackgroundTraining:
    """Start training `job` in a forked worker (use as a context manager)."""
    return BackgroundTraining(job, progress)


# -- many jobs -------------------------------------------------------------------------------

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
        _on_dask(jobs, order, scheduler, finish)
    elif max(1, min(workers or os.cpu_count() or 1, len(jobs))) == 1:
        for index in order:
            finish(index, *_run_job(jobs[index]))
    else:
        _on_local_processes(jobs, order, min(workers or os.cpu_count() or 1, len(jobs)), finish)
    return [results[index] for index in range(len(jobs))]


MAX_LOST_POOLS = 3  # losses of workers (or their data) a sweep outlives: a job that kills its worker each time stops it


def _on_local_processes(jobs: Sequence[Job], order: list[int], workers: int, finish: Callable) -> None:
    """The jobs in a pool of local processes. A worker that dies (killed, out of memory) breaks
    the pool: a new one reruns the jobs not finished, as Dask does, so a lost worker costs time."""
    from concurrent.futures.process import BrokenProcessPool

    remaining = list(order)
    _until_done(
        remaining,
        lambda: _one_pool(jobs, remaining, workers, finish),
        BrokenProcessPool,
        lambda count, cause: (
            f"compute: local worker processes died {count} times ({cause}); look for the out-of-memory killer "
            f"in the system log, or lower --workers"
        ),
        lambda left: f"a worker process died; rerunning the {left} runs not finished in new workers",
    )


def _until_done(
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
    with ProcessPoolExecutor(max_workers=workers, mp_context=_context(), initializer=_start_pool_worker) as pool:
        futures = {pool.submit(_run_pickled, jobs[index]): index for index in remaining}
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


LOST_WORKER_WAIT_S = 1.0


class _LostData(WorkerError):
    """A job the scheduler cancelled: the data it needed was lost with a worker (see _on_dask)."""


def _on_dask(jobs: Sequence[Job], order: list[int], address: str, finish: Callable) -> None:
    """The jobs on a Dask cluster. Dask reruns a lost worker's jobs, but not the data scattered
    to it: its memory manager keeps one copy of scattered data, and when the worker holding it
    dies, every job waiting on it is cancelled ("already forgotten"). The jobs not finished are
    then sent again with their data, so a lost worker costs time here too."""
    with _dask_client(address) as client:
        remaining = list(order)
        _until_done(
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
    driver = _worker_training_code()  # this process's
    futures = {
        client.submit(
            _run_parts,
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
    for index, (trained, result) in _as_completed(client, futures, address):
        finish(index, trained, result)
        remaining.remove(index)


def _dask_client(address: str):
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


def _as_completed(client: Any, futures: dict, address: str) -> Iterator[tuple[int, Any]]:
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
        with _dask_client(scheduler) as client:
            batch = uuid.uuid4().hex[:8]
            futures = {
                client.submit(function, *call, key=f"reprolab-{batch}-{index}", pure=False): index
                for index, call in enumerate(calls)
            }
            for index, value in _as_completed(client, futures, scheduler):
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
            raise
