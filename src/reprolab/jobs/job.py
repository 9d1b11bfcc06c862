"""One training job: what it is (`Job`), how it trains (this code, or a run's recorded code in
a process of its own), what it is expected to cost, and the scheduler it may run on.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from reprolab import numerics
from reprolab.config import ComputeConfig, Config
from reprolab.data import Dataset
from reprolab.entrypoint import UserError
from reprolab.record.code import RecordedCode
from reprolab.results import RunResult


def worker_context() -> Any:
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
    run's recorded `code` (`reprolab.record.code`)."""

    config: Config
    preset: str
    seed: int
    data: Dataset
    code: Optional[RecordedCode] = None


class WorkerError(UserError, RuntimeError):
    """A worker process, or the cluster, that could not give a result."""


# Seeding is process-wide: a process trains one job at a time, even in a multi-threaded worker.
_ONE_AT_A_TIME = threading.Lock()


def run_job(job: Job, on_epoch: Optional[Callable[[dict[str, float]], None]] = None, progress: bool = False):
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
    from reprolab.jobs.recorded import TrainedElsewhere, train
    from reprolab.record.code import CodeError

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
