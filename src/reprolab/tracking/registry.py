"""The model registry: one registered model per dataset, its `after` alias on the audit's
after preset, each model's digest checked before the registry serves it.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Optional

import mlflow

from reprolab.config import Config
from reprolab.tracking.artifacts import MODEL_DIGEST_TAG
from reprolab.tracking.failures import TrackingError, during_run
from reprolab.tracking.store import connect


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


REGISTERED_MODEL = "reprolab-{data}"  # one registered model per dataset
AFTER_ALIAS = "after"  # the version of the audit's after preset: models:/reprolab-<data>@after


@during_run
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
