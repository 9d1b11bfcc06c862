"""What a recorded run holds under which name: its files (`result.json`, `environment.json`,
the source archive, `rests_on.json`) and the tags that check them; `download` reads one back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mlflow.exceptions import MlflowException

from reprolab.entrypoint import one_line, signals_deferred
from reprolab.tracking.failures import TrackingError, room_for
from reprolab.tracking.store import Store

MAX_TAG = 8000  # MLflow's limit on a tag value
RESULT_FILE = "result.json"  # every training run's RunResult, what a sweep reuses
RESULT_DIGEST_TAG = "reprolab.result_sha256"  # result.json's digest, checked before it is reused
RESTS_ON_FILE, RESTS_ON_SCHEMA = "rests_on.json", 1  # a summary run's training runs, the reused included
CONFIG_KEY_TAG = "reprolab.config_key"  # the run key without the seed: one configuration's runs over seeds
MODEL_DIGEST_TAG = "reprolab.model_sha256"  # the logged model's files, checked before the registry serves it
PARAMS_ARTIFACT, RUN_ARTIFACT = "config/params.yaml", "config/run.yaml"  # the whole config, the run's part
CONFIG_DIGEST_TAG = "reprolab.config_sha256"  # of the two, checked against the logged params before use
ENVIRONMENT_FILE = "environment.json"  # where a run ran (reprolab.record.environment)
SOURCE_FOLDER = "source"  # the source archive (reprolab.record.source)


def download(store: Store, run_id: str, path: str, folder: Path) -> Optional[Path]:
    """One artifact of a run, or None when the run has none at `path`. A download that fails
    here (a full disk, a file-size limit, a folder that cannot be written) is a TrackingError,
    never taken for an artifact the run lacks."""
    try:
        with signals_deferred():
            return Path(store.client.download_artifacts(run_id, path, str(folder)))
    except (MlflowException, OSError) as error:
        local = _local_failure(error)
        if local is None:
            return None
        raise TrackingError(
            f"tracking: could not download {path} of MLflow run {run_id} into {folder} ({one_line(local)[:160]}); "
            f"{room_for(folder if folder.exists() else folder.parent)}"
        ) from error


def _local_failure(error: BaseException) -> Optional[OSError]:
    """The OSError of this machine's disk behind `error` (MLflow may wrap it), if any: not one
    that says the artifact is not there."""
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and not isinstance(current, (FileNotFoundError, NotADirectoryError)):
            return current
        current = current.__cause__ or current.__context__
    return None
