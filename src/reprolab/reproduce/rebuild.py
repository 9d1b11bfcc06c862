"""What made a recorded run, rebuilt in a scratch folder, never in the user's workspace, each
part checked against the run's record before anything runs: the code (its source archive, else
its commit from git), the configuration (its `config/params.yaml`), the data (generated again,
or the user's file found by its digests at its recorded path, in DVC's cache, or through DVC
from the run's commit).
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from reprolab.entrypoint import UserError
from reprolab.record.data_file import file_digests
from reprolab.record.environment import read_environment
from reprolab.results import RunResult
from reprolab.tracking.artifacts import ENVIRONMENT_FILE, PARAMS_ARTIFACT, RESULT_FILE, RUN_ARTIFACT, download
from reprolab.tracking.cache import checked_result
from reprolab.tracking.recorded import of_run, recorded_config
from reprolab.tracking.store import Store, repo_root


class ReproduceError(UserError, RuntimeError):
    """A run that cannot be rebuilt: its code, data or record cannot be had."""


@dataclass
class Rebuilt:
    """What one run needs to be trained again, as plain values that travel (to a Dask worker)."""

    run: Any
    archive: bytes  # the source: the run's archive, else git's archive of its commit
    params: dict  # its config/params.yaml, tracking off
    data_file: Optional[tuple[str, bytes]]  # the user file's name and bytes
    preset: str
    seed: int
    original: RunResult
    environment: dict
    trust: str = ""  # what its record proves: signed or not (reprolab.record.signing)


def _dvc_cached(root: Path, md5: str) -> Optional[Path]:
    try:
        from dvc.repo import Repo

        with Repo(str(root)) as repo:
            path = Path(repo.cache.local.oid_to_path(md5))
        return path if path.is_file() else None
    except Exception:  # not a DVC repository, or no cache: look elsewhere
        return None


def _dvc_remote(root: Path, name: str, commit: Optional[str], into: Path) -> Optional[Path]:
    try:
        import dvc.api

        with dvc.api.open(name, repo=str(root), rev=commit, mode="rb") as stream, into.open("wb") as copy:
            shutil.copyfileobj(stream, copy)
        return into
    except Exception:  # not tracked by DVC at that commit, or no remote holds it
        return None


def _user_file(run, raw: dict, folder: Path) -> Path:
    """The run's user file with the SHA-256 it was recorded with, copied into `folder`."""
    tags = run.data.tags
    name, sha, md5 = (
        tags.get("reprolab.data.file"),
        tags.get("reprolab.data.file_sha256"),
        tags.get("reprolab.data.file_md5"),
    )
    name = name or raw["data"]["user_file"]
    root = repo_root()
    copy = folder / "data" / Path(name).name
    copy.parent.mkdir(parents=True, exist_ok=True)
    at_path = Path(name) if Path(name).is_absolute() else root / name
    candidates = [at_path] + ([c] if md5 and (c := _dvc_cached(root, md5)) else [])
    for candidate in candidates:
        if candidate.is_file() and (sha is None or file_digests(candidate)["sha256"] == sha):
            shutil.copyfile(candidate, copy)
            return copy
    commit = tags.get("mlflow.source.git.commit")
    fetched = _dvc_remote(root, name, commit, copy)
    if fetched is not None and (sha is None or file_digests(fetched)["sha256"] == sha):
        return fetched
    at = (
        f"the file at its path has other bytes (sha256 {file_digests(at_path)['sha256'][:12]}…)"
        if at_path.is_file()
        else "it is not at its path"
    )
    raise ReproduceError(
        f"reproduce: the data file {name} of run {run.info.run_id} (md5 {md5 or '?'}, sha256 {(sha or '?')[:12]}…): "
        f"{at}, and it is neither in DVC's cache nor in the DVC remote; run `dvc pull` (or `dvc fetch`) in a clone "
        f"that has it, or put that file back at {name}"
    )


def rebuild(store: Store, run, folder: Path) -> Rebuilt:
    """Read back what made `run`: its code, configuration, data, environment and result."""
    run_id = run.info.run_id
    if run.info.lifecycle_stage == "deleted":
        raise ReproduceError(
            f"reproduce: MLflow run {run_id} ({run.info.run_name}) was deleted; restore it (`mlflow runs restore "
            f"--run-id {run_id}`, with MLFLOW_TRACKING_URI set) to reproduce it"
        )
    folder.mkdir(parents=True, exist_ok=True)
    recorded = recorded_config(store, run, folder, "reproduce")  # its signature and config, checked
    result_file = download(store, run_id, RESULT_FILE, folder)
    if recorded is None or result_file is None:
        raise ReproduceError(
            f"reproduce: MLflow run {run_id} ({run.info.run_name}) is not a training run that finished: it has no "
            f"{PARAMS_ARTIFACT}, {RUN_ARTIFACT} or {RESULT_FILE}"
        )
    try:  # what the UI shows of the run must be what its result.json holds
        original = checked_result(store, run, folder / "checked", history=True, untagged=True)
    except ValueError as error:
        raise ReproduceError(
            f"reproduce: MLflow run {run_id} ({run.info.run_name}): {error}: its record was changed after the run, "
            f"so there is no honest result to compare with"
        ) from error
    raw, chosen = copy.deepcopy(recorded.params), recorded.run
    code = of_run(run, store, folder, "reproduce")  # checked against its record before anything runs
    data_file = None
    if raw["data"].get("source") == "npz":
        found = _user_file(run, raw, folder)
        data_file = (found.name, found.read_bytes())
    raw["tracking"]["enabled"] = False
    environment_file = download(store, run_id, ENVIRONMENT_FILE, folder)
    try:
        environment = read_environment(environment_file.read_text()) if environment_file else {}
    except ValueError as error:
        raise ReproduceError(
            f"reproduce: MLflow run {run_id}: its {ENVIRONMENT_FILE} cannot be read: {error}"
        ) from error
    return Rebuilt(
        run,
        code.archive,
        raw,
        data_file,
        chosen["preset"],
        int(chosen["seed"]),
        original,
        environment,
        recorded.trust,
    )
