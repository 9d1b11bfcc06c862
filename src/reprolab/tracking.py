"""MLflow tracking: the one module that talks to MLflow; everything else passes plain values.

One MLflow experiment per project; one run per training invocation, named `<preset>-seed<seed>`,
whatever starts it (a pipeline stage, `reprolab train`, a sweep's child run). The default store
is MLflow's SQLite database at the repository root; `MLFLOW_TRACKING_URI` or `tracking.uri`
point elsewhere (a shared server, see docs/tracking.md).

What MLflow lacks and this module adds, each said where it is done:
- a store that fails in seconds with one line (retries off, errors wrapped);
- runs that end KILLED on Ctrl-C and FAILED on errors;
- the owner (host, process) of each open run, so a run whose process died (SIGKILL, power
  loss) is marked KILLED by the next command that reaches the store;
- a run key per training run, so a sweep reuses a finished run instead of training again.

Cost: per-epoch metrics are sent in batches every FLUSH_SECONDS, and the model is saved with the
`pickle` serialization format and explicit pip requirements. MLflow's defaults (`pt2`, which
runs `torch.export`, and pip requirement inference in a subprocess) took 11-13 s per model here;
these settings take about 1 s.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TypeVar, cast

import yaml

from reprolab import numerics, provenance
from reprolab.config import Config, RunConfig, TrackingConfig, flatten, to_dict
from reprolab.entrypoint import UserError, one_line, signals_deferred
from reprolab.metrics import train_val_gap
from reprolab.plots import preset_colour
from reprolab.results import HISTORY_KEYS, RunResult, text_digest

if TYPE_CHECKING:
    from reprolab.recorded_code import RecordedCode

# Fail in seconds, not minutes, when a tracking server is unreachable: MLflow's defaults
# (7 retries with exponential backoff, 120 s timeout) took 246 s to give up here.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# MLflow 3 would otherwise contact its telemetry service; these machines reach no outside host.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow's INFO lines ("Creating initial MLflow database tables...") would bury a command's own.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
# A progress bar per downloaded result.json (a sweep's reuse) would bury the sweep's own lines.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from requests.exceptions import RequestException
from sqlalchemy.exc import SQLAlchemyError

# MLflow logs a traceback for each SQLite error before raising it; reprolab reports the raised
# error in one line.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

# What a store that cannot be reached, read or written raises.
STORE_ERRORS = (MlflowException, RequestException, SQLAlchemyError, OSError)

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlruns"
MODEL_SERIALIZATION = "pickle"
FLUSH_SECONDS = 5.0  # how often a training run sends its buffered per-epoch metrics
MLFLOW_DIGEST_LENGTH = 36  # MLflow keeps 36 characters of a dataset digest; the full SHA-256 is a tag
MAX_TAG = 8000  # MLflow's limit on a tag value
RESULT_FILE = "result.json"  # every training run's RunResult, what a sweep reuses
RESULT_DIGEST_TAG = "reprolab.result_sha256"  # result.json's digest, checked before it is reused
RESTS_ON_FILE, RESTS_ON_SCHEMA = "rests_on.json", 1  # a summary run's training runs, the reused included
CONFIG_KEY_TAG = "reprolab.config_key"  # the run key without the seed: one configuration's runs over seeds
MODEL_DIGEST_TAG = "reprolab.model_sha256"  # the logged model's files, checked before the registry serves it
ENVIRONMENT_FILE = "environment.json"  # where a run ran (reprolab.provenance.environment)
SOURCE_FOLDER = "source"  # the source archive (reprolab.provenance.capture_source)
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be reached, read or written."""


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


def redact(uri: str) -> str:
    """A URI without credentials, for messages."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def _room_for(path: Path) -> str:
    """What stops a file growing, as far as this process can tell: its file-size limit, the
    free space of its file system."""
    import resource

    free = f"{shutil.disk_usage(path).free / 2**20:.0f} MiB free on its file system"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return f"free some disk space ({free}) and rerun"
    return f"raise the file-size limit (ulimit -f: {limit} bytes) or free some disk space ({free}), and rerun"


CANNOT_GROW = ("disk I/O error", "database or disk is full", "File too large", "No space left", "Disk quota")


def _known_failure(uri: str, error: BaseException) -> Optional[str]:
    """What to do when a store answered but refused (credentials, permission, a run deleted
    meanwhile) or a local one cannot grow; None for other errors."""
    code = getattr(error, "error_code", "")
    cause = one_line(error)[:160]
    if uri.startswith("sqlite:///") and any(text in cause for text in CANNOT_GROW):
        path = Path(uri[len("sqlite:///") :])
        return f"tracking: the MLflow store {path} cannot grow ({cause}); {_room_for(path.parent)}"
    if code == "UNAUTHENTICATED" or "error code 401" in cause:
        return (
            f"tracking: the MLflow server {redact(uri)} wants valid credentials ({cause}); set "
            f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (docs/tracking.md, a team's server)"
        )
    if code == "PERMISSION_DENIED" or "error code 403" in cause:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "this user")
        return (
            f"tracking: the MLflow server {redact(uri)} refused {user} permission ({cause}); ask its admin for EDIT "
            f"on the experiment and registered model (docs/tracking.md, a team's server), or record into an "
            f"experiment of your own with tracking.experiment_name=<name>"
        )
    deleted = re.search(r"run (\w+) must be in the 'active' state", cause)
    if deleted:
        return (
            f"tracking: MLflow run {deleted[1]} was deleted while this command used it; restore it "
            f"(`mlflow runs restore --run-id {deleted[1]}`, with MLFLOW_TRACKING_URI set) and rerun; local outputs "
            f"are kept"
        )
    return None


def _count_runs(path: Path) -> str:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as database:
            return str(database.execute("SELECT count(*) FROM runs").fetchone()[0])
    except sqlite3.DatabaseError:
        return "no"


def _store_message(uri: str, error: BaseException) -> str:
    refused = _known_failure(uri, error)
    if refused:
        return refused
    cause = one_line(getattr(error, "orig", None) or error)[:300]
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        if "readonly" in cause or "read-only" in cause or isinstance(error, PermissionError):
            return (
                f"tracking: the MLflow store {path} cannot be written ({cause}); make the file and its folder "
                f"writable, or set tracking=none to run without MLflow"
            )
        if "already exists" in cause:  # MLflow creates its tables again: their creation stopped halfway
            return (
                f"tracking: the MLflow store {path} was left half-created ({cause}; a full disk, a file-size limit "
                f"or a killed process stopped its creation); it holds {_count_runs(Path(path))} runs: move it aside "
                f"(a new one is made on the next run)"
            )
        return (
            f"tracking: the MLflow store {path} cannot be read ({cause}); if it is damaged, move it aside "
            f"(a new one is made on the next run) or restore it from a backup"
        )
    return (
        f"tracking: cannot use MLflow store {redact(uri)}: {cause} (start the server, or set "
        f"MLFLOW_TRACKING_URI / tracking.uri; tracking=none runs without MLflow)"
    )


# -- the store -----------------------------------------------------------------------------------


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
        raise TrackingError(_store_message(uri, error)) from error
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
            close_orphaned_runs(store)
            _swept.add(uri)
        return store
    except STORE_ERRORS as error:
        raise TrackingError(_store_message(uri, error)) from error


# -- owners of open runs ---------------------------------------------------------------------------


def _process_started(pid: int) -> Optional[float]:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def owner_tags() -> dict[str, str]:
    """Who holds a run open: this host and process (with its start time, against pid reuse)."""
    pid = os.getpid()
    return {
        "reprolab.owner.host": socket.gethostname(),
        "reprolab.owner.pid": str(pid),
        "reprolab.owner.started": f"{_process_started(pid) or 0:.2f}",
    }


def close_orphaned_runs(store: Store) -> list[str]:
    """Mark KILLED the RUNNING runs of this host whose owning process is gone; return their ids.

    MLflow has no notion of a run's owner: a run whose process was killed outright stays
    RUNNING for ever. Runs owned by other hosts are left alone (their processes cannot be seen
    from here)."""
    host = socket.gethostname()
    closed = []
    for run in store.client.search_runs(
        [store.experiment_id],
        f"attributes.status = 'RUNNING' and tags.`reprolab.owner.host` = '{host}'",
        max_results=1000,
    ):
        tags = run.data.tags
        pid, started = int(tags.get("reprolab.owner.pid", "0")), float(tags.get("reprolab.owner.started", "0"))
        alive = _process_started(pid)
        if alive is not None and abs(alive - started) < 1.0:
            continue
        store.client.set_tag(
            run.info.run_id, "reprolab.end_reason", f"its process {pid} on {host} ended without closing it"
        )
        store.client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
        print(
            f"reprolab: marked MLflow run {run.info.run_id} ({run.info.run_name}) KILLED: its process {pid} is gone",
            file=sys.stderr,
        )
    return closed


# -- runs ------------------------------------------------------------------------------------------


def provenance_tags(source: Optional[provenance.Source] = None) -> dict[str, str]:
    """The source that runs, or `source` (its digest; in git, HEAD, the commit that holds the
    source and whether it differs from HEAD), and DVC's stage and experiment names when running
    under DVC."""
    tags = (source or provenance.capture_source()).tags()
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
    digests = provenance.file_digests(Path(path))
    try:
        provenance.keep_in_dvc_cache(Path(path), digests["md5"], repo_root())
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


F = TypeVar("F", bound=Callable[..., Any])


def _during_run(function: F) -> F:
    """For calls to the store once it was reached: a store that stops answering (MLflow,
    requests, SQLAlchemy or socket errors) becomes one line; other errors pass as they are."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_deferred():
                return function(*args, **kwargs)
        except STORE_ERRORS as error:
            uri = redact(mlflow.get_tracking_uri())
            refused = _known_failure(uri, error)
            if refused:
                raise TrackingError(refused) from error
            raise TrackingError(
                f"tracking: lost the MLflow store {uri} ({one_line(error)[:160]}); local "
                f"outputs are kept; when the store is back, rerun (`dvc repro`) to record the run (the first command "
                f"to reach the store marks this one KILLED)"
            ) from error

    return cast(F, wrapper)


@contextmanager
def _open(
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
        refused = _known_failure(store.uri, error)
        raise TrackingError(refused or f"tracking: could not start an MLflow run: {one_line(error)[:300]}") from error
    except KeyboardInterrupt:
        # A signal that arrived while the run was being created: end it KILLED here, or MLflow's
        # exit hook would end the active run FINISHED, with no result in it.
        if run_id is not None:
            _end(store, run_id, "KILLED", fluent and mlflow.active_run() is not None)
        raise
    try:
        yield run_id
    except KeyboardInterrupt:
        _end(store, run_id, "KILLED", fluent)
        raise
    except BaseException:
        _end(store, run_id, "FAILED", fluent)
        raise
    _during_run(_end)(store, run_id, "FINISHED", fluent, quiet=False)


def _end(store: Store, run_id: str, status: str, fluent: bool, quiet: bool = True) -> None:
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


class TrackedRun:
    """An open training run; methods take plain values and log them in as few calls as possible."""

    def __init__(
        self,
        store: Optional[Store],
        run_id: Optional[str],
        model_name: str = "model",
        data_name: str = "",
        digest: str = "",
        log_model: bool = True,
    ):
        self.store, self.run_id, self.model_name, self.log_model = store, run_id, model_name, log_model
        self.data_name, self.digest = data_name, digest
        self._sent_epochs, self._last_send = 0, time.monotonic()
        self._pending: list[dict[str, float]] = []

    @_during_run
    def log_epoch(self, record: dict[str, float]) -> None:
        """Use as training's `on_epoch`: epochs are sent every FLUSH_SECONDS, so the UI shows a
        run's progress and a store that went away is noticed within seconds, not at the end."""
        if self.store is None:
            return
        self._pending.append(record)
        if time.monotonic() - self._last_send >= FLUSH_SECONDS:
            self._send_epochs(self._pending)

    def _send_epochs(self, records: list[dict[str, float]], extra: Sequence[Metric] = ()) -> None:
        assert self.store is not None and self.run_id is not None
        now = int(time.time() * 1000)
        metrics = [
            Metric(f"epoch/{key}", float(value), now, int(record["epoch"]))
            for record in records
            for key, value in record.items()
            if key != "epoch"
        ]
        self.store.client.log_batch(self.run_id, metrics=metrics + list(extra))  # MLflow splits large batches
        self._sent_epochs += len(records)
        self._pending, self._last_send = [], time.monotonic()

    @_during_run
    def log_result(self, trained, result, data) -> None:
        """Everything a finished training gives: the rest of the per-epoch history, the fit summary,
        the model, the final metrics (linked to the model and to the split they were measured on),
        and the whole result as `result.json`."""
        if self.store is None:
            return
        assert self.run_id is not None
        now = int(time.time() * 1000)
        fit = [Metric(key, float(value), now, 0) for key, value in result.fit.items()]
        self._send_epochs(result.history[self._sent_epochs :], fit)
        model = getattr(trained, "model", None)
        model_id = self._log_model(model, data) if self.log_model and model is not None else None
        metrics = []
        for key, value in result.metrics.items():
            split = key.split("_", 1)[0]
            dataset = (
                {"dataset_name": f"{self.data_name}-{split}", "dataset_digest": self.digest[:MLFLOW_DIGEST_LENGTH]}
                if split in SPLIT_CONTEXTS
                else {}
            )
            metrics.append(Metric(key, float(value), now, 0, model_id=model_id, **dataset))
        metrics.append(Metric("train_val_gap", train_val_gap(result.metrics), now, 0, model_id=model_id))
        text = result.to_json()
        tags = [RunTag(RESULT_DIGEST_TAG, text_digest(text))]
        if warnings := result.warnings(data.splits["train"].y):
            tags.append(RunTag("reprolab.warnings", "\n".join(warnings)[:MAX_TAG]))
        if model_id is not None:
            tags.append(RunTag(MODEL_DIGEST_TAG, model_digest(model_id)))
        self.store.client.log_batch(self.run_id, metrics=metrics, tags=tags)
        self.store.client.log_text(self.run_id, text, RESULT_FILE)
        device = trained.device if trained is not None else ""
        kernels = getattr(trained, "kernels", None)
        self.store.client.log_dict(self.run_id, provenance.environment(device, kernels), ENVIRONMENT_FILE)

    def _log_model(self, model, data) -> Optional[str]:
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        # The pickle format is chosen on purpose (see the module docstring); MLflow warns
        # about it on every call, which would bury the stage's own output.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        example = data.splits["val"].X[:2]
        with torch.no_grad():
            output = model.eval()(torch.from_numpy(example)).numpy()
        with tempfile.TemporaryDirectory(prefix="reprolab-code-") as scratch:
            info = mlflow.pytorch.log_model(
                model,
                name=self.model_name,
                serialization_format=MODEL_SERIALIZATION,
                signature=infer_signature(example, output),
                input_example=example,
                # The pickled model refers to reprolab.models: ship the package's source files
                # (models.py needs torch only) so the model loads without this repository, and
                # nothing else that lies in its folder (a stray .env file, caches).
                code_paths=[str(_package_source(Path(scratch)))],
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
            )
        return info.model_id

    @_during_run
    def log_artifacts(self, files: Sequence[Path], folder: str) -> None:
        if self.store is None:
            return
        assert self.run_id is not None
        for path in files:
            self.store.client.log_artifact(self.run_id, str(path), folder)


def model_digest(model_id: str) -> str:
    """SHA-256 over a logged model's files (names and contents) as the store holds them: taken
    right after logging, and again before the registry's alias serves the model, which loads by
    unpickling (docs/tracking.md, the trust boundary)."""
    with tempfile.TemporaryDirectory(prefix="reprolab-model-") as scratch:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}", dst_path=scratch))
        digest = hashlib.sha256()
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(local).as_posix()}\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        return digest.hexdigest()


def _package_source(folder: Path) -> Path:
    """A copy of the package's Python files only, as `folder/reprolab`."""
    from reprolab.sources import PACKAGE_DIR

    target = folder / "reprolab"
    for path in PACKAGE_DIR.rglob("*.py"):
        copy = target / path.relative_to(PACKAGE_DIR)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    return target


@_during_run
def _log_inputs(
    store: Store, run_id: str, config: Config, run: RunConfig, data, code: Optional[RecordedCode] = None
) -> None:
    """A training run's inputs: its resolved configuration (flattened as params, and as YAML with
    the whole params.yaml), the source that trained it (this code's, or the recorded `code`) and
    its dataset."""
    store.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in flatten(to_dict(run)).items()])
    store.client.log_text(run_id, yaml.safe_dump(to_dict(config), sort_keys=False), "config/params.yaml")
    store.client.log_text(run_id, yaml.safe_dump(to_dict(run), sort_keys=False), "config/run.yaml")
    with tempfile.TemporaryDirectory(prefix="reprolab-source-") as scratch:
        archive = Path(scratch) / provenance.ARCHIVE
        archive.write_bytes(code.archive if code else provenance.capture_source().archive)
        store.client.log_artifact(run_id, str(archive), SOURCE_FOLDER)
    _log_dataset(data, str(data.path) if data.path else str(config.data.user_file or config.data.prepared_path))


def _log_dataset(data, source: str) -> None:
    from mlflow.data.numpy_dataset import from_numpy

    for split, context in SPLIT_CONTEXTS.items():
        arrays = data.splits[split]
        with warnings.catch_warnings():
            # A local path matches two identically named source types ("" and "file" schemes).
            warnings.simplefilter("ignore", UserWarning)
            dataset = from_numpy(
                arrays.X,
                targets=arrays.y,
                source=source,
                name=f"{data.name}-{split}",
                digest=data.digest[:MLFLOW_DIGEST_LENGTH],
            )
        mlflow.log_input(dataset, context=context, tags={"sha256": data.digest, "split": split})


@functools.lru_cache(maxsize=1)
def _training_code() -> dict[str, str]:
    from reprolab.sources import training_code

    return training_code()


def run_key(run: RunConfig, dataset_digest: str, code: Optional[RecordedCode] = None, seed: bool = True) -> str:
    """What makes a training run's result: its model and training settings, its seed, the digest
    of its dataset, and the code and libraries that train (a digest of `reprolab.training` and
    every module it runs, this code's or the recorded `code`'s; the torch and NumPy versions),
    and the kernels that compute it (`numerics.key`). The preset's name does not count. Without
    the `seed`, the key of the configuration: its runs over other seeds share it."""
    payload = {
        "model": to_dict(run.model),
        "train": to_dict(run.train),
        **({"seed": run.seed} if seed else {}),
        "dataset": dataset_digest,
        "numerics": numerics.key(),
        **_training_code(),
        **({"code": code.training_digest} if code else {}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_tags(config: Config, run: RunConfig, data, kind: str, code: Optional[RecordedCode] = None) -> dict[str, str]:
    return {
        "reprolab.kind": kind,
        "reprolab.preset": run.preset,
        "reprolab.seed": str(run.seed),
        "reprolab.run_key": run_key(run, data.digest, code),
        CONFIG_KEY_TAG: run_key(run, data.digest, code, seed=False),
        "reprolab.dataset_digest": data.digest,
        **({"reprolab.data.warnings": "\n".join(data.warnings)[:MAX_TAG]} if data.warnings else {}),
        "mlflow.note.content": config.experiments[run.preset].description,
        # The UI draws each run in this colour: before and after told apart at a glance.
        "mlflow.runColor": preset_colour(run.preset, list(config.experiments)),
        **provenance_tags(code.source if code else None),
        **({"reprolab.trained_by": code.label} if code else {}),
        **data_tags(config),
    }


@contextmanager
def training_run(
    config: Config,
    run: RunConfig,
    data,
    kind: str = "train",
    run_name: Optional[str] = None,
    tags: Optional[dict[str, str]] = None,
    log_model: Optional[bool] = None,
    parent_run_id: Optional[str] = None,
    started_s_ago: float = 0.0,
    code: Optional[RecordedCode] = None,
) -> Iterator[TrackedRun]:
    """Open a run for one training invocation, with params, config, dataset and tags logged.

    `kind` is the `reprolab.kind` tag ("train" for pipeline and single runs, "audit" and
    "compare" for a sweep's); `tags` are added to the standard ones; `log_model` overrides
    `tracking.log_model`; `parent_run_id` nests it under a sweep's summary run;
    `started_s_ago` backdates the start of a run recorded after its training (a sweep's);
    `code` is the recorded code that trained it, when not this code (an audit's other side).
    """
    if not config.tracking.enabled:
        yield TrackedRun(None, None)
        return
    store = connect(config.tracking)
    all_tags = {**run_tags(config, run, data, kind, code), **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    start = int((time.time() - started_s_ago) * 1000)
    with _open(store, run_name or f"{run.preset}-seed{run.seed}", all_tags, start, fluent=True) as run_id:
        _log_inputs(store, run_id, config, run, data, code)
        yield TrackedRun(
            store,
            run_id,
            f"{run.preset.replace(' ', '')}-seed{run.seed}",
            data.name,
            data.digest,
            config.tracking.log_model if log_model is None else log_model,
        )


def record_run(
    config: Config,
    run: RunConfig,
    data,
    trained,
    result: RunResult,
    kind: str,
    run_name: str,
    tags: dict[str, str],
    parent_run_id: Optional[str],
    log_model: bool,
    code: Optional[RecordedCode] = None,
) -> Optional[str]:
    """Record a training that already ran (a sweep's) as a run nested under `parent_run_id`,
    its start backdated to when the training started; return its id. A training by recorded
    `code` (in its own process) records that code, and no model (the model stayed there)."""
    with training_run(
        config,
        run,
        data,
        kind=kind,
        run_name=run_name,
        tags=tags,
        log_model=log_model,
        parent_run_id=parent_run_id,
        started_s_ago=result.fit["wall_time_s"],
        code=code,
    ) as tracked:
        tracked.log_result(trained, result, data)
    return tracked.run_id


@_during_run
def finished_runs(config: Config, keys: Sequence[str]) -> dict[str, tuple[str, RunResult]]:
    """For each run key, the newest FINISHED run with that key whose result checks out
    (`checked_result`), and that result."""
    if not config.tracking.enabled:
        return {}
    store = connect(config.tracking)
    found: dict[str, tuple[str, RunResult]] = {}
    with tempfile.TemporaryDirectory(prefix="reprolab-reuse-") as scratch:
        for key in dict.fromkeys(keys):
            for candidate in store.client.search_runs(
                [store.experiment_id],
                f"tags.`reprolab.run_key` = '{key}' and attributes.status = 'FINISHED'",
                max_results=5,
                order_by=["attributes.start_time DESC"],
            ):
                try:
                    result = checked_result(store, candidate, Path(scratch) / candidate.info.run_id)
                except ValueError as error:
                    print(f"reprolab: not reusing MLflow run {candidate.info.run_id}: {error}", file=sys.stderr)
                    continue
                found[key] = (candidate.info.run_id, result)
                break
    return found


def checked_result(store: Store, run, folder: Path, history: bool = False, untagged: bool = False) -> RunResult:
    """A run's result.json, checked against what was recorded with the run: the digest kept in
    its tags when it was written (`untagged`: a run of an older reprolab without one passes),
    the final metrics and fit it logged, and with `history` every per-epoch value it logged
    (what the UI's charts show). ValueError names the first thing that disagrees."""
    try:
        text = Path(store.client.download_artifacts(run.info.run_id, RESULT_FILE, str(folder))).read_text()
        result = RunResult.from_json(text)
    except (MlflowException, OSError, ValueError, TypeError) as error:
        raise ValueError(f"its {RESULT_FILE} cannot be read ({one_line(error)[:120]})") from error
    recorded = run.data.tags.get(RESULT_DIGEST_TAG)
    if recorded is None and not untagged:
        raise ValueError(
            f"it carries no {RESULT_DIGEST_TAG} tag (recorded by an older reprolab), so it cannot be checked"
        )
    if recorded is not None and text_digest(text) != recorded:
        raise ValueError(
            f"its {RESULT_FILE} is not the one recorded with it "
            f"(digest {text_digest(text)[:12]}…, recorded {recorded[:12]}…)"
        )
    logged = run.data.metrics
    final = {**result.metrics, **{k: v for k, v in result.fit.items() if isinstance(v, (int, float))}}
    for key, value in final.items():
        if key not in logged or logged[key] != float(value):
            raise ValueError(
                f"its logged {key} ({logged.get(key, 'missing')}) disagrees with its own {RESULT_FILE} ({value})"
            )
    if history:
        _check_history(store, run.info.run_id, result)
    return result


def _check_history(store: Store, run_id: str, result: RunResult) -> None:
    """Every per-epoch value the run logged (`epoch/<key>`, step = epoch) is its result's history."""
    for key in HISTORY_KEYS:
        expected = {int(record["epoch"]): float(record[key]) for record in result.history}
        logged: dict[int, list[float]] = {}
        for metric in store.client.get_metric_history(run_id, f"epoch/{key}"):
            logged.setdefault(metric.step, []).append(metric.value)
        for epoch in sorted(set(expected) | set(logged)):
            values = logged.get(epoch, [])
            if values != [expected.get(epoch)]:
                shown = ", ".join(f"{v:g}" for v in values) or "missing"
                raise ValueError(
                    f"its logged epoch/{key} at epoch {epoch} ({shown}) disagrees with its own {RESULT_FILE} "
                    f"({expected.get(epoch, 'no such epoch')})"
                )


@contextmanager
def summary_run(config: Config, run_name: str, kind: str, tags: dict[str, str]) -> Iterator[Optional[str]]:
    """A run that holds a report or a sweep: open while the sweep's runs nest under it."""
    if not config.tracking.enabled:
        yield None
        return
    store = connect(config.tracking)
    with _open(store, run_name, {"reprolab.kind": kind, **provenance_tags(), **tags}) as run_id:
        yield run_id


@_during_run
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


@_during_run
def tag_runs(config: Config, run_ids: Sequence[str], tags: dict[str, str]) -> None:
    """Set `tags` on each of the recorded runs `run_ids` (e.g. a link to the audit that explains them)."""
    if not run_ids:
        return
    store = connect(config.tracking)
    for run_id in run_ids:
        store.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


UI_ADDRESS = "http://127.0.0.1:5000"  # where `reprolab ui` serves a SQLite store
TRAINING_RUNS = "tags.`reprolab.kind` = 'train'"


def ui_paths(experiment_id: str, data_name: str) -> dict[str, str]:
    """Where to look in the MLflow UI, below its address: the training runs, every run, the
    registered model of the after preset.

    MLflow 3.17's UI picks its views from the GenAI / Model training switch in its side bar
    (kept in the browser, GenAI by default), not from the experiment's `mlflow.experimentKind`
    tag, so every link sets `workflowType=machine_learning`."""
    import urllib.parse

    runs = f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning&searchFilter="
    return {
        "training runs": runs + urllib.parse.quote(TRAINING_RUNS),
        # An empty filter, said outright: the UI would keep the last one from the browser.
        "every run (sweeps folded under their summary runs)": runs,
        "the after preset's registered model": (
            f"/#/models/{REGISTERED_MODEL.format(data=data_name)}?workflowType=machine_learning"
        ),
    }


def ui_links(config: Config) -> dict[str, str]:
    """`ui_paths` at the UI's address: the server's, or `reprolab ui`'s for a SQLite store."""
    uri = tracking_uri(config.tracking)
    base = UI_ADDRESS if uri.startswith("sqlite:") else redact(uri).rstrip("/")
    paths = ui_paths(connect(config.tracking).experiment_id, config.data.name)
    return {what: base + path for what, path in paths.items()}


REGISTERED_MODEL = "reprolab-{data}"  # one registered model per dataset
AFTER_ALIAS = "after"  # the version of the audit's after preset: models:/reprolab-<data>@after


@_during_run
def register_model(config: Config, run_id: str, tags: dict[str, str]) -> Optional[str]:
    """Register the model logged by `run_id` as a version of `reprolab-<data.name>` (once per run)
    and point the `after` alias at it; return the version (None without tracking)."""
    if not config.tracking.enabled:
        return None
    store = connect(config.tracking)
    name = REGISTERED_MODEL.format(data=config.data.name)
    outputs = store.client.get_run(run_id).outputs
    if not outputs or not outputs.model_outputs:
        raise TrackingError(
            f"tracking: MLflow run {run_id} logged no model, so none can be registered; set tracking.log_model=true "
            f"and rerun its training"
        )
    model_id = outputs.model_outputs[0].model_id
    recorded = store.client.get_run(run_id).data.tags.get(MODEL_DIGEST_TAG)
    found = model_digest(model_id)
    if found != recorded:
        raise TrackingError(
            f"tracking: the model of MLflow run {run_id} is not the one it logged (digest {found[:12]}…, recorded "
            f"{(recorded or 'none')[:12]}…): it was altered or damaged in the store, or logged before reprolab "
            f"recorded model digests; it is not registered; retrain it (`dvc repro --force train@<preset>`)"
        )
    existing = store.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    version = existing[0].version if existing else mlflow.register_model(f"models:/{model_id}", name, tags=tags).version
    store.client.set_registered_model_alias(name, AFTER_ALIAS, version)
    return str(version)


@_during_run
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


# -- reading runs back (reprolab.reproduce) ---------------------------------------------------------

_RUN_ID = r"[0-9a-f]{32}"
# A run id alone, after `runs:/`, or in a UI URL's `/runs/<id>`.
_RUN_REFERENCE = rf"(?:^runs:/|/runs/|^)({_RUN_ID})(?:$|[/?#])"


def names_a_run(text: str) -> bool:
    """Whether `text` has the form of a run reference that `resolve_run` reads."""
    import re

    return text.startswith(("models:/", "runs:/")) or re.search(_RUN_REFERENCE, text) is not None


@_during_run
def resolve_run(store: Store, reference: str, command: str = "reproduce"):
    """The run that `reference` names: a run id, `runs:/<id>[/path]`, a run's page URL from the
    MLflow UI, `models:/<name>@<alias>`, `models:/<name>/<version>` or `models:/<model id>`."""
    import re

    text = reference.strip()
    run_id: Optional[str] = None
    try:
        if text.startswith("models:/"):
            rest = text[len("models:/") :].strip("/")
            if "@" in rest:
                name, alias = rest.split("@", 1)
                run_id = store.client.get_model_version_by_alias(name, alias).run_id
            elif "/" in rest:
                name, version = rest.rsplit("/", 1)
                run_id = store.client.get_model_version(name, version).run_id
            else:
                run_id = store.client.get_logged_model(rest).source_run_id
        else:
            match = re.search(_RUN_REFERENCE, text)
            run_id = match.group(1) if match else None
    except MlflowException as error:
        raise TrackingError(
            f"{command}: {reference} is not in {redact(store.uri)} ({one_line(error)[:160]})"
        ) from error
    if run_id is None:
        raise TrackingError(
            f"{command}: {reference!r} names no run; give a run id (32 hex digits), runs:/<id>, a run's page URL "
            f"from the MLflow UI, or models:/<name>@<alias>"
        )
    try:
        return store.client.get_run(run_id)
    except MlflowException as error:
        raise TrackingError(
            f"{command}: MLflow run {run_id} is not in {redact(store.uri)}; point MLFLOW_TRACKING_URI (or "
            f"tracking.uri) at the store that recorded it"
        ) from error


@_during_run
def same_configuration(store: Store, run) -> list:
    """The FINISHED training runs of `run`'s configuration over other seeds (its config key),
    newest first, one a seed: what its seed-to-seed spread is measured on."""
    key = run.data.tags.get(CONFIG_KEY_TAG)
    if not key:
        return []
    found: dict[str, Any] = {}
    for other in store.client.search_runs(
        [run.info.experiment_id],
        f"tags.`{CONFIG_KEY_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1000,
        order_by=["attributes.start_time DESC"],
    ):
        seed = other.data.tags.get("reprolab.seed")
        if seed and seed != run.data.tags.get("reprolab.seed") and other.data.tags.get("reprolab.kind") != "reproduce":
            found.setdefault(seed, other)
    return list(found.values())


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


def download(store: Store, run_id: str, path: str, folder: Path) -> Optional[Path]:
    """One artifact of a run, or None when the run has none at `path`."""
    try:
        with signals_deferred():
            return Path(store.client.download_artifacts(run_id, path, str(folder)))
    except (MlflowException, OSError):
        return None


@_during_run
def record_reproduction(
    store: Store, original, result: RunResult, outcome: dict, environment: dict, parent_run_id: Optional[str]
) -> str:
    """Record a reproduction as its own run linked to the original (`reprolab.reproduces`), and
    tag the original with the outcome and the date, which the UI shows beside it."""
    tags = {
        "reprolab.kind": "reproduce",
        "reprolab.reproduces": original.info.run_id,
        "reprolab.reproduce.verdict": outcome["verdict"],
        "mlflow.note.content": outcome["summary"],
        **{
            k: v
            for k, v in original.data.tags.items()
            if k in ("reprolab.preset", "reprolab.seed", "reprolab.dataset_digest")
        },
        **provenance_tags(),
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    with _open(store, f"reproduce {original.info.run_name}", tags) as run_id:
        now = int(time.time() * 1000)
        store.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in result.metrics.items()],
            params=[Param(k, v) for k, v in original.data.params.items()],
        )
        store.client.log_text(run_id, result.to_json(), RESULT_FILE)
        store.client.log_dict(run_id, environment, ENVIRONMENT_FILE)
        store.client.log_dict(run_id, outcome, "reproduction.json")
    _tag_reproduced(store, original.info.run_id, outcome["verdict"], run_id)
    return run_id


def _tag_reproduced(store: Store, run_id: str, verdict: str, by: str) -> None:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    store.client.log_batch(
        run_id,
        tags=[
            RunTag("reprolab.reproduced", verdict),
            RunTag("reprolab.reproduced_at", when),
            RunTag("reprolab.reproduced_by", by),
        ],
    )


@contextmanager
def reproduction_summary(store: Store, original) -> Iterator[tuple[str, Callable[[str, str], None]]]:
    """A summary run for reproducing a sweep, its runs' reproductions nested under it; call the
    yielded `finish(verdict, note)` once they are done."""
    tags = {"reprolab.kind": "reproduce-summary", "reprolab.reproduces": original.info.run_id, **provenance_tags()}
    ended: dict[str, str] = {}
    with _open(store, f"reproduce {original.info.run_name}", tags) as run_id:
        yield run_id, lambda verdict, note: ended.update(verdict=verdict, note=note)
        _during_run(store.client.log_batch)(
            run_id,
            tags=[RunTag("reprolab.reproduce.verdict", ended["verdict"]), RunTag("mlflow.note.content", ended["note"])],
        )
    _during_run(_tag_reproduced)(store, original.info.run_id, ended["verdict"], run_id)
