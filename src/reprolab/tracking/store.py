"""The store: which one (`tracking_uri`), connecting to it and to the project's experiment
(`connect`), and creating a SQLite store safely beside other MLflow clients.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from reprolab.config import TrackingConfig
from reprolab.entrypoint import signals_deferred
from reprolab.tracking.failures import STORE_ERRORS, TrackingError, redact, store_message
from reprolab.tracking.owners import close_orphaned_runs

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlruns"


def repo_root() -> Path:
    """The repository root: DVC_ROOT under DVC (the original repo, even for queued
    experiments that run in a temporary copy), else the current directory."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def _default_uri() -> str:
    return f"sqlite:///{repo_root() / DB_FILE}"


def tracking_uri(config: TrackingConfig) -> str:
    """MLFLOW_TRACKING_URI, else `tracking.uri`, else the SQLite store at the repository root.

    A relative SQLite path (`sqlite:///rel.db`) is resolved once, against the repository root,
    whatever the entry point: a queued experiment runs in DVC's temporary copy, where it would
    otherwise name a store that is deleted with the copy."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config.uri or _default_uri()
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not Path(uri[len(prefix) :]).is_absolute():
        uri = f"{prefix}{repo_root() / uri[len(prefix) :]}"
    return uri


@dataclass
class Store:
    """A connected client and the project's experiment."""

    client: MlflowClient
    experiment_id: str
    uri: str


_initialized: set[str] = set()  # SQLite stores this process has opened under the lock


def _ensure_sqlite_store(uri: str) -> None:
    """Check an existing SQLite store, then open it (creating or migrating it) once per process,
    under a file lock.

    MLflow retries a store it cannot open for minutes (with backoff, logging each try), so a
    path that is not a file, or a file that is not SQLite, is refused here in milliseconds.
    MLflow's first-time table creation races: a second process that opens the store while the
    first is creating its tables migrates them again ("table ... already exists"), hence the
    lock, taken by every process, not only the one that finds no file."""
    from filelock import FileLock

    path = Path(uri[len("sqlite:///") :])
    if path.exists() and not path.is_file():
        raise TrackingError(
            f"tracking: the MLflow store {path} is not a file; move it aside (a new store is made on the "
            f"next run) or point tracking.uri / MLFLOW_TRACKING_URI elsewhere"
        )
    if uri in _initialized:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if not path.exists():
            _create_sqlite_store(path)
        _wait_while_created(path)
        _check_sqlite_store(uri, path)
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # migrates an older store
    _initialized.add(uri)


STORE_CREATION_WAIT_S = 120.0


def _create_sqlite_store(path: Path) -> None:
    """Create a new store under another name and move it into place once complete: a client
    outside reprolab (`mlflow ui`) that opens `path` meanwhile finds no file and makes its own,
    instead of finding tables half-made and migrating them a second time, which wedged the
    store. If such a client made one first, that one is kept."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.creating")
    scratch.unlink(missing_ok=True)
    try:
        MlflowClient(tracking_uri=f"sqlite:///{scratch}").search_experiments(max_results=1)
        with contextlib.suppress(FileExistsError):
            os.link(scratch, path)  # never replaces a file: fails if one appeared meanwhile
    finally:
        scratch.unlink(missing_ok=True)


def _wait_while_created(path: Path) -> None:
    """Wait while another client is still creating the store: its schema short of MLflow's
    newest and the file written to within the last two seconds (an older store that MLflow
    will migrate is not being written to)."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    head, deadline = _get_latest_schema_revision(), time.monotonic() + STORE_CREATION_WAIT_S
    while _store_version(path) != head and time.time() - path.stat().st_mtime < 2.0:
        if time.monotonic() > deadline:
            raise TrackingError(
                f"tracking: another MLflow client has been creating the store {path} for "
                f"{STORE_CREATION_WAIT_S:.0f} s; stop it, move the file aside and rerun"
            )
        time.sleep(0.2)


def _store_version(path: Path) -> Optional[str]:
    """The store's schema version (alembic's), None while it has none."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as database:
            row = database.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _check_sqlite_store(uri: str, path: Path) -> None:
    """A file that SQLite can read, and that no interrupted migration left half-done (a client
    outside reprolab, such as `mlflow ui`, that opened it while it was being created)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as database:
            tables = {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise TrackingError(store_message(uri, error)) from error
    for table in sorted(name for name in tables if name.startswith("_alembic_tmp_")):
        original = table[len("_alembic_tmp_") :]
        fix = (
            f"`sqlite3 {path} 'DROP TABLE {table}'` (its table {original} is intact)"
            if original in tables
            else f"move the store aside: its table {original} is gone and its rows are in {table}"
        )
        raise TrackingError(
            f"tracking: the MLflow store {path} was left half-migrated: table {table} remains from a migration that "
            f"was interrupted (another MLflow client, e.g. `mlflow ui`, opened it while it was being created); "
            f"with no other MLflow process on it, run {fix}"
        )


def _set_fluent_uri(uri: str) -> None:
    """Point MLflow's fluent API (start_run, log_model, log_input) at `uri`.

    `mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI, which would then override the
    configuration of every later call in this process and in its child processes; the
    environment is put back as the user left it.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


_swept: set[str] = set()


def connect(config: TrackingConfig) -> Store:
    """A client for the configured store and the project's experiment (created if new); runs
    of this host whose owning process is gone are marked KILLED first (once per process)."""
    uri = tracking_uri(config)
    with signals_deferred():
        return _connect(config, uri)


def _connect(config: TrackingConfig, uri: str) -> Store:
    try:
        if uri.startswith("sqlite:///"):
            _ensure_sqlite_store(uri)
        _set_fluent_uri(uri)
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(config.experiment_name)
        if experiment is not None and experiment.lifecycle_stage == "deleted":
            raise TrackingError(
                f"tracking: the MLflow experiment {config.experiment_name!r} in {redact(uri)} was deleted; restore it "
                f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`, with MLFLOW_TRACKING_URI "
                f"set) or record elsewhere with tracking.experiment_name=<a new name>"
            )
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            # Artifacts of a SQLite store live beside it (the default store's at the repository
            # root), also when the experiment is first created from a queued run's temporary copy
            # or another directory: MLflow would put them under whatever directory it ran in.
            sqlite = "sqlite:///"
            artifacts = (Path(uri[len(sqlite) :]).parent / ARTIFACTS_DIR).as_uri() if uri.startswith(sqlite) else None
            try:
                experiment_id = client.create_experiment(
                    config.experiment_name,
                    artifact_location=artifacts,
                    tags={
                        # Open the experiment on its training runs in the UI (not the GenAI views).
                        "mlflow.experimentKind": "custom_model_development",
                        "mlflow.note.content": "reprolab: one run per training; a sweep nests its runs under one run.",
                    },
                )
            except MlflowException:  # created meanwhile by a parallel run
                created = client.get_experiment_by_name(config.experiment_name)
                if created is None:
                    raise
                experiment_id = created.experiment_id
        store = Store(client, experiment_id, uri)
        if uri not in _swept:
            close_orphaned_runs(client, experiment_id)
            _swept.add(uri)
        return store
    except STORE_ERRORS as error:
        raise TrackingError(store_message(uri, error)) from error
