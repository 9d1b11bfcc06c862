"""Bad input and faults, as a hostile but fair user would cause them. Every case must end with
one line that names the problem and its fix, exit status != 0, no traceback, nothing
half-written (every file as it was, no temporary file left), and no MLflow run left RUNNING.

docs/failure-modes.md lists the same cases and what happens.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import BIN, CONF_DIR, PRESETS, built_once, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SMALL = [
    "data=synthetic_small",
    "data.prepared_path=data/prepared/small.npz",
    *(f"experiments.{name}.train.max_epochs=2" for name in PRESETS),
    "audit.seeds=[0,1]",  # the report's runs over seeds: 4 more, not 16
]


def run(workdir: Path, *argv: str, env: dict | None = None, preexec: Callable | None = None, timeout: int = 240):
    """`reprolab ...`, or a stage as DVC runs it (`stage:train regularized`), in `workdir`; in the
    warm interpreter unless `preexec` sets up the process (signals, limits: a fresh one then)."""
    warm = preexec is None
    if argv[0].startswith("stage:"):
        command = ["python" if warm else sys.executable, "-m", f"reprolab.stages.{argv[0][6:]}", *argv[1:]]
    else:
        command = ["reprolab" if warm else str(BIN / "reprolab"), *argv]
    return subprocess.run(
        command,
        cwd=workdir,
        env={**clean_env(warm=warm), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec,
    )


def train(workdir: Path) -> None:
    """A working directory after the pipeline's stages ran on the small dataset (2 epochs)."""
    shutil.copytree(CONF_DIR, workdir / "conf")
    steps = [("compose", *SMALL), ("stage:prepare",)]
    steps += [(stage, preset) for preset in PRESETS for stage in ("stage:train", "stage:evaluate")]
    steps += [("stage:report",)]
    for step in steps:
        done = run(workdir, *step)
        assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """Built once per test run (shared by pytest-xdist's workers); each test works on a copy."""
    return built_once(tmp_path_factory, "trained", train)


@pytest.fixture
def workdir(trained, tmp_path) -> Path:
    target = tmp_path / "work"
    shutil.copytree(trained, target)
    return target


def snapshot(workdir: Path) -> dict[str, str]:
    """Every file but the MLflow store, by content."""
    return {
        str(path.relative_to(workdir)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(workdir.rglob("*"))
        if path.is_file() and not str(path.relative_to(workdir)).startswith(("mlflow.db", "mlruns"))
    }


def running_runs(workdir: Path) -> list[str]:
    import sqlite3

    db = workdir / "mlflow.db"
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(db) as connection:
            return [row[0] for row in connection.execute("SELECT run_uuid FROM runs WHERE status = 'RUNNING'")]
    except sqlite3.DatabaseError:
        return []  # a store the case damaged on purpose


def assert_refused(done: subprocess.CompletedProcess, *needles: str) -> str:
    """One line on stderr naming the problem, exit status 2, no traceback."""
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output, output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"reprolab( \w+)?: error: ", lines[0]), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def assert_nothing_lost(workdir: Path, before: dict[str, str]) -> None:
    assert snapshot(workdir) == before
    assert not [path for path in workdir.rglob(".*.tmp")], "temporary files left behind"
    assert not running_runs(workdir)


# -- refusals: (case id, how to set it up, the command, what the line must say) ---------------


def user_file(name: str, **arrays) -> Callable[[Path], None]:
    def write(workdir: Path) -> None:
        np.savez(workdir / name, **arrays)

    return write


def text_file(name: str, content: bytes) -> Callable[[Path], None]:
    def write(workdir: Path) -> None:
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / name).write_bytes(content)

    return write


def truncate(name: str, keep: int) -> Callable[[Path], None]:
    def cut(workdir: Path) -> None:
        path = workdir / name
        path.write_bytes(path.read_bytes()[:keep])

    return cut


def nothing(workdir: Path) -> None:
    pass


RNG = np.random.default_rng(0)
X = RNG.standard_normal((40, 6, 3))
Y = np.arange(40) % 2
USER = ["data=npz", "data.user_file=mine.npz", "data.prepared_path=data/prepared/mine.npz"]


def ragged(workdir: Path) -> None:
    sequences = np.empty(2, dtype=object)
    sequences[0], sequences[1] = np.zeros((3, 2)), np.zeros((5, 2))
    np.savez(workdir / "mine.npz", X=sequences, y=np.array([0, 1]))


def huge(workdir: Path) -> None:
    big = X.copy()
    big[0, 0, 0] = 1e39  # finite as float64, inf as float32
    np.savez(workdir / "mine.npz", X=big, y=Y)


def with_value(name: str, path: str, value) -> Callable[[Path], None]:
    def edit(workdir: Path) -> None:
        file = workdir / name
        data = json.loads(file.read_text())
        node = data
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
        file.write_text(json.dumps(data))

    return edit


def seed_in_params(workdir: Path) -> None:
    params = workdir / "params.yaml"
    params.write_text(params.read_text().replace("\nseed: 0\n", "\nseed: 99999999999\n"))


CASES = [
    # 1. Numeric settings
    ("lr-nan", nothing, ["train", *SMALL, "experiments.regularized.train.lr=nan"], ["train.lr", "finite"]),
    ("lr-inf", nothing, ["train", *SMALL, "experiments.regularized.train.lr=inf"], ["train.lr", "finite"]),
    ("seed-negative", nothing, ["train", *SMALL, "seed=-1"], ["seed: must be in [0,"]),
    ("seed-too-big", nothing, ["train", *SMALL, "seed=4294967296"], ["seed: must be in [0,"]),
    ("epochs-0", nothing, ["train", *SMALL, "experiments.regularized.train.max_epochs=0"], ["max_epochs"]),
    ("batch-0", nothing, ["train", *SMALL, "experiments.regularized.train.batch_size=0"], ["batch_size"]),
    ("hidden-huge", nothing, ["train", *SMALL, "experiments.regularized.model.hidden_size=100000"], ["hidden_size"]),
    ("dropout-1", nothing, ["train", *SMALL, "experiments.regularized.model.dropout=1.0"], ["model.dropout"]),
    ("val-fraction", nothing, ["train", *USER, "data.val_fraction=1.5"], ["data.val_fraction"]),
    ("patience", nothing, ["train", *SMALL, "experiments.gru.train.early_stopping.patience=-1"], ["patience"]),
    ("seeds-repeated", nothing, ["compose", "-o", "-", "audit.seeds=[1,1]"], ["audit.seeds", "repeated"]),
    ("seeds-backwards", nothing, ["compare", "--seeds", "4-0", *SMALL], ["runs backwards", "0-4"]),
    ("seeds-too-many", nothing, ["compare", "--seeds", "0-100000000", *SMALL], ["100000001 seeds", "at most 1000"]),
    ("margin-unmeetable", nothing, ["train", *SMALL, "data.generator.margin=10"], ["data.generator.margin", "[0, 3]"]),
    ("workers-negative", nothing, ["compare", "--workers", "-3", *SMALL], ["--workers", ">= 1"]),
    ("exp-run-seed", seed_in_params, ["stage:check_params"], ["seed: must be in [0,"]),
    # 2. User arrays
    ("overflow-float32", huge, ["train", *USER], ["float32's range", "rescale"]),
    ("inf", user_file("mine.npz", X=np.where(X > 2, np.inf, X), y=Y), ["train", *USER], ["inf values"]),
    ("nan-partial", user_file("mine.npz", X=np.where(X > 2.5, np.nan, X), y=Y), ["train", *USER], ["NaN in some"]),
    ("label-huge", user_file("mine.npz", X=X, y=np.where(Y == 1, 10**6, 0)), ["train", *USER], ["0..K-1"]),
    ("labels-1-based", user_file("mine.npz", X=X, y=Y + 1), ["train", *USER], ["labels are 1..2", "subtract 1"]),
    ("text-as-npz", text_file("mine.npz", b"a,b\n1,2\n"), ["train", *USER], ["not a NumPy .npz archive"]),
    ("ragged-objects", ragged, ["train", *USER], ["Python objects", "pad shorter sequences"]),
    ("four-dims", user_file("mine.npz", X=X[:, :, :, None], y=Y), ["train", *USER], ["[N, steps, features]"]),
    ("empty-file", text_file("mine.npz", b""), ["train", *USER], ["not a NumPy .npz archive"]),
    ("no-sequences", user_file("mine.npz", X=X[:0], y=Y[:0]), ["train", *USER], ["empty"]),
    (
        "lengths",
        user_file("mine.npz", X=X, y=Y, lengths=np.full(40, 9)),
        ["train", *USER],
        ["lengths must be in 1..6"],
    ),
    ("missing-file", nothing, ["train", *USER], ["mine.npz not found"]),
    # 3. Files the project writes and reads back
    ("fit-truncated", truncate("results/gru/train.json", 40), ["stage:evaluate", "gru"], ["not valid JSON"]),
    ("fit-not-a-mapping", text_file("results/gru/train.json", b"[]"), ["stage:evaluate", "gru"], ["not a mapping"]),
    (
        "fit-without-metric",
        with_value("results/gru/train.json", "metrics.val_accuracy", KeyError),
        ["stage:evaluate", "gru"],
        ["metrics.val_accuracy is missing", "dvc repro --force train@gru"],
    ),
    (
        "fit-wrong-type",
        with_value("results/lstm/train.json", "metrics.train_accuracy", "high"),
        ["stage:report"],
        ["metrics.train_accuracy is not int or float"],
    ),
    (
        "history-columns",
        text_file("results/baseline/history.csv", b"epoch,train_loss\nx,y\n"),
        ["stage:report"],
        ["history.csv has no column train_accuracy", "dvc repro --force train@baseline"],
    ),
    (
        "history-value",
        text_file(
            "results/baseline/history.csv",
            b"epoch,train_loss,train_accuracy,train_eval_accuracy,val_loss,val_accuracy\n1,0.5,0.5,0.5,x,0.5\n",
        ),
        ["stage:report"],
        ["history.csv line 2: val_loss 'x' is not float", "dvc repro --force train@baseline"],
    ),
    (
        "predictions-out-of-range",
        text_file("results/gru/test_predictions.csv", b"actual,predicted\n0,7\n"),
        ["stage:report"],
        ["classes outside 0..1"],
    ),
    (
        "data-summary-garbage",
        text_file("results/data.json", b'{"digest": 5}'),
        ["stage:report"],
        ["data.json", "rerun `dvc repro prepare`"],
    ),
    ("params-truncated", truncate("params.yaml", 300), ["stage:train", "gru"], ["params"]),
    ("params-binary", text_file("params.yaml", bytes(range(256))), ["stage:evaluate", "gru"], ["params"]),
    ("params-missing", lambda w: (w / "params.yaml").unlink(), ["stage:report"], ["reprolab compose"]),
    (
        "prepared-truncated",
        truncate("data/prepared/small.npz", 500),
        ["stage:train", "regularized"],
        ["damaged", "dvc repro --force prepare"],
    ),
    ("compose-into-a-dir", nothing, ["compose", "-o", "results"], ["directory stands where a file"]),
    ("compose-unwritable", nothing, ["compose", "-o", "/proc/reprolab/params.yaml"], ["/proc/reprolab"]),
    # 4. MLflow store faults
    ("store-garbage", text_file("mlflow.db", b"not a database " * 100), ["train", *SMALL], ["move it aside"]),
    ("store-truncated", truncate("mlflow.db", 8192), ["train", *SMALL], ["mlflow.db", "cannot be read"]),
    (
        "store-is-a-dir",
        lambda w: ((w / "mlflow.db").unlink(), (w / "mlflow.db").mkdir()),
        ["train", *SMALL],
        ["mlflow.db"],
    ),
]


@pytest.mark.parametrize("name, setup, argv, needles", CASES, ids=[case[0] for case in CASES])
def test_refused_with_one_line_and_nothing_lost(workdir, name, setup, argv, needles):
    setup(workdir)
    before = snapshot(workdir)
    done = run(workdir, *argv)
    assert_refused(done, *needles)
    assert "allow_pickle" not in done.stderr  # never point users at the unsafe way
    assert_nothing_lost(workdir, before)


def test_a_read_only_store_names_the_cause():
    """As root, permissions cannot make the file read-only: the message is checked on the error
    SQLite gives for it."""
    from sqlalchemy.exc import OperationalError

    from reprolab.tracking.failures import store_message as _store_message

    error = OperationalError("INSERT", {}, Exception("attempt to write a readonly database"))
    message = _store_message("sqlite:////data/mlflow.db", error)
    assert "/data/mlflow.db cannot be written (attempt to write a readonly database)" in message
    assert "make the file and its folder writable" in message and "tracking=none" in message


# -- half-done stages: outputs all old or all new ---------------------------------------------


def file_size_limit(limit: int) -> Callable[[], None]:
    """A process that cannot write files beyond `limit` bytes, as on a full disk (EFBIG)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_train_that_cannot_write_its_outputs_keeps_the_old_ones_and_fails_its_run(workdir):
    (workdir / "results/regularized/history.csv").unlink()
    (workdir / "results/regularized/history.csv").mkdir()  # a directory where a file goes
    before = snapshot(workdir)
    done = run(workdir, "stage:train", "regularized")
    assert_refused(done, "history.csv", "a directory stands where a file is expected")
    assert_nothing_lost(workdir, before)  # the model and train.json are the old ones
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    newest = client.search_runs(
        [client.get_experiment_by_name("reprolab").experiment_id], order_by=["attributes.start_time DESC"]
    )[0]
    assert newest.data.tags["reprolab.preset"] == "regularized" and newest.info.status == "FAILED"


@pytest.mark.parametrize("stage, limit", [(("stage:train", "gru"), 4096), (("stage:evaluate", "gru"), 16)])
def test_a_full_disk_keeps_every_old_output(workdir, stage, limit):
    done = run(workdir, "compose", *SMALL, "tracking=none")  # the store is not what fills up here
    assert done.returncode == 0, done.stderr
    before = snapshot(workdir)
    done = run(workdir, *stage, preexec=file_size_limit(limit))
    assert_refused(done, "File too large", "raise it or free space")
    assert_nothing_lost(workdir, before)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_store_stops_the_report_before_any_file_and_spares_evaluate(workdir):
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    for path in (workdir / "reports").iterdir():
        path.unlink()
    before = snapshot(workdir)
    assert_refused(run(workdir, "stage:report", env=env), "cannot use MLflow store", "start the server")
    assert_nothing_lost(workdir, before)
    done = run(workdir, "stage:evaluate", "gru", env=env)  # judging a run needs no store
    assert done.returncode == 0, done.stderr


# -- processes that are killed or interrupted ------------------------------------------------


# The baseline has no early stopping: it trains until it is stopped.
LONG = [*SMALL, "experiment=baseline", "experiments.baseline.train.max_epochs=100000"]


def start(workdir: Path, argv: list[str], disposition=signal.SIG_IGN) -> subprocess.Popen:
    """A long training in the background, its SIGINT inherited as `disposition` (a non-interactive
    shell's background job inherits it ignored), its output in files, not pipes."""

    def inherit() -> None:
        signal.signal(signal.SIGINT, disposition)
        os.setpgrp()  # its own group: the test's Ctrl-C does not reach it, and it can be killed whole

    out = (workdir / "out.log").open("w")
    command = (
        [sys.executable, "-m", f"reprolab.stages.{argv[0][6:]}", *argv[1:]]
        if argv[0].startswith("stage:")
        else [
            str(BIN / "reprolab"),
            *argv,
        ]
    )
    return subprocess.Popen(command, cwd=workdir, env=clean_env(), stdout=out, stderr=out, preexec_fn=inherit)


def wait_for_run(workdir: Path, process: subprocess.Popen, known: set[str], timeout: float = 90):
    """The new RUNNING run, once it has logged an epoch."""
    import sqlite3

    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        time.sleep(0.3)
        try:
            with sqlite3.connect(workdir / "mlflow.db") as connection:
                rows = connection.execute(
                    "SELECT r.run_uuid FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid "
                    "WHERE r.status = 'RUNNING' AND m.key LIKE 'epoch/%'"
                ).fetchall()
        except sqlite3.OperationalError:
            continue  # the store is being created
        new = {row[0] for row in rows} - known
        if new:
            return new.pop()
    raise AssertionError(f"no run appeared: {(workdir / 'out.log').read_text()}")


def status(workdir: Path, run_id: str) -> str:
    import sqlite3

    with sqlite3.connect(workdir / "mlflow.db") as connection:
        return connection.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()[0]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def run_ids(workdir: Path) -> set[str]:
    import sqlite3

    with sqlite3.connect(workdir / "mlflow.db") as connection:
        return {row[0] for row in connection.execute("SELECT run_uuid FROM runs")}


@pytest.mark.parametrize(
    "argv, signum, disposition",
    [
        (["train", *LONG], signal.SIGINT, signal.SIG_IGN),
        (["train", *LONG], signal.SIGINT, signal.SIG_DFL),
        (["train", *LONG], signal.SIGTERM, signal.SIG_IGN),
        (["stage:train", "baseline"], signal.SIGINT, signal.SIG_IGN),
    ],
    ids=["cli-sigint-ignored", "cli-sigint-default", "cli-sigterm", "stage-sigint-ignored"],
)
def test_a_signal_stops_the_run_killed_within_seconds_whatever_it_inherited(workdir, argv, signum, disposition):
    if argv[0] == "stage:train":
        done = run(workdir, "compose", *LONG)
        assert done.returncode == 0, done.stderr
    known = run_ids(workdir)
    process = start(workdir, argv, disposition)
    try:
        run_id = wait_for_run(workdir, process, known)
        sent = time.perf_counter()
        process.send_signal(signum)
        code = process.wait(timeout=30)
        took = time.perf_counter() - sent
    finally:
        stop(process)
    log = (workdir / "out.log").read_text()
    assert code == 130, log
    assert took < 15, f"took {took:.1f} s to stop"
    assert status(workdir, run_id) == "KILLED"
    assert "reprolab: interrupted" in log and "Traceback" not in log
    assert not list(workdir.rglob(".*.tmp"))


def test_a_signal_during_startup_exits_at_once_with_no_run_left_open(workdir):
    process = start(workdir, ["train", *LONG])
    try:
        time.sleep(0.5)  # importing
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    finally:
        stop(process)
    assert code == 130, (workdir / "out.log").read_text()
    assert not running_runs(workdir)


DROPPED = """
import os, signal, sys, time
from reprolab.entrypoint import install_signal_handlers
install_signal_handlers()
class Finalizer:
    def __del__(self):  # Python drops what is raised here ("Exception ignored in")
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs here
            pass
Finalizer()
try:
    time.sleep(60)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_a_signal_python_drops_is_not_lost(tmp_path):
    """A signal whose KeyboardInterrupt is raised where Python drops it (a finalizer here; in
    CI, logging's callback after the fork that starts training) still stops the command."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", DROPPED], cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 130, done.stderr
    assert time.perf_counter() - started < 30 and "Exception ignored" not in done.stderr


def test_a_second_signal_exits_at_once_and_the_next_command_closes_the_run(workdir):
    known = run_ids(workdir)
    process = start(workdir, ["train", *LONG])
    try:
        run_id = wait_for_run(workdir, process, known)
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=10)
    finally:
        stop(process)
    assert code == 130
    time.sleep(1)  # the worker notices its driver is gone at its next epoch
    if status(workdir, run_id) == "RUNNING":  # the first signal had no time to close it
        done = run(workdir, "train", *SMALL)
        assert done.returncode == 0, done.stderr
        assert f"marked MLflow run {run_id}" in done.stderr
    assert status(workdir, run_id) in ("KILLED",)


def test_sigkill_leaves_a_run_that_the_next_command_marks_killed(workdir):
    known = run_ids(workdir)
    process = start(workdir, ["train", *LONG])
    try:
        run_id = wait_for_run(workdir, process, known)
        os.killpg(process.pid, signal.SIGKILL)  # the driver and its worker, as an OOM kill would
        process.wait(timeout=30)
    finally:
        stop(process)
    assert status(workdir, run_id) == "RUNNING"
    done = run(workdir, "train", *SMALL)
    assert done.returncode == 0, done.stderr
    assert f"marked MLflow run {run_id}" in done.stderr and "KILLED" in done.stderr
    assert status(workdir, run_id) == "KILLED"
    assert not running_runs(workdir)
