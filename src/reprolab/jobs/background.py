"""One job in the background (a training stage, `reprolab train`): a forked process imports
torch and trains while the driver imports MLflow and opens the run on the other core; each
epoch's record streams back as it is made.
"""

from __future__ import annotations

import os
import pickle
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Optional

from reprolab.entrypoint import UserError, die_with_parent
from reprolab.jobs.job import Job, WorkerError, run_job, worker_context
from reprolab.results import RunResult
from reprolab.training import TrainResult


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
        send("done", run_job(job, send_epoch, progress))
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
        context = worker_context()
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
