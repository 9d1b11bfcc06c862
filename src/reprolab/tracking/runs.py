"""A run's life: opened with its owner and provenance tags, ended FINISHED, FAILED (an error)
or KILLED (Ctrl-C, SIGTERM); summary runs that hold a sweep or a report, the runs nested
under them and the runs they rest on; tags and files added to a finished run.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import mlflow
from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException

from reprolab.config import Config
from reprolab.entrypoint import UserError, one_line, signals_deferred
from reprolab.record.data_file import file_digests, keep_in_dvc_cache
from reprolab.record.source import Source, capture_source
from reprolab.tracking.artifacts import RESTS_ON_FILE, RESTS_ON_SCHEMA, download
from reprolab.tracking.failures import STORE_ERRORS, TrackingError, during_run, known_failure, redact
from reprolab.tracking.owners import owner_tags
from reprolab.tracking.store import Store, connect, repo_root


def provenance_tags(source: Optional[Source] = None) -> dict[str, str]:
    """The source that runs, or `source` (its digest; in git, HEAD, the commit that holds the
    source and whether it differs from HEAD), and DVC's stage and experiment names when running
    under DVC."""
    tags = (source or capture_source()).tags()
    for env, tag in (
        ("DVC_STAGE", "reprolab.dvc_stage"),
        ("DVC_EXP_NAME", "reprolab.dvc_experiment"),
        ("DVC_EXP_BASELINE_REV", "reprolab.dvc_baseline_rev"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


@functools.lru_cache(maxsize=8)
def _file_digests(path: str, size: int, mtime_ns: int) -> dict[str, str]:
    """A user file's digests, its bytes kept in the project's DVC cache under them (once a
    version: a run's data can be had again after the file is overwritten)."""
    digests = file_digests(Path(path))
    try:
        keep_in_dvc_cache(Path(path), digests["md5"], repo_root())
    except Exception as error:  # DVC's errors have no common base; the digests still identify the file
        print(f"reprolab: warning: {path} not kept in DVC's cache ({one_line(error)[:160]})", file=sys.stderr)
    return digests


def data_tags(config: Config) -> dict[str, str]:
    """Where a user file can be found again: its path, SHA-256 and MD5 (DVC's cache address)."""
    if not config.data.user_file:
        return {}
    path = Path(config.data.user_file)
    stat = path.stat()
    digests = _file_digests(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return {
        "reprolab.data.file": config.data.user_file,
        "reprolab.data.file_sha256": digests["sha256"],
        "reprolab.data.file_md5": digests["md5"],
    }


@contextmanager
def open_run(
    store: Store, name: str, tags: dict[str, str], start_time: Optional[int] = None, fluent: bool = False
) -> Iterator[str]:
    """Create a run and end it FINISHED, FAILED (an error) or KILLED (Ctrl-C, SIGTERM).

    `fluent` makes it MLflow's active run, which `log_model` and `log_input` need; the summary
    run of a sweep stays open through the client only, while its child runs take turns as the
    active run."""
    run_id: Optional[str] = None
    try:
        with signals_deferred():
            run_id = store.client.create_run(
                store.experiment_id, run_name=name, start_time=start_time, tags={**owner_tags(), **tags}
            ).info.run_id
            if fluent:
                mlflow.start_run(run_id=run_id)
    except STORE_ERRORS as error:
        refused = known_failure(store.uri, error)
        raise TrackingError(refused or f"tracking: could not start an MLflow run: {one_line(error)[:300]}") from error
    except KeyboardInterrupt:
        # A signal that arrived while the run was being created: end it KILLED here, or MLflow's
        # exit hook would end the active run FINISHED, with no result in it.
        if run_id is not None:
            end_run(store, run_id, "KILLED", fluent and mlflow.active_run() is not None)
        raise
    try:
        yield run_id
    except KeyboardInterrupt:
        end_run(store, run_id, "KILLED", fluent)
        raise
    except BaseException:
        end_run(store, run_id, "FAILED", fluent)
        raise
    during_run(end_run)(store, run_id, "FINISHED", fluent, quiet=False)


def end_run(store: Store, run_id: str, status: str, fluent: bool, quiet: bool = True) -> None:
    """End the run. When ending it after another error, a store that is gone must not hide that
    error: the run then stays RUNNING until the next command marks it (see close_orphaned_runs)."""
    try:
        with signals_deferred():
            if fluent:
                mlflow.end_run(status)
            else:
                store.client.set_terminated(run_id, status)
    except STORE_ERRORS as error:
        if not quiet:
            raise
        print(
            f"reprolab: warning: could not mark MLflow run {run_id} {status} ({one_line(error)[:200]}); the next "
            f"reprolab command that reaches {redact(store.uri)} will",
            file=sys.stderr,
        )


@contextmanager
def summary_run(config: Config, run_name: str, kind: str, tags: dict[str, str]) -> Iterator[Optional[str]]:
    """A run that holds a report or a sweep: open while the sweep's runs nest under it."""
    if not config.tracking.enabled:
        yield None
        return
    store = connect(config.tracking)
    with open_run(store, run_name, {"reprolab.kind": kind, **provenance_tags(), **tags}) as run_id:
        yield run_id


@during_run
def finish_summary(
    config: Config,
    run_id: Optional[str],
    files: Sequence[Path],
    folder: str,
    note: str,
    metrics: Optional[dict[str, float]] = None,
    tags: Optional[dict[str, str]] = None,
    rests_on: Sequence[Optional[str]] = (),
) -> None:
    """Attach a report to an open summary run: its files, a note shown in the UI, metrics, tags,
    and `rests_on`, every training run its numbers come from (trained for it or reused), which
    `summarised_runs` reads back."""
    if run_id is None:
        return
    store = connect(config.tracking)
    now = int(time.time() * 1000)
    store.client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
        tags=[RunTag(k, v) for k, v in {"mlflow.note.content": note, **(tags or {})}.items()],
    )
    for path in files:
        store.client.log_artifact(run_id, str(path), folder)
    if rests_on:
        listed = list(dict.fromkeys(r for r in rests_on if r))
        store.client.log_dict(run_id, {"schema": RESTS_ON_SCHEMA, "runs": listed}, RESTS_ON_FILE)


@during_run
def record_references(
    config: Config, parent_run_id: Optional[str], found: dict[str, dict[str, float]], tags: dict[str, str]
) -> dict[str, str]:
    """Each reference classifier's metrics (`reprolab.references`) as a run of its own nested under
    the summary run, tagged `reprolab.kind=reference` (no run key: never reused as a training
    run, never audited); the run id of each, by label."""
    if parent_run_id is None:
        return {}
    store, ids = connect(config.tracking), {}
    for label, metrics in found.items():
        run_tags = {"reprolab.kind": "reference", "reprolab.reference": label, "mlflow.parentRunId": parent_run_id}
        with open_run(store, f"reference {label}", {**provenance_tags(), **tags, **run_tags}) as run_id:
            now = int(time.time() * 1000)
            store.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        ids[label] = run_id
    return ids


@during_run
def tag_runs(config: Config, run_ids: Sequence[str], tags: dict[str, str]) -> None:
    """Set `tags` on each of the recorded runs `run_ids` (e.g. a link to the audit that explains them)."""
    if not run_ids:
        return
    store = connect(config.tracking)
    for run_id in run_ids:
        store.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


@during_run
def annotate_run(
    config: Config, run_id: str, tags: dict[str, str], files: Sequence[Path] = (), folder: str = "evaluation"
) -> None:
    """Add tags and files to a finished run (what the report learns about a training run)."""
    if not config.tracking.enabled:
        return
    store = connect(config.tracking)
    try:
        store.client.get_run(run_id)
    except MlflowException as error:
        raise TrackingError(
            f"tracking: MLflow run {run_id} is not in {redact(store.uri)}; rerun its training "
            f"(`dvc repro --force train@<preset>`)"
        ) from error
    store.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    for path in files:
        store.client.log_artifact(run_id, str(path), folder)


def child_runs(store: Store, run_id: str) -> list:
    """The training runs nested under a sweep's summary run, oldest first."""
    return [
        run
        for run in store.client.search_runs(
            [store.experiment_id],
            f"tags.`mlflow.parentRunId` = '{run_id}'",
            max_results=10000,
            order_by=["attributes.start_time ASC"],
        )
        if run.data.tags.get("reprolab.run_key")
    ]


def summarised_runs(store: Store, summary, folder: Path) -> tuple[list, list]:
    """Every training run a sweep's summary run rests on: those nested under it (trained for it)
    and those it reused, listed in its `rests_on.json` (`finish_summary`). A listed run that is
    gone from the store is an error: the sweep's numbers cannot all be had again."""
    nested = child_runs(store, summary.info.run_id)
    listed_file = download(store, summary.info.run_id, RESTS_ON_FILE, folder)
    if listed_file is None:
        return nested, []
    listed = json.loads(listed_file.read_text())
    if listed.get("schema", 0) > RESTS_ON_SCHEMA:
        raise UserError(
            f"{RESTS_ON_FILE} of run {summary.info.run_id} has schema {listed['schema']}; this reprolab reads "
            f"up to {RESTS_ON_SCHEMA}"
        )
    own = {run.info.run_id for run in nested}
    reused = []
    for run_id in listed["runs"]:
        if run_id in own:
            continue
        try:
            run = store.client.get_run(run_id)
        except MlflowException:
            raise UserError(
                f"the summary run {summary.info.run_id} rests on run {run_id}, which is not in the store any more: "
                f"its result cannot be had again"
            ) from None
        if run.info.lifecycle_stage == "deleted":
            raise UserError(
                f"the summary run {summary.info.run_id} rests on run {run_id}, which was deleted: restore it "
                f"(`mlflow runs restore --run-id {run_id}`) to reproduce the sweep"
            )
        reused.append(run)
    return nested, reused
