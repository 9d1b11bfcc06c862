"""MLflow tracking: the one module that talks to MLflow; everything else passes plain values.

One MLflow experiment per project; one run per training invocation, named `<preset>-seed<seed>`,
that evaluation adds to; one `report` run that links them. The default store is MLflow's
SQLite database at the repository root; `MLFLOW_TRACKING_URI` or `tracking.uri` point
elsewhere (a shared server, see README).

Cost: per-epoch metrics go in one `log_batch` call, and the model is saved with the `pickle`
serialization format and explicit pip requirements. MLflow's defaults (`pt2`, which runs
`torch.export`, and pip requirement inference in a subprocess) took 11-13 s per model here;
these settings take about 1 s. `pickle` loads back to the same `SequenceClassifier` for RNN,
LSTM and GRU (tested).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import yaml

from reprolab.config import Config, RunConfig, TrackingConfig, UserError, flatten, to_dict

# Fail in seconds, not minutes, when a tracking server is unreachable: MLflow's defaults
# (7 retries with exponential backoff, 120 s timeout) took 246 s to give up here.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
# MLflow 3 would otherwise contact its telemetry service; these machines reach no outside host.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402  (after the environment defaults above)
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from requests.exceptions import RequestException  # noqa: E402

# What a store that went away raises (MLflow wraps most HTTP errors; artifact uploads may not).
STORE_ERRORS = (MlflowException, RequestException)

DB_FILE = "mlflow.db"
# Runs that could not be ended because the store was unreachable, closed at the next connection.
UNCLOSED_RUNS = ".reprolab/unclosed_runs.jsonl"
ARTIFACTS_DIR = "mlruns"
MODEL_SERIALIZATION = "pickle"
# How often a training run sends its buffered per-epoch metrics.
FLUSH_SECONDS = 5.0
# MLflow stores at most 36 characters of a dataset digest; the full SHA-256 goes in a tag.
MLFLOW_DIGEST_LENGTH = 36


class TrackingError(UserError, RuntimeError):
    """The tracking store cannot be reached or written."""


def repo_root() -> Path:
    """The repository root: DVC_ROOT under DVC (the original repo, even for queued
    experiments that run in a temporary copy), else the current directory."""
    return Path(os.environ.get("DVC_ROOT") or Path.cwd()).resolve()


def _default_uri() -> str:
    return f"sqlite:///{repo_root() / DB_FILE}"


def tracking_uri(config: TrackingConfig) -> str:
    """MLFLOW_TRACKING_URI, else `tracking.uri`, else the SQLite store at the repository root."""
    return os.environ.get("MLFLOW_TRACKING_URI") or config.uri or _default_uri()


def _ensure_sqlite_store(uri: str) -> None:
    """Create a SQLite store once, under a file lock: MLflow's own first-time table creation
    races when two processes start on a new file ("table experiments already exists")."""
    from filelock import FileLock

    path = Path(uri[len("sqlite:///"):])
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if not path.exists():
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)


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


def connect(config: TrackingConfig) -> tuple[MlflowClient, str]:
    """A client for the configured store and the project's experiment id (created if new)."""
    uri = tracking_uri(config)
    try:
        if uri.startswith("sqlite:///"):
            _ensure_sqlite_store(uri)
        _set_fluent_uri(uri)
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(config.experiment_name)
        close_unclosed_runs(client, uri)
        if experiment is not None:
            return client, experiment.experiment_id
        # Artifacts of the default store live beside it, at the repository root, also when the
        # experiment is first created from a queued run's temporary copy (MLflow would use cwd).
        artifacts = (repo_root() / ARTIFACTS_DIR).as_uri() if uri == _default_uri() else None
        try:
            experiment_id = client.create_experiment(config.experiment_name, artifact_location=artifacts, tags={
                # Open the experiment on its training runs in the UI (not the GenAI views).
                "mlflow.experimentKind": "custom_model_development",
                "mlflow.note.content": "reprolab before/after runs: one run per preset and seed."})
        except MlflowException:  # created meanwhile by a parallel run
            experiment_id = client.get_experiment_by_name(config.experiment_name).experiment_id
        return client, experiment_id
    except STORE_ERRORS as error:
        raise TrackingError(
            f"tracking: cannot use MLflow store {_redact(uri)}: {str(error).splitlines()[0][:300]} "
            f"(start the server, or set MLFLOW_TRACKING_URI / tracking.uri; tracking.enabled=false "
            f"runs without MLflow)") from error


def _redact(uri: str) -> str:
    """A URI without credentials, for messages."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def _git(*args: str) -> Optional[str]:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance_tags() -> dict[str, str]:
    """Git commit and dirty state, DVC stage and experiment names when running under DVC."""
    tags = {}
    commit = _git("rev-parse", "HEAD")
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["reprolab.git_dirty"] = str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower()
    for env, tag in (("DVC_STAGE", "reprolab.dvc_stage"), ("DVC_EXP_NAME", "reprolab.dvc_experiment"),
                     ("DVC_EXP_BASELINE_REV", "reprolab.dvc_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


class TrackedRun:
    """An open MLflow run; methods take plain values and log them in as few calls as possible."""

    def __init__(self, client: Optional[MlflowClient], run_id: Optional[str], log_model: bool = True):
        self.client, self.run_id, self.log_model = client, run_id, log_model
        self._sent_epochs, self._pending, self._last_send = 0, [], time.monotonic()

    def log_epoch(self, record: dict[str, float]) -> None:
        """Use as training's `on_epoch`: epochs are sent every FLUSH_SECONDS, so the UI shows a
        run's progress and a store that went away is noticed within seconds, not at the end."""
        if self.client is None:
            return
        self._pending.append(record)
        if time.monotonic() - self._last_send >= FLUSH_SECONDS:
            self._send_epochs(self._pending)

    def _send_epochs(self, records: list[dict[str, float]], extra: Sequence[Metric] = ()) -> None:
        now = int(time.time() * 1000)
        metrics = [Metric(f"epoch/{key}", float(value), now, int(record["epoch"]))
                   for record in records for key, value in record.items() if key != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics + list(extra))  # MLflow splits large batches
        self._sent_epochs += len(records)
        self._pending, self._last_send = [], time.monotonic()

    def log_training(self, trained, data) -> None:
        """The per-epoch history not sent yet (step = epoch), the fit summary, and the model."""
        if self.client is None:
            return
        now = int(time.time() * 1000)
        fit = [Metric(key, float(value), now, 0) for key, value in trained.fit_summary().items()]
        self._send_epochs(trained.history[self._sent_epochs:], fit)
        if self.log_model:
            self._log_model(trained.model, data)

    def _log_model(self, model, data) -> None:
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        # The pickle format is chosen on purpose (see the module docstring); MLflow warns
        # about it on every call, which would bury the stage's own output.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        example = data.splits["val"].X[:2]
        with torch.no_grad():
            output = model.eval()(torch.from_numpy(example)).numpy()
        mlflow.pytorch.log_model(
            model, name="model", serialization_format=MODEL_SERIALIZATION,
            signature=infer_signature(example, output), input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
                              "reprolab"])

    def log_evaluation(self, metrics: dict, artifacts: Sequence[Path] = ()) -> None:
        """Final metrics (booleans as 0/1) and files such as the confusion matrix image."""
        if self.client is None:
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                              tags=[RunTag("reprolab.target_met", str(bool(metrics.get("target_met"))).lower())])
        for path in artifacts:
            self.client.log_artifact(self.run_id, str(path), "evaluation")


@contextmanager
def _active(run_id: str) -> Iterator[None]:
    """Make `run_id` the active run; end it FINISHED, FAILED (error) or KILLED (Ctrl-C)."""
    mlflow.start_run(run_id=run_id)
    try:
        yield
        mlflow.end_run("FINISHED")
    except KeyboardInterrupt:
        _end_quietly(run_id, "KILLED")
        raise
    except STORE_ERRORS as error:
        _end_quietly(run_id, "FAILED")
        raise _lost_store(error) from error
    except BaseException:
        _end_quietly(run_id, "FAILED")
        raise


def _lost_store(error: BaseException) -> TrackingError:
    """One line for a store that stopped answering in the middle of a run."""
    uri = _redact(mlflow.get_tracking_uri())
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return TrackingError(f"tracking: lost the MLflow store {uri} during the run ({detail[:160]}); local outputs "
                         f"are kept; when the store is back, rerun (`dvc repro`) to record the run")


def _end_quietly(run_id: str, status: str) -> None:
    """End the active run with `status`. If the store is gone (a server that went away), keep
    the original error, and remember the run so the next connection to that store closes it."""
    uri = mlflow.get_tracking_uri()
    try:
        mlflow.end_run(status)
    except Exception as error:  # the original exception matters more
        _remember_unclosed(uri, run_id, status)
        print(f"reprolab: warning: could not mark MLflow run {run_id} {status} ({str(error).splitlines()[0][:200]}); "
              f"the next reprolab command that reaches {_redact(uri)} will mark it", file=sys.stderr)


def _unclosed_file() -> Path:
    return repo_root() / UNCLOSED_RUNS


def _remember_unclosed(uri: str, run_id: str, status: str) -> None:
    from filelock import FileLock

    path = _unclosed_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"), path.open("a") as handle:
        handle.write(json.dumps({"uri": uri, "run_id": run_id, "status": status}) + "\n")


def close_unclosed_runs(client: MlflowClient, uri: str) -> list[str]:
    """Mark the runs this repository could not close on `uri` (it was unreachable then) with the
    status they should have had; return their ids. Other stores' entries are kept."""
    from filelock import FileLock

    path = _unclosed_file()
    if not path.is_file():
        return []
    closed, kept = [], []
    with FileLock(f"{path}.lock"):
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            if entry["uri"] != uri:
                kept.append(line)
                continue
            try:
                if client.get_run(entry["run_id"]).info.status == "RUNNING":
                    client.set_terminated(entry["run_id"], entry["status"])
                closed.append(entry["run_id"])
            except MlflowException:
                kept.append(line)
        if kept:
            path.write_text("\n".join(kept) + "\n")
        else:
            path.unlink()
    for run_id in closed:
        print(f"reprolab: marked MLflow run {run_id} as ended (it was interrupted while the store was unreachable)",
              file=sys.stderr)
    return closed


def _create_run(client: MlflowClient, experiment_id: str, run_name: str, tags: dict[str, str],
                start_time: Optional[int] = None) -> str:
    try:
        return client.create_run(experiment_id, run_name=run_name, tags=tags, start_time=start_time).info.run_id
    except STORE_ERRORS as error:
        raise TrackingError(f"tracking: could not start the MLflow run: {str(error).splitlines()[0][:300]}") \
            from error


@contextmanager
def training_run(config: Config, run: RunConfig, data, kind: str = "train", run_name: Optional[str] = None,
                 tags: Optional[dict[str, str]] = None, log_model: Optional[bool] = None,
                 started_s_ago: float = 0.0) -> Iterator[TrackedRun]:
    """Open a run for one training invocation, with params, config, dataset and tags logged.

    `kind` is the `reprolab.kind` tag ("train" for pipeline runs, "audit" for the ablation's);
    `tags` are added to the standard ones; `log_model` overrides `tracking.log_model`;
    `started_s_ago` backdates the start of a run recorded after its training (the audit's).
    """
    if not config.tracking.enabled:
        yield TrackedRun(None, None)
        return
    client, experiment_id = connect(config.tracking)
    tags = {"reprolab.kind": kind, "reprolab.preset": run.preset, "reprolab.seed": str(run.seed),
            "reprolab.dataset_digest": data.digest, "mlflow.note.content":
            config.experiments[run.preset].description, **provenance_tags(), **(tags or {})}
    run_id = _create_run(client, experiment_id, run_name or f"{run.preset}-seed{run.seed}", tags,
                         int((time.time() - started_s_ago) * 1000))
    with _active(run_id):
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in flatten(to_dict(run)).items()])
        client.log_text(run_id, yaml.safe_dump(to_dict(config), sort_keys=False), "config/params.yaml")
        client.log_text(run_id, yaml.safe_dump(to_dict(run), sort_keys=False), "config/run.yaml")
        _log_dataset(data, config)
        yield TrackedRun(client, run_id, config.tracking.log_model if log_model is None else log_model)


def _log_dataset(data, config: Config) -> None:
    import mlflow.data

    source = str(data.path) if data.path else config.data.prepared_path
    for split, context in (("train", "training"), ("val", "validation"), ("test", "test")):
        arrays = data.splits[split]
        with warnings.catch_warnings():
            # A local path matches two identically named source types ("" and "file" schemes).
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_numpy(arrays.X, targets=arrays.y, source=source, name=f"{data.name}-{split}",
                                             digest=data.digest[:MLFLOW_DIGEST_LENGTH])
        mlflow.log_input(dataset, context=context, tags={"sha256": data.digest, "split": split})


@contextmanager
def resume_run(config: Config, run_id: str) -> Iterator[TrackedRun]:
    """Reopen a training run (for evaluation) and end it again as training did."""
    if not config.tracking.enabled:
        yield TrackedRun(None, None)
        return
    client, _ = connect(config.tracking)
    try:
        client.get_run(run_id)
    except MlflowException as error:
        raise TrackingError(f"tracking: MLflow run {run_id} is not in {_redact(tracking_uri(config.tracking))}; "
                            f"rerun training with `dvc repro --force train@<preset>`") from error
    with _active(run_id):
        yield TrackedRun(client, run_id)


def log_summary_run(config: Config, run_name: str, kind: str, files: Sequence[Path], tags: dict[str, str],
                    note: str, metrics: Optional[dict[str, float]] = None) -> Optional[str]:
    """A run that holds a report: its files as artifacts (under `kind/`), tags linking the runs it
    summarises, a note shown in the UI, and optional summary metrics."""
    if not config.tracking.enabled:
        return None
    client, experiment_id = connect(config.tracking)
    tags = {"reprolab.kind": kind, **provenance_tags(), **tags, "mlflow.note.content": note}
    run_id = _create_run(client, experiment_id, run_name, tags)
    with _active(run_id):
        if metrics:
            now = int(time.time() * 1000)
            client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for path in files:
            client.log_artifact(run_id, str(path), kind)
    return run_id
