"""Local worker processes of a sweep: one killed costs time, not the sweep; killing the driver
takes its workers with it (issue: "nothing lost when a process stops")."""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import AbstractContextManager
from pathlib import Path

import psutil
import pytest

from conftest import REPROLAB, assert_finished_compare_runs, clean_env, logged_process, new_store, runs, small_overrides

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def compare(work: Path) -> AbstractContextManager[subprocess.Popen]:
    """A local compare of baseline over seeds 0-3 on two workers, long enough to interfere with."""
    new_store(work)
    argv = [*REPROLAB, "compare", "--presets", "baseline", "--seeds", "0-3", "--workers", "2", "--retrain"]
    return logged_process([*argv, *small_overrides(work, 400)], work, work / "compare.log")


def busy_workers(driver: subprocess.Popen, count: int, timeout: float = 120) -> list[psutil.Process]:
    """The driver's worker processes, once `count` of them have trained for a moment."""
    deadline = time.time() + timeout
    while time.time() < deadline and driver.poll() is None:
        workers = [p for p in psutil.Process(driver.pid).children() if _user_seconds(p) > 2.0]
        if len(workers) >= count:
            return workers
        time.sleep(0.2)
    raise AssertionError(f"no {count} busy workers (driver exit status {driver.poll()})")


def _user_seconds(process: psutil.Process) -> float:
    """CPU seconds a child has used; 0 for one that ended meanwhile (the driver's short-lived git)."""
    try:
        return process.cpu_times().user
    except psutil.NoSuchProcess:
        return 0.0


def running_runs(store: Path) -> list[str]:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as connection:
            return [row[0] for row in connection.execute("SELECT run_uuid FROM runs WHERE status = 'RUNNING'")]
    except sqlite3.Error:  # not created yet
        return []


def test_a_killed_worker_costs_time_not_the_sweep(tmp_path):
    with compare(tmp_path) as driver:
        busy_workers(driver, 1)[0].kill()
        code = driver.wait(timeout=500)
    output = (tmp_path / "compare.log").read_text()
    assert code == 0, output
    assert "a worker process died; rerunning the" in output and "Traceback" not in output
    assert sum(line.startswith("| baseline") for line in output.splitlines()) >= 1
    assert_finished_compare_runs(tmp_path, 4)


def test_workers_die_with_their_driver(tmp_path):
    workers: list[psutil.Process] = []
    with compare(tmp_path) as driver:
        try:
            workers = busy_workers(driver, 2)
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=60)
            _, alive = psutil.wait_procs(workers, timeout=30)
            assert not alive, f"workers outlived their driver: {[p.pid for p in alive]}"
        finally:
            for process in workers:
                if process.is_running():
                    process.kill()


def test_a_stage_stops_with_dvc_repro(tmp_path):
    """SIGTERM to `dvc repro` itself: the running stage ends its run KILLED and writes nothing,
    instead of finishing behind DVC's back (a stale dvc.lock, then a duplicate run). DVC runs the
    stage through $SHELL: dash (Debian's /bin/sh) stays between DVC and the stage, the case
    where the stage's own parent outlives DVC."""
    from conftest import copy_repository, set_in_yaml, sh

    repo = copy_repository(tmp_path / "repo")
    set_in_yaml(repo / "conf/train/default.yaml", r"^max_epochs: \d+", "max_epochs: 5000")
    sh(repo, "reprolab", "compose")
    sh(repo, "dvc", "repro", "prepare")
    before = (repo / "results/baseline/train.json").read_bytes()
    with (tmp_path / "repro.log").open("w") as log:
        dvc = subprocess.Popen(
            ["dvc", "repro", "train@baseline"], cwd=repo, env=clean_env(code_from=repo, SHELL="/bin/sh"),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    stage: list[psutil.Process] = []  # the shell and the stage's process
    try:
        deadline = time.time() + 180
        while not stage and time.time() < deadline and dvc.poll() is None:
            time.sleep(0.2)
            if running_runs(repo / "mlflow.db"):  # the stage's run is open, training under way
                found = psutil.Process(dvc.pid).children(recursive=True)
                stage = [p for p in found if "reprolab.stages.train" in " ".join(p.cmdline())]
        assert stage, (tmp_path / "repro.log").read_text()
        dvc.send_signal(signal.SIGKILL)  # DVC gone at once, as after an uncaught signal or a crash
        dvc.wait(timeout=60)
        _, alive = psutil.wait_procs(stage, timeout=60)
        assert not alive, "the stage went on after DVC was gone"
    finally:
        if dvc.poll() is None:
            dvc.kill()
            dvc.wait(timeout=60)
        for process in stage:
            if process.is_running():
                process.kill()
    assert (repo / "results/baseline/train.json").read_bytes() == before
    (run,) = runs(repo)
    assert run.info.status == "KILLED"
