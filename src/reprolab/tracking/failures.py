"""What a store that fails says: one line naming the store and what to do (credentials,
permission, a full disk, a run deleted meanwhile, a store that stopped answering), never
MLflow's traceback; `during_run` wraps every call made once the store was reached.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, TypeVar, cast

import mlflow
from mlflow.exceptions import MlflowException
from requests.exceptions import RequestException
from sqlalchemy.exc import SQLAlchemyError

from reprolab.entrypoint import UserError, one_line, signals_deferred

# MLflow logs a traceback for each SQLite error before raising it; reprolab reports the raised
# error in one line.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

# What a store that cannot be reached, read or written raises.
STORE_ERRORS = (MlflowException, RequestException, SQLAlchemyError, OSError)


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be reached, read or written."""


def redact(uri: str) -> str:
    """A URI without credentials, for messages."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def room_for(path: Path) -> str:
    """What stops a file growing, as far as this process can tell: its file-size limit, the
    free space of its file system."""
    import resource

    free = f"{shutil.disk_usage(path).free / 2**20:.0f} MiB free on its file system"
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY:
        return f"free some disk space ({free}) and rerun"
    return f"raise the file-size limit (ulimit -f: {limit} bytes) or free some disk space ({free}), and rerun"


CANNOT_GROW = ("disk I/O error", "database or disk is full", "File too large", "No space left", "Disk quota")


def known_failure(uri: str, error: BaseException) -> Optional[str]:
    """What to do when a store answered but refused (credentials, permission, a run deleted
    meanwhile) or a local one cannot grow; None for other errors."""
    code = getattr(error, "error_code", "")
    cause = one_line(error)[:160]
    if uri.startswith("sqlite:///") and any(text in cause for text in CANNOT_GROW):
        path = Path(uri[len("sqlite:///") :])
        return f"tracking: the MLflow store {path} cannot grow ({cause}); {room_for(path.parent)}"
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


def store_message(uri: str, error: BaseException) -> str:
    refused = known_failure(uri, error)
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


F = TypeVar("F", bound=Callable[..., Any])


def during_run(function: F) -> F:
    """For calls to the store once it was reached: a store that stops answering (MLflow,
    requests, SQLAlchemy or socket errors) becomes one line; other errors pass as they are."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with signals_deferred():
                return function(*args, **kwargs)
        except STORE_ERRORS as error:
            uri = redact(mlflow.get_tracking_uri())
            refused = known_failure(uri, error)
            if refused:
                raise TrackingError(refused) from error
            raise TrackingError(
                f"tracking: lost the MLflow store {uri} ({one_line(error)[:160]}); local "
                f"outputs are kept; when the store is back, rerun (`dvc repro`) to record the run (the first command "
                f"to reach the store marks this one KILLED)"
            ) from error

    return cast(F, wrapper)
