"""Sweeps on a real Dask cluster: a scheduler and two workers started with Dask's own CLI on
127.0.0.1 as separate processes, one worker killed while it trains; the results equal the local
backend's, and the cluster is torn down even when a test fails."""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (
    BIN,
    REPROLAB,
    assert_finished_compare_runs,
    clean_env,
    logged_process,
    new_store,
    reprolab,
    runs,
    small_overrides,
)

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.timeout(900)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """`dask scheduler` and `dask worker`s, each in its own process group, logging to files."""

    def __init__(self, logs: Path):
        self.logs, self.port = logs, free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(
            [str(BIN / "dask"), *args],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def up(self, workers: int) -> None:
        # --host binds the comm port only: each process also serves HTTP (health, metrics) on
        # all interfaces unless --dashboard-address says otherwise.
        loopback = ("--dashboard-address", "127.0.0.1:0")
        self.start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port), *loopback)
        for index in range(workers):
            self.add_worker(index)
        from distributed import Client

        # On a loaded machine the scheduler can take minutes to start answering: try again until
        # a deadline, and say what its log says if it never does.
        deadline, failure = time.monotonic() + 300, None
        while time.monotonic() < deadline:
            assert self.processes["scheduler"].poll() is None, (self.logs / "scheduler.log").read_text()
            try:
                with Client(self.address, timeout=30) as client:
                    client.wait_for_workers(workers, timeout=max(1, deadline - time.monotonic()))
                return
            except (OSError, TimeoutError) as error:  # distributed's timeouts are OSError or TimeoutError
                failure = error
                time.sleep(1)
        raise AssertionError(
            f"the cluster did not come up in 300 s ({failure}): {(self.logs / 'scheduler.log').read_text()}"
        )

    def add_worker(self, index: int) -> None:
        self.start(
            f"worker-{index}",
            "worker",
            self.address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--name",
            f"worker-{index}",
            "--dashboard-address",
            "127.0.0.1:0",
        )

    def kill(self, name: str) -> None:
        """SIGKILL a worker's whole process group (its nanny and the worker process)."""
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait(timeout=30)

    def down(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)


@pytest.fixture
def cluster(tmp_path):
    cluster = Cluster(tmp_path)
    try:
        cluster.up(workers=2)
        yield cluster
    finally:
        cluster.down()


def metrics(runs_csv: Path) -> dict[tuple[str, str], tuple[str, str, str]]:
    with runs_csv.open() as handle:
        return {
            (row["configuration"], row["seed"]): (row["val_accuracy"], row["train_accuracy"], row["test_accuracy"])
            for row in csv.DictReader(handle)
        }


def running_runs(store: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(store) as connection:
        return [row[0] for row in connection.execute("SELECT run_uuid FROM runs WHERE status = 'RUNNING'")]


def test_an_audit_on_dask_survives_a_killed_worker_and_equals_the_local_one(cluster, tmp_path):
    local_dir, dask_dir = tmp_path / "local", tmp_path / "dask"
    local_dir.mkdir()
    dask_dir.mkdir()
    new_store(local_dir)
    new_store(dask_dir)
    local = reprolab(
        local_dir, "audit", "--seeds", "0-1", "--workers", "2", "--no-models", "--output-dir", "out",
        *small_overrides(local_dir, 40),
    )  # fmt: skip
    assert local.returncode == 0, local.stderr

    from distributed import Client

    argv = [*REPROLAB, "audit", "--seeds", "0-1", "--no-models",
            "--scheduler", cluster.address, "--output-dir", "out", *small_overrides(dask_dir, 40)]  # fmt: skip
    with logged_process(argv, dask_dir, tmp_path / "audit.log", warm=True) as audit:
        with Client(cluster.address, timeout=60) as client:
            names = {address: info["name"] for address, info in client.scheduler_info()["workers"].items()}
            victim, deadline = None, time.time() + 300
            # Jobs last about a second: watch closely and kill the first worker seen in a job.
            while victim is None and time.time() < deadline and audit.poll() is None:
                time.sleep(0.05)
                busy = [names[address] for address, tasks in client.processing().items() if tasks]
                victim = busy[0] if busy else None
            assert victim is not None, (tmp_path / "audit.log").read_text()
            cluster.kill(victim)
        code = audit.wait(timeout=600)
    output = (tmp_path / "audit.log").read_text()
    assert code == 0, output
    assert metrics(dask_dir / "out/runs.csv") == metrics(local_dir / "out/runs.csv")
    assert not running_runs(dask_dir / "mlflow.db")
    assert (dask_dir / "out/audit.md").read_text().count("**Verdict.**") == 1


def test_a_sweep_whose_data_died_with_its_workers_sends_it_again(cluster, tmp_path):
    """Dask reruns a lost worker's jobs but not data scattered to it: the workers holding the
    dataset die, and a new one, started after them, holds none of it."""
    from distributed import Client

    new_store(tmp_path)
    argv = [*REPROLAB, "compare", "--presets", "baseline", "--seeds", "0-5", "--retrain",
            "--scheduler", cluster.address, *small_overrides(tmp_path, 150)]  # fmt: skip
    with logged_process(argv, tmp_path, tmp_path / "compare.log", warm=True) as compare:
        with Client(cluster.address, timeout=60) as client:
            deadline = time.time() + 300
            while not any(client.processing().values()) and time.time() < deadline and compare.poll() is None:
                time.sleep(0.05)
            data = [key for key in client.who_has() if str(key).startswith("Dataset-")]
            assert data
            # Both holders die before a new worker starts, so it cannot fetch the data from them
            # (started before the kill, it could: a queued job sent to it copies the dataset over).
            cluster.kill("worker-0")
            cluster.kill("worker-1")
            cluster.add_worker(2)
            client.wait_for_workers(1, timeout=120)
        code = compare.wait(timeout=600)
    output = (tmp_path / "compare.log").read_text()
    assert code == 0, output
    assert "lost a dataset with a worker" in output and "Traceback" not in output
    assert_finished_compare_runs(tmp_path, 6)


def test_compare_through_the_environment_variable_equals_the_local_one(cluster, tmp_path):
    tables = {}
    for backend, env in (("local", {}), ("dask", {"DASK_SCHEDULER_ADDRESS": cluster.address})):
        work = tmp_path / backend
        work.mkdir()
        new_store(work)
        done = reprolab(
            work, "compare", "--seeds", "0-1", "--presets", "baseline,gru", *small_overrides(work, 40), env=env
        )
        assert done.returncode == 0, done.stderr
        # The numbers, not the run ids (each store names its own runs).
        tables[backend] = [
            re.sub(r"`[0-9a-f]{32}`", "`id`", line) for line in done.stdout.splitlines() if line.startswith("| ")
        ]
    assert tables["dask"] == tables["local"] and len(tables["local"]) > 6
    # The Dask sweep's runs, reproduced on the cluster from its summary run: identical.
    work = tmp_path / "dask"
    (summary,) = runs(work, "compare-summary", uri=f"sqlite:///{work / 'mlflow.db'}")
    done = reprolab(work, "reproduce", summary.info.run_id, "--scheduler", cluster.address, *small_overrides(work, 40))
    assert done.stdout.count(": identical") == 4 and "the comparison stands" in done.stdout, done.stdout


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    new_store(tmp_path)
    done = reprolab(
        tmp_path, "compare", "--seeds", "0-1", "--scheduler", f"tcp://127.0.0.1:{free_port()}",
        *small_overrides(tmp_path, 40), check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "cannot reach the Dask scheduler" in line and "dask scheduler" in line


def test_the_cli_starts_processes_that_stay_on_loopback(cluster):
    """Every socket the cluster's processes listen on is bound to 127.0.0.1."""
    import psutil

    pids = {process.pid for process in cluster.processes.values()}
    pids |= {child.pid for pid in list(pids) for child in psutil.Process(pid).children(recursive=True)}
    listening = [
        connection.laddr.ip
        for connection in psutil.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.pid in pids
    ]
    assert listening and set(listening) == {"127.0.0.1"}, listening
