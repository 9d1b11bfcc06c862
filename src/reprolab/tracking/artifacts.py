"""What a recorded run holds under which name: its files (`result.json`, `environment.json`,
the source archive, `rests_on.json`) and the tags that check them; `download` reads one back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mlflow.exceptions import MlflowException

from reprolab.entrypoint import signals_deferred
from reprolab.tracking.store import Store

MAX_TAG = 8000  # MLflow's limit on a tag value
RESULT_FILE = "result.json"  # every training run's RunResult, what a sweep reuses
RESULT_DIGEST_TAG = "reprolab.result_sha256"  # result.json's digest, checked before it is reused
RESTS_ON_FILE, RESTS_ON_SCHEMA = "rests_on.json", 1  # a summary run's training runs, the reused included
CONFIG_KEY_TAG = "reprolab.config_key"  # the run key without the seed: one configuration's runs over seeds
MODEL_DIGEST_TAG = "reprolab.model_sha256"  # the logged model's files, checked before the registry serves it
ENVIRONMENT_FILE = "environment.json"  # where a run ran (reprolab.record.environment)
SOURCE_FOLDER = "source"  # the source archive (reprolab.record.source)


def download(store: Store, run_id: str, path: str, folder: Path) -> Optional[Path]:
    """One artifact of a run, or None when the run has none at `path`."""
    try:
        with signals_deferred():
            return Path(store.client.download_artifacts(run_id, path, str(folder)))
    except (MlflowException, OSError):
        return None
