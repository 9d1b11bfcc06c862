"""Where things are in the MLflow UI, and the runs that a reference names (a run id,
`runs:/`, a UI URL, `models:/`).
"""

from __future__ import annotations

import re
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


def ui_links(config: Config, address: str = UI_ADDRESS) -> dict[str, str]:
    """`ui_paths` at the UI's address: the server's, or `reprolab ui`'s (`address`) for a SQLite store."""
    uri = tracking_uri(config.tracking)
    base = address if uri.startswith("sqlite:") else redact(uri).rstrip("/")
    paths = ui_paths(connect(config.tracking).experiment_id, config.data.name)
    return {what: base + path for what, path in paths.items()}


_RUN_ID = r"[0-9a-f]{32}"


# A run id alone, after `runs:/`, or in a UI URL's `/runs/<id>`.
_RUN_REFERENCE = rf"(?:^runs:/|/runs/|^)({_RUN_ID})(?:$|[/?#])"


def names_a_run(text: str) -> bool:
    """Whether `text` has the form of a run reference that `resolve_run` reads."""

    return text.startswith(("models:/", "runs:/")) or re.search(_RUN_REFERENCE, text) is not None


@during_run
def resolve_run(store: Store, reference: str, command: str = "reproduce"):
    """The run that `reference` names: a run id, `runs:/<id>[/path]`, a run's page URL from the
    MLflow UI, `models:/<name>@<alias>`, `models:/<name>/<version>` or `models:/<model id>`."""

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
        run = store.client.get_run(run_id)
    except MlflowException as error:
        raise TrackingError(
            f"{command}: MLflow run {run_id} is not in {redact(store.uri)}; point MLFLOW_TRACKING_URI (or "
            f"tracking.uri) at the store that recorded it"
        ) from error
    if text.startswith(("http://", "https://")):
        _check_page(store, text, run, command)
    return run


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _check_page(store: Store, url: str, run, command: str) -> None:
    """A UI page names its server and experiment: both must be the store's and the run's, or the
    run found here is not the one the page shows."""
    import urllib.parse

    page = urllib.parse.urlsplit(url)
    if store.uri.startswith(("http://", "https://")):
        server = urllib.parse.urlsplit(store.uri)
        same = (page.hostname, page.port) == (server.hostname, server.port)
    else:  # a SQLite store is served by `reprolab ui` on this machine
        same = page.hostname in LOCAL_HOSTS
    if not same:
        raise TrackingError(
            f"{command}: {url} is a page of the MLflow UI at {page.netloc}, but the store here is "
            f"{redact(store.uri)}; point MLFLOW_TRACKING_URI (or tracking.uri) at that server"
        )
    named = re.search(r"/experiments/(\w+)/", page.fragment or page.path)
    if named and named.group(1) != run.info.experiment_id:
        raise TrackingError(
            f"{command}: {url} shows experiment {named.group(1)}, but run {run.info.run_id} is in experiment "
            f"{run.info.experiment_id} of {redact(store.uri)}: this is not the run that page shows"
        )
