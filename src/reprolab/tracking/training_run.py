"""A training run's record: its resolved configuration, source and dataset, its per-epoch
metrics sent in batches, its final metrics, `result.json`, environment and model.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import mlflow
import yaml
from mlflow.entities import Metric, Param, RunTag

from reprolab.config import Config, RunConfig, flatten, to_dict
from reprolab.figures import preset_colour
from reprolab.metrics import train_val_gap
from reprolab.record.code import RecordedCode
from reprolab.record.environment import environment
from reprolab.record.signing import SIGNATURE_TAG, sign, signing_key, text_sha256
from reprolab.record.source import ARCHIVE, capture_source
from reprolab.results import RunResult, text_digest
from reprolab.tracking.artifacts import (
    CONFIG_DIGEST_TAG,
    CONFIG_KEY_TAG,
    ENVIRONMENT_FILE,
    MAX_TAG,
    MODEL_DIGEST_TAG,
    PARAMS_ARTIFACT,
    RESULT_DIGEST_TAG,
    RESULT_FILE,
    RUN_ARTIFACT,
    SOURCE_FOLDER,
)
from reprolab.tracking.cache import run_key
from reprolab.tracking.failures import during_run
from reprolab.tracking.registry import model_digest
from reprolab.tracking.runs import data_tags, open_run, provenance_tags
from reprolab.tracking.store import Store, connect

MODEL_SERIALIZATION = "pickle"
FLUSH_SECONDS = 5.0  # how often a training run sends its buffered per-epoch metrics
MLFLOW_DIGEST_LENGTH = 36  # MLflow keeps 36 characters of a dataset digest; the full SHA-256 is a tag
SPLIT_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}


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

    @during_run
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

    @during_run
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
        key = signing_key()
        if key is not None:  # over every digest the run now holds (record.signing)
            recorded = {**self.store.client.get_run(self.run_id).data.tags, **{tag.key: tag.value for tag in tags}}
            tags.append(RunTag(SIGNATURE_TAG, sign(recorded, key)))
        self.store.client.log_batch(self.run_id, metrics=metrics, tags=tags)
        self.store.client.log_text(self.run_id, text, RESULT_FILE)
        device = trained.device if trained is not None else ""
        kernels = getattr(trained, "kernels", None)
        self.store.client.log_dict(self.run_id, environment(device, kernels), ENVIRONMENT_FILE)

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

    @during_run
    def log_artifacts(self, files: Sequence[Path], folder: str) -> None:
        if self.store is None:
            return
        assert self.run_id is not None
        for path in files:
            self.store.client.log_artifact(self.run_id, str(path), folder)


def _package_source(folder: Path) -> Path:
    """A copy of the package's Python files only, as `folder/reprolab`."""
    from reprolab.sources import PACKAGE_DIR

    target = folder / "reprolab"
    for path in PACKAGE_DIR.rglob("*.py"):
        copy = target / path.relative_to(PACKAGE_DIR)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    return target


@during_run
def _log_inputs(
    store: Store, run_id: str, config: Config, run: RunConfig, data, code: Optional[RecordedCode] = None
) -> None:
    """A training run's inputs: its resolved configuration (flattened as params, and as YAML with
    the whole params.yaml), the source that trained it (this code's, or the recorded `code`) and
    its dataset."""
    params_text = yaml.safe_dump(to_dict(config), sort_keys=False)
    run_text = yaml.safe_dump(to_dict(run), sort_keys=False)
    store.client.log_batch(
        run_id,
        params=[Param(k, str(v)) for k, v in flatten(to_dict(run)).items()],
        tags=[RunTag(CONFIG_DIGEST_TAG, text_sha256(params_text, run_text))],
    )
    store.client.log_text(run_id, params_text, PARAMS_ARTIFACT)
    store.client.log_text(run_id, run_text, RUN_ARTIFACT)
    with tempfile.TemporaryDirectory(prefix="reprolab-source-") as scratch:
        archive = Path(scratch) / ARCHIVE
        archive.write_bytes(code.archive if code else capture_source().archive)
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
    with open_run(store, run_name or f"{run.preset}-seed{run.seed}", all_tags, start, fluent=True) as run_id:
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
