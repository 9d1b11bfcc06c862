"""A team's setup for real: an MLflow server on PostgreSQL (scripts/mlflow-server.sh), the
pipeline and the audit logging to it, two queued experiments at once, the server dying
mid-run, and the UI checked in headless Chromium.

Needs PostgreSQL's server binaries and Debian's chromium (`.ci/run` installs them); without
them these tests skip, which CI (REPROLAB_NO_SKIP=1) turns into failures.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import (
    PRESETS,
    REPO_ROOT,
    clean_env,
    commit,
    copy_repository,
    mlflow_uri,
    queue_two_experiments,
    retraining,
    runs,
    set_in_yaml,
    sh,
    shorten_pipeline,
)

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(900)]
SCRIPT = REPO_ROOT / "scripts/mlflow-server.sh"
CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """The script's PostgreSQL + MLflow server in a state directory of its own."""

    def __init__(self, state: Path, auth: bool = False):
        self.state, self.pg_port, self.port, self.auth = state, free_port(), free_port(), auth
        self.uri = f"http://127.0.0.1:{self.port}"

    def script(self, command: str) -> subprocess.CompletedProcess:
        env = clean_env(
            STATE_DIR=str(self.state), PG_PORT=str(self.pg_port), MLFLOW_PORT=str(self.port), AUTH=str(int(self.auth))
        )
        done = subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"mlflow-server.sh {command}: {done.stdout}{done.stderr}"
        return done

    def crash(self) -> None:
        """SIGKILL the whole server process group, as a crash or an OOM kill would."""
        os.killpg(int((self.state / "mlflow.pid").read_text()), signal.SIGKILL)

    def sql(self, query: str) -> list[list[str]]:
        done = subprocess.run(
            [
                "psql",
                "-X",
                "-tA",
                "-F",
                "\t",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.pg_port),
                "-U",
                "mlflow",
                "-d",
                "mlflow",
                "-c",
                query,
            ],
            env={**os.environ, "PGPASSFILE": str(self.state / "pgpass")},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return [line.split("\t") for line in done.stdout.splitlines() if line]


def start_server(auth: bool = False):
    """A started server in a fresh state directory, destroyed afterwards (also on failure)."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb") or not shutil.which("psql"):
        pytest.skip("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    # Not under pytest's private tmp: the postgres OS user must be able to enter the directory.
    state = Path(tempfile.mkdtemp(prefix="reprolab-server-"))
    state.chmod(0o755)
    server = Server(state, auth)
    try:
        server.script("start")
        yield server
    finally:
        try:
            server.script("destroy")
        finally:
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    yield from start_server()


@pytest.fixture(scope="module")
def repo(tmp_path_factory, server) -> Path:
    """A shortened copy of the project after `dvc repro` against the server."""
    repo = copy_repository(tmp_path_factory.mktemp("server"))
    shorten_pipeline(repo)
    set_in_yaml(repo / "conf/config.yaml", r"^  - tracking: sqlite", "  - tracking: server")
    set_in_yaml(repo / "conf/tracking/server.yaml", r"^uri: .*", f"uri: {server.uri}")
    sh(repo, "reprolab", "compose")
    commit(repo, "short epochs, tracking=server")
    sh(repo, "dvc", "repro")
    return repo


def test_pipeline_and_audit_land_on_the_server_and_in_postgresql(repo, server):
    import mlflow.pytorch
    import numpy as np
    import torch

    from reprolab.config import load_params
    from reprolab.data import load

    assert not (repo / "mlflow.db").exists()  # nothing went to a local store
    train_runs = runs(repo, uri=server.uri)
    assert sorted(run.data.tags["reprolab.preset"] for run in train_runs) == sorted(PRESETS)
    digest = json.loads((repo / "results/data.json").read_text())["digest"]
    os.chdir(repo)
    try:
        val = load(load_params(repo / "params.yaml").data).splits["val"]
    finally:
        os.chdir(REPO_ROOT)
    for run in train_runs:
        preset = run.data.tags["reprolab.preset"]
        assert run.info.status == "FINISHED" and run.info.artifact_uri.startswith("mlflow-artifacts:")
        metrics = json.loads((repo / f"results/{preset}/train.json").read_text())["metrics"]
        assert run.data.metrics["val_accuracy"] == metrics["val_accuracy"]
        (dataset_input, *_) = run.inputs.dataset_inputs
        assert dataset_input.dataset.digest == digest[:36]
        # The model, served back by the server, reproduces the logged accuracy.
        # Into a folder of the test's: MLflow leaves the one it would make itself in /tmp.
        with mlflow_uri(server.uri), tempfile.TemporaryDirectory() as into:
            model = mlflow.pytorch.load_model(f"models:/{run.outputs.model_outputs[0].model_id}", dst_path=into)
        with torch.no_grad():
            predicted = model.eval()(torch.from_numpy(val.X)).argmax(dim=1).numpy()
        assert float(np.mean(predicted == val.y)) == pytest.approx(metrics["val_accuracy"], abs=1e-7)
        # The same run, straight from PostgreSQL's tables.
        run_id = run.info.run_id
        assert server.sql(f"SELECT status FROM runs WHERE run_uuid = '{run_id}'") == [["FINISHED"]]
        ((value,),) = server.sql(
            f"SELECT value FROM latest_metrics WHERE run_uuid = '{run_id}' AND key = 'val_accuracy'"
        )
        assert float(value) == pytest.approx(metrics["val_accuracy"], abs=1e-9)
        ((epochs,),) = server.sql(
            f"SELECT count(*) FROM metrics WHERE run_uuid = '{run_id}' AND key = 'epoch/val_accuracy'"
        )
        assert int(epochs) == int(run.data.metrics["epochs_run"])
        assert server.sql(f"SELECT value FROM params WHERE run_uuid = '{run_id}' AND key = 'preset'") == [[preset]]
        assert (
            server.sql(
                f"SELECT d.digest FROM inputs i JOIN datasets d ON d.dataset_uuid = i.source_id "
                f"WHERE i.destination_type = 'RUN' AND i.destination_id = '{run_id}'"
            )
            == [[digest[:36]]] * 3
        )
        assert len(server.sql(f"SELECT model_id FROM logged_models WHERE source_run_id = '{run_id}'")) == 1
    # The audit's 32 runs and its summary run, with the report served as artifacts.
    summary = json.loads((repo / "reports/audit/summary.json").read_text())
    audit_runs = [
        r for r in runs(repo, "audit", uri=server.uri) if r.data.tags["reprolab.audit_id"] == summary["audit_id"]
    ]
    # before and after with seed 0 are the pipeline's baseline and regularized runs, and with seed
    # 1 the report's (every preset over audit.seeds): reused.
    assert summary["runs_reused"] == 4 and len(audit_runs) == 2**4 * 2 - 4
    assert {r.info.status for r in audit_runs} == {"FINISHED"}
    (summary_run,) = runs(repo, "audit-summary", uri=server.uri)
    from mlflow.tracking import MlflowClient

    artifacts = {a.path for a in MlflowClient(server.uri).list_artifacts(summary_run.info.run_id, "audit-summary")}
    assert "audit-summary/ablation.png" in artifacts and "audit-summary/audit.md" in artifacts
    assert server.sql("SELECT DISTINCT status FROM runs") == [["FINISHED"]]


def test_a_run_on_the_server_reproduces_identically(repo, server):
    run_id = json.loads((repo / "results/lstm/train.json").read_text())["mlflow_run_id"]
    done = sh(repo, "reprolab", "reproduce", run_id)
    assert f"lstm-seed0 ({run_id}): identical" in done.stdout, done.stdout
    (again,) = [r for r in runs(repo, "reproduce", uri=server.uri) if r.data.tags["reprolab.reproduces"] == run_id]
    assert again.info.status == "FINISHED" and again.info.artifact_uri.startswith("mlflow-artifacts:")
    assert server.sql(f"SELECT value FROM tags WHERE run_uuid = '{run_id}' AND key = 'reprolab.reproduced'") == [
        ["identical"]
    ]


def test_the_ui_lists_the_runs_with_their_validation_accuracy(repo, server, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts/check_mlflow_ui.py"),
            "--uri",
            server.uri,
            "--screenshots",
            str(tmp_path),
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for preset in ("baseline", "regularized"):
        value = json.loads((repo / f"results/{preset}/train.json").read_text())["metrics"]["val_accuracy"]
        assert f"{preset}-seed0 {value!r}" in done.stdout
    from matplotlib import image

    for name in ("runs.png", "compare.png"):
        pixels = image.imread(tmp_path / name)
        assert pixels.shape[1] == 1600 and pixels.shape[0] >= 1000
        assert pixels.std() > 0.05  # a page, not a blank image


def test_two_queued_experiments_log_concurrently(repo, server):
    before = {run.info.run_id for run in runs(repo, uri=server.uri)}
    status = queue_two_experiments(repo)
    assert "Failed" not in status and status.count("Success") == 2, status
    new = [run for run in runs(repo, uri=server.uri) if run.info.run_id not in before]
    lstm = [run for run in new if run.data.tags["reprolab.preset"] == "lstm"]
    assert {run.data.params["model.hidden_size"] for run in lstm} == {"8", "12"}
    assert all(run.info.status == "FINISHED" and "val_accuracy" in run.data.metrics for run in new)


def digest_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_server_dying_mid_run_fails_fast_keeps_outputs_and_recovers(repo, server):
    # Outputs are `persist: true` and written all at once: the interrupted stage leaves every
    # file as it was, its own preset's included.
    kept = [
        repo / "data/prepared/synthetic_small.npz",
        *(repo / f"models/{p}.npz" for p in PRESETS),
        *(repo / f"results/{p}/metrics.json" for p in PRESETS),
        repo / "results/baseline/train.json",
    ]
    hashes = {path: digest_of(path) for path in kept}
    preset_file = repo / "conf/preset/baseline.yaml"
    original = preset_file.read_text()
    set_in_yaml(preset_file, r"^  lr: 0.01", "  lr: 0.01\n  max_epochs: 100000")  # runs until the crash
    sh(repo, "reprolab", "compose")
    known = {run.info.run_id for run in runs(repo, uri=server.uri)}
    log = repo.parent / "crash.log"
    with log.open("w") as output:  # a file, not a pipe: the stage's worker could outlive it
        process = subprocess.Popen(
            ["dvc", "repro", "train@baseline"],
            cwd=repo,
            env=clean_env(code_from=repo),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        from mlflow.tracking import MlflowClient

        client, deadline, live = MlflowClient(server.uri), time.time() + 120, None
        while live is None and time.time() < deadline and process.poll() is None:
            time.sleep(1)
            new = [run for run in runs(repo, uri=server.uri) if run.info.run_id not in known]
            if new and client.get_metric_history(new[0].info.run_id, "epoch/val_accuracy"):
                live = new[0]  # training, and its epochs reach the server
        assert live is not None, "the run never streamed epochs to the server"
        server.crash()
        crashed = time.perf_counter()
        process.wait(timeout=120)
        failed_after = time.perf_counter() - crashed
    finally:
        process.kill()
        process.wait(timeout=60)
        preset_file.write_text(original)
    output = log.read_text()
    assert process.returncode != 0
    assert failed_after < 20, f"took {failed_after:.1f} s to notice the server was gone"
    errors = [line for line in output.splitlines() if line.startswith("reprolab: error:")]
    assert len(errors) == 1 and "lost the MLflow store" in errors[0] and "rerun" in errors[0], output
    assert {path: digest_of(path) for path in kept} == hashes  # local outputs untouched
    assert not list((repo / "models").glob(".*.tmp")) and not list((repo / "results/baseline").glob(".*.tmp"))

    # The server comes back and the change is undone: the kept outputs are the locked ones, so
    # `dvc repro` trains nothing (check_params alone re-runs: it had passed the change). The next
    # command that reaches the store closes the interrupted run (its process is gone) and
    # records a complete one.
    server.script("start")
    sh(repo, "reprolab", "compose")
    repro = sh(repo, "dvc", "repro")
    assert "Running stage 'train@" not in repro.stdout and "Running stage 'check_params'" in repro.stdout, repro.stdout
    done = sh(repo, "reprolab", "train", "experiment=baseline", "--no-progress")
    client = MlflowClient(server.uri)
    assert client.get_run(live.info.run_id).info.status == "KILLED"
    assert f"marked MLflow run {live.info.run_id}" in done.stderr + done.stdout
    assert server.sql("SELECT count(*) FROM runs WHERE status = 'RUNNING'") == [["0"]]
    newest = max(
        (r for r in runs(repo, uri=server.uri) if r.data.tags["reprolab.preset"] == "baseline"),
        key=lambda r: r.info.start_time,
    )
    assert newest.info.status == "FINISHED" and "val_accuracy" in newest.data.metrics
    assert json.loads(sh(repo, "dvc", "status", "--json").stdout) == {}
    assert yaml.safe_load((repo / "params.yaml").read_text())["experiments"]["baseline"]["train"]["max_epochs"] == 4


def test_a_store_lost_during_reproduce_keeps_the_result_and_the_next_try_records_it_untrained(repo, server):
    """The server dies while reproduce retrains: one line says so and where the result is kept;
    once it is back, reproduce records that result without training again, and drops it."""
    long = ["experiment=baseline", "seed=7", "experiments.baseline.train.max_epochs=400", "--no-progress"]
    done = sh(repo, "reprolab", "train", *long, timeout=900)
    run_id = json.loads(done.stdout[done.stdout.index("{") :])["mlflow_run_id"]
    log = repo.parent / "reproduce-lost.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            ["reprolab", "reproduce", run_id], cwd=repo, env=clean_env(code_from=repo), stdout=output, stderr=output
        )
    try:
        retraining(process.pid)
        server.crash()
        code = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
        server.script("start")
    errors = [line for line in log.read_text().splitlines() if line.startswith("reprolab: error:")]
    kept = repo / ".reprolab/kept" / f"{run_id}.json"
    assert code == 2 and len(errors) == 1, log.read_text()
    assert f"before the reproduction of run {run_id} was recorded" in errors[0] and str(kept) in errors[0]
    assert kept.is_file()
    again = sh(repo, "reprolab", "reproduce", run_id, timeout=600)
    assert f"run {run_id}: recording the result its retraining gave here at" in again.stderr, again.stderr
    assert "(not training again)" in again.stderr and f"({run_id}): identical" in again.stdout, again.stdout
    assert not kept.exists()


# -- a team's server with MLflow's basic-auth app ---------------------------------------------


@pytest.fixture(scope="module")
def auth_server():
    yield from start_server(auth=True)


def train_against(server: Server, tmp_path: Path, **credentials: str) -> subprocess.CompletedProcess:
    env = clean_env(warm=True, MLFLOW_TRACKING_URI=server.uri, **credentials)
    return subprocess.run(
        [
            "reprolab",
            "--config-dir",
            str(REPO_ROOT / "conf"),
            "train",
            "data=synthetic_small",
            f"data.prepared_path={tmp_path / 'small.npz'}",
            "experiments.regularized.train.max_epochs=2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_client_without_credentials_is_refused_and_secrets_stay_out_of_the_store(auth_server, tmp_path, monkeypatch):
    password = (auth_server.state / "admin-password").read_text().strip()
    pg_password = (auth_server.state / "pgpass").read_text().strip().rsplit(":", 1)[1]
    refused = train_against(auth_server, tmp_path)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "401" in line and "MLFLOW_TRACKING_USERNAME" in line and "Traceback" not in refused.stderr
    wrong = train_against(auth_server, tmp_path, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD="wrong")
    assert wrong.returncode == 2 and "401" in wrong.stderr

    done = train_against(auth_server, tmp_path, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout[done.stdout.index("{") :])["mlflow_run_id"]
    assert auth_server.sql(f"SELECT status FROM runs WHERE run_uuid = '{run_id}'") == [["FINISHED"]]

    # A known user who may only read (the server's default permission) is told what to ask for.
    from mlflow.server.auth.client import AuthServiceClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    AuthServiceClient(auth_server.uri).create_user("reader", "a-reader-password-1")
    reader = train_against(
        auth_server, tmp_path, MLFLOW_TRACKING_USERNAME="reader", MLFLOW_TRACKING_PASSWORD="a-reader-password-1"
    )
    assert reader.returncode == 2 and "Traceback" not in reader.stderr, reader.stderr
    (line,) = reader.stderr.strip().splitlines()
    assert "refused reader permission" in line and "EDIT" in line and "tracking.experiment_name" in line, line
    assert auth_server.sql("SELECT count(*) FROM runs WHERE status = 'RUNNING'") == [["0"]]

    # What the auth protects is not readable around it on the server's host.
    artifacts = [auth_server.state / "artifacts", *(auth_server.state / "artifacts").rglob("*")]
    for path in [*artifacts, auth_server.state / "mlflow.log"]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
    # Neither password is in the tracking store's tables, its artifacts, the logs, or any
    # process's command line.
    for secret in (password, pg_password):
        for database in ("mlflow", "mlflow_auth"):
            dump = subprocess.run(
                ["pg_dump", "-h", "127.0.0.1", "-p", str(auth_server.pg_port), "-U", "mlflow", database],
                env={**os.environ, "PGPASSFILE": str(auth_server.state / "pgpass")},
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            ).stdout
            assert "CREATE TABLE" in dump and secret not in dump
        for path in (auth_server.state / "artifacts").rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes(), path
        for log in auth_server.state.glob("*.log"):
            assert secret not in log.read_text(errors="replace"), log
        for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
            try:
                assert secret.encode() not in Path(cmdline).read_bytes(), cmdline
            except OSError:
                pass  # the process ended meanwhile


def test_the_script_refuses_to_serve_beyond_loopback_without_auth(tmp_path):
    env = clean_env(STATE_DIR=str(tmp_path / "state"), MLFLOW_HOST="0.0.0.0", AUTH="0", PG_PORT=str(free_port()))
    done = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
    try:
        assert done.returncode != 0 and "set AUTH=1" in done.stderr
    finally:
        subprocess.run([str(SCRIPT), "destroy"], env=env, capture_output=True, text=True, timeout=300)


def test_reprolab_ui_stops_everything_it_started_at_sigterm(tmp_path):
    """`reprolab ui` serves a SQLite store until SIGTERM (or Ctrl-C), which stops the UI and every
    process it started: the port closes and none of them is left; MLflow's job runner is off."""
    import psutil

    from conftest import REPROLAB, new_store

    new_store(tmp_path)
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        ui = subprocess.Popen(
            [*REPROLAB, "ui", "--port", str(port)], cwd=tmp_path, env=clean_env(), stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert ui.poll() is None, log.read_text()
            time.sleep(0.5)
        else:
            raise AssertionError(f"the UI never answered on {port}: {log.read_text()}")
        started = psutil.Process(ui.pid).children(recursive=True)
        assert started and not [p for p in started if "huey" in " ".join(p.cmdline())]
        assert f"http://127.0.0.1:{port}/#/experiments/" in log.read_text()
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=60) == 130, log.read_text()
        _, alive = psutil.wait_procs(started, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait(timeout=60)
