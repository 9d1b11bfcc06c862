"""Tracking helpers that need no pipeline: URIs, flattening, store creation, failing fast."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from conftest import CONF_DIR, new_store, quick_overrides, reprolab
from reprolab.config import TrackingConfig, flatten, load_config
from reprolab.tracking.cache import _training_code, run_key
from reprolab.tracking.failures import TrackingError, during_run, redact
from reprolab.tracking.registry import register_model
from reprolab.tracking.store import _initialized, connect, tracking_uri


def config(uri=None) -> TrackingConfig:
    return TrackingConfig(enabled=True, uri=uri, experiment_name="reprolab", log_model=True, log_sweep_models=False)


def test_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert tracking_uri(config()) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking_uri(config("http://127.0.0.1:5000")) == "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:6000")
    assert tracking_uri(config("http://127.0.0.1:5000")) == "http://127.0.0.1:6000"


def test_a_relative_sqlite_store_resolves_against_the_repository_root(monkeypatch, tmp_path):
    """A queued experiment runs in DVC's temporary copy (the working directory) with DVC_ROOT the
    user's repository: its relative store is the user's, not one deleted with the copy."""
    copy = tmp_path / "dvc-temporary-copy"
    copy.mkdir()
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///stores/rel.db")
    assert tracking_uri(config()) == f"sqlite:///{tmp_path.resolve()}/stores/rel.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(config("sqlite:///rel.db")) == f"sqlite:///{tmp_path.resolve()}/rel.db"
    assert tracking_uri(config(f"sqlite:///{copy}/abs.db")) == f"sqlite:///{copy}/abs.db"


def test_flatten_and_redact():
    assert flatten({"a": {"b": 1, "c": {"d": None}}, "e": "x"}) == {"a.b": 1, "a.c.d": None, "e": "x"}
    assert redact("postgresql://user:secret@db:5432/mlflow") == "postgresql://***@db:5432/mlflow"


def test_an_unreachable_server_fails_fast_with_one_line():
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.perf_counter()
    with pytest.raises(TrackingError) as caught:
        connect(config(f"http://127.0.0.1:{port}"))
    assert time.perf_counter() - started < 15
    assert f"127.0.0.1:{port}" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.slow  # three processes that each import MLflow and create its tables
def test_parallel_first_use_of_a_new_store_does_not_race(tmp_path):
    """Two processes creating the same new SQLite store: MLflow alone fails one of them."""
    code = (
        "import sys; from reprolab.tracking.store import connect; from reprolab.config import TrackingConfig; "
        "print(connect(TrackingConfig(True, sys.argv[1], 'reprolab', True, False)).experiment_id)"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    processes = [
        subprocess.Popen([sys.executable, "-c", code, uri], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0], outputs
    assert len({out.strip() for out, _ in outputs}) == 1  # one experiment, same id everywhere


def test_the_run_key_is_what_makes_a_result(monkeypatch, tmp_path):
    """Settings, seed, data and training code change the key; names and descriptions do not."""
    import dataclasses
    import shutil

    from conftest import CONF_DIR
    from reprolab import sources
    from reprolab.config import load_config

    config = load_config([], CONF_DIR)
    run = config.run_config("regularized", 0)
    key = run_key(run, "d" * 64)
    renamed = dataclasses.replace(run, preset="after")
    assert run_key(renamed, "d" * 64) == key
    assert run_key(config.run_config("lstm", 0), "d" * 64) != key  # another cell
    assert run_key(config.run_config("regularized", 1), "d" * 64) != key
    assert run_key(run, "e" * 64) != key
    lr = dataclasses.replace(run, train=dataclasses.replace(run.train, lr=0.002))
    assert run_key(lr, "d" * 64) != key

    copy = tmp_path / "reprolab"
    shutil.copytree(sources.PACKAGE_DIR, copy)
    training = copy / "training.py"
    training.write_text(training.read_text() + "\n# a change to the code that trains\n")
    monkeypatch.setattr(sources, "PACKAGE_DIR", copy)
    _training_code.cache_clear()
    try:
        assert run_key(run, "d" * 64) != key
    finally:
        monkeypatch.undo()
        _training_code.cache_clear()
    assert run_key(run, "d" * 64) == key


def test_a_sqlite_stores_artifacts_live_beside_it_whatever_the_directory(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    store = connect(config(f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"))
    location = store.client.get_experiment(store.experiment_id).artifact_location
    assert location == (tmp_path / "team" / "mlruns").as_uri()


def test_a_deleted_experiment_names_the_restore(tmp_path):
    new_store(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    store = connect(config(uri))
    store.client.delete_experiment(store.experiment_id)
    with pytest.raises(TrackingError) as caught:
        connect(config(uri))
    message = str(caught.value)
    assert "was deleted" in message and f"mlflow experiments restore --experiment-id {store.experiment_id}" in message


def test_a_run_deleted_while_in_use_names_the_restore(tmp_path):
    """A run deleted while a command still logs to it (an audit's summary run, say): the store
    is there, so not "lost the MLflow store" but the run and how to restore it."""
    new_store(tmp_path)
    store = connect(config(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    run_id = store.client.create_run(store.experiment_id).info.run_id
    store.client.delete_run(run_id)
    with pytest.raises(TrackingError) as caught:
        during_run(store.client.set_tag)(run_id, "reprolab.note", "late")
    message = str(caught.value)
    assert f"mlflow runs restore --run-id {run_id}" in message and "lost" not in message, message


def _connect_after(uri: str, delay: float, results) -> None:
    time.sleep(delay)
    try:
        connect(config(uri))
        results.put("ok")
    except Exception as error:  # the test reports it
        results.put(f"{type(error).__name__}: {error}")


def _outside_client_after(uri: str, delay: float, results) -> None:
    """MLflow's own client, as `mlflow ui` opens a store: no reprolab code, no lock of ours."""
    time.sleep(delay)
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).search_experiments(max_results=1)
        results.put("ok")
    except Exception as error:  # the test reports it
        results.put(f"outside client: {type(error).__name__}: {error}")


@pytest.mark.slow  # twenty new stores: MLflow's migrations take seconds each
@pytest.mark.timeout(900)
def test_two_commands_starting_on_a_new_store_at_random_offsets_never_fail(tmp_path):
    """Twenty trials: two processes open a new store, the second while the first may be creating
    its tables, and an outside client (MLflow's own) opens it at a random moment too (forked from
    this process, so no start-up cost hides the race). The outside client spells the store's
    path differently, so MLflow's own creation lock, keyed by the URI, does not cover it."""
    import multiprocessing
    import random
    import sqlite3

    context, rng = multiprocessing.get_context("fork"), random.Random(0)
    for trial in range(20):
        uri = f"sqlite:///{tmp_path / f'store-{trial}.db'}"
        results = context.Queue()
        processes = [
            context.Process(target=_connect_after, args=(uri, delay, results)) for delay in (0, rng.uniform(0, 1.5))
        ]
        outside = f"sqlite:///{tmp_path}/./store-{trial}.db"
        processes.append(context.Process(target=_outside_client_after, args=(outside, rng.uniform(0, 1.5), results)))
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        outcomes = [results.get(timeout=5) for _ in processes]
        assert outcomes == ["ok", "ok", "ok"], f"trial {trial}: {outcomes}"
        with sqlite3.connect(tmp_path / f"store-{trial}.db") as database:
            names = [row[0] for row in database.execute("SELECT name FROM sqlite_master")]
        assert not [name for name in names if name.startswith("_alembic_tmp_")], names


def test_a_half_migrated_store_is_named_with_its_repair(tmp_path):
    import sqlite3

    path = tmp_path / "mlflow.db"
    connect(config(f"sqlite:///{path}"))
    with sqlite3.connect(path) as database:
        database.execute("CREATE TABLE _alembic_tmp_tags (key TEXT)")
    _initialized.clear()
    with pytest.raises(TrackingError) as caught:
        connect(config(f"sqlite:///{path}"))
    assert "half-migrated: table _alembic_tmp_tags" in str(caught.value)
    assert f"sqlite3 {path} 'DROP TABLE _alembic_tmp_tags'" in str(caught.value)


@pytest.mark.slow  # trains with `reprolab train`
def test_the_registry_serves_only_the_model_its_run_logged(tmp_path):
    """A model loads by unpickling: its files are checked against the digest its run recorded
    before the `after` alias may point at it."""
    new_store(tmp_path)
    done = reprolab(tmp_path, "train", "--no-progress", *quick_overrides(tmp_path))
    run_id = json.loads(done.stdout[done.stdout.index("{") :])["mlflow_run_id"]
    config = load_config(quick_overrides(tmp_path), CONF_DIR)
    assert register_model(config, run_id, {}) == "1"
    (pickled,) = tmp_path.rglob("model.pth")
    pickled.write_bytes(pickled.read_bytes() + b"\n")  # damaged, or replaced, in the store
    with pytest.raises(TrackingError) as caught:
        register_model(config, run_id, {})
    assert f"the model of MLflow run {run_id} is not the one it logged" in str(caught.value)


def test_a_download_that_fails_on_this_disk_is_an_error_not_a_missing_artifact(tmp_path):
    """Under `ulimit -f` or a full disk, a run's archive is not "not recorded": the download says why."""
    import errno
    from types import SimpleNamespace

    from mlflow.exceptions import MlflowException

    from reprolab.tracking.artifacts import download
    from reprolab.tracking.failures import TrackingError

    def store(error: BaseException):
        def fail(*args):
            raise error

        return SimpleNamespace(client=SimpleNamespace(download_artifacts=fail))

    missing = MlflowException("Failed to download artifacts from path 'x', please ensure that the path is correct.")
    assert download(store(missing), "0" * 32, "x", tmp_path) is None
    wrapped = MlflowException("Failed to download artifacts")
    wrapped.__cause__ = OSError(errno.EFBIG, "File too large")
    for error in (OSError(errno.EFBIG, "File too large"), wrapped):
        with pytest.raises(TrackingError, match=r"could not download source/source\.tar\.gz .*File too large"):
            download(store(error), "0" * 32, "source/source.tar.gz", tmp_path)
