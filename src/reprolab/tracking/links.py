"""Where things are in the MLflow UI, and the runs that a reference names (a run id,
`runs:/`, a UI URL, `models:/`).
"""

from __future__ import annotations

from typing import Optional

from mlflow.exceptions import MlflowException

from reprolab.config import Config
from reprolab.entrypoint import one_line
from reprolab.tracking.failures import TrackingError, during_run, redact
from reprolab.tracking.registry import REGISTERED_MODEL
from reprolab.tracking.store import Store, connect, tracking_uri

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


_RUN_ID = r"[0-9a-f]{32}"


# A run id alone, after `runs:/`, or in a UI URL's `/runs/<id>`.
_RUN_REFERENCE = rf"(?:^runs:/|/runs/|^)({_RUN_ID})(?:$|[/?#])"


def names_a_run(text: str) -> bool:
    """Whether `text` has the form of a run reference that `resolve_run` reads."""
    import re

    return text.startswith(("models:/", "runs:/")) or re.search(_RUN_REFERENCE, text) is not None


@during_run
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
