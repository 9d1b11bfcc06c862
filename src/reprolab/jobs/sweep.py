"""Sweeps (the audit, `reprolab compare`): many training runs, each computed once, recorded as
child runs of one summary run.

Every training run is tagged with its run key (`reprolab.tracking.cache.run_key`: settings, seed,
dataset digest, training code and libraries). A FINISHED run with the same key, made by any
earlier command (a pipeline stage, another audit), is reused: its recorded result stands in for
a new training, unless `reuse` is off. The other jobs run through `reprolab.jobs.run` (local
processes or a Dask cluster) and are recorded here, in the driver, as each finishes: one
writer, whatever the store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from reprolab.jobs.job import Job
from reprolab.jobs.run import run_jobs
from reprolab.results import RunResult
from reprolab.tracking.cache import finished_runs, run_key
from reprolab.tracking.training_run import record_run

if TYPE_CHECKING:
    from reprolab.training import TrainResult

# A child run's name and extra tags, from its job and result.
Describe = Callable[[Job, RunResult], tuple[str, dict[str, str]]]


@dataclass
class SweepRun:
    """One job's result, the MLflow run that holds it, and whether that run was reused."""

    result: RunResult
    run_id: Optional[str]
    reused: bool


def run_sweep(
    jobs: Sequence[Job],
    *,
    kind: str,
    parent_run_id: Optional[str],
    describe: Describe,
    log_models: bool,
    workers: Optional[int] = None,
    scheduler: Optional[str] = None,
    reuse: bool = True,
) -> list[SweepRun]:
    """Every job's result, in job order: reused from a finished run with the same key, or
    trained (longest first) and recorded as a `kind` run nested under `parent_run_id`."""
    if not jobs:
        return []
    keys = [run_key(job.config.run_config(job.preset, job.seed), job.data.digest, job.code) for job in jobs]
    found = finished_runs(jobs[0].config, {key: job.data for key, job in zip(keys, jobs)}) if reuse else {}
    done: dict[int, SweepRun] = {}
    for index, key in enumerate(keys):
        if key in found:
            run_id, result = found[key]
            job = jobs[index]
            done[index] = SweepRun(dataclasses.replace(result, preset=job.preset, seed=job.seed), run_id, True)
    todo = [jobs[index] for index in range(len(jobs)) if index not in done]
    index_of = {id(job): index for index, job in enumerate(jobs)}
    if done:
        print(f"{len(done)} of {len(jobs)} runs reused from finished runs with the same run key", flush=True)

    def record(job: Job, trained: TrainResult, result: RunResult) -> None:
        name, tags = describe(job, result)
        run_id = record_run(
            job.config,
            job.config.run_config(job.preset, job.seed),
            job.data,
            trained,
            result,
            kind=kind,
            run_name=name,
            tags=tags,
            parent_run_id=parent_run_id,
            log_model=log_models,
            code=job.code,
        )
        done[index_of[id(job)]] = SweepRun(result, run_id, False)
        trained_so_far = sum(not run.reused for run in done.values())
        print(
            f"[{trained_so_far}/{len(todo)}] {job.preset}, seed {job.seed}: val "
            f"{result.metrics['val_accuracy']:.3f}, train {result.metrics['train_accuracy']:.3f} "
            f"({result.fit['wall_time_s']:.1f} s)",
            flush=True,
        )

    run_jobs(todo, workers, on_result=record, scheduler=scheduler)
    return [done[index] for index in range(len(jobs))]
