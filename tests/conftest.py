"""Shared fixtures and helpers: the repository's conf/, a small configuration, temporary copies
of the repository to run DVC and MLflow in."""

from __future__ import annotations

import atexit
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import yaml

import zygote
from reprolab import numerics
from reprolab.config import Config, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
SIGNING = ("REPROLAB_SIGNING_KEY", "REPROLAB_SIGNING_KEY_FILE")  # a user's key never reaches a test
# No usage reports from what the tests run: DVC's analytics (on in a repository that a test made
# with `dvc init`, or outside one) and MLflow's telemetry would send them to their vendors.
NO_REPORTS = {"DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
os.environ.update(NO_REPORTS)
CONF_DIR = REPO_ROOT / "conf"
# The tests that train in this process compute as conf/'s default makes every command compute.
numerics.apply(yaml.safe_load((CONF_DIR / "config.yaml").read_text())["compute"]["numerics"])
PRESETS = ("baseline", "regularized", "lstm", "gru")
BIN = Path(sys.executable).parent
# Debian's chromium, headless, as root in a machine with no outside network (scripts/check_mlflow_ui.py).
sys.path.insert(0, str(REPO_ROOT / "scripts"))
from check_mlflow_ui import CHROMIUM, CHROMIUM_ARGS  # noqa: E402, F401  (used by the browser tests)


def quick_overrides(tmp_path: Path, epochs: int = 2) -> list[str]:
    """Overrides for the small built-in dataset, a couple of epochs per preset, and an MLflow
    store of the test's own."""
    overrides = [
        "data=synthetic_small",
        f"data.prepared_path={tmp_path / 'small.npz'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    overrides += [f"experiments.{name}.train.max_epochs={epochs}" for name in PRESETS]
    return overrides


@pytest.fixture
def quick_config(tmp_path: Path) -> Config:
    return load_config(quick_overrides(tmp_path), CONF_DIR)


# -- temporary copies of the repository ------------------------------------------------------


def clean_env(code_from: Path | None = None, warm: bool = False, **extra: str) -> dict[str, str]:
    """The environment without the caller's MLflow/DVC/Dask and kernel settings, the venv first on PATH; with
    `code_from`, a copy of the repository whose own src/ then runs (not the installed package);
    with `warm`, `python -m reprolab...`, `reprolab` and `dvc` run in the warm interpreter (zygote.py)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "DVC_", "DASK_"))}
    for key in (zygote.SOCKET_VARIABLE, numerics.MODE_VARIABLE, numerics.USER_VARIABLE, *numerics.KNOBS, *SIGNING):
        env.pop(key, None)  # as a user's shell has them: each command sets its own kernels
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.update(NO_REPORTS)
    if warm and (server := warm_interpreter()) is not None:
        env["PATH"] = f"{server.shims}{os.pathsep}{env['PATH']}"
        env[zygote.SOCKET_VARIABLE] = str(server.socket)
    if code_from is not None and (code_from / "src/reprolab").is_dir():
        env["PYTHONPATH"] = str(code_from / "src")
    return {**env, **extra}


class WarmInterpreter:
    """The test run's zygote.py server (one per pytest-xdist worker), started on first use."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="reprolab-zygote-"))
        self.shims, self.socket = self.folder / "bin", self.folder / "socket"
        self.shims.mkdir()
        zygote.write_shims(str(self.shims), str(BIN))
        with (self.folder / "server.log").open("w") as log:
            self.process = subprocess.Popen(
                [str(BIN / "python"), zygote.__file__, str(self.socket)],
                cwd=self.folder,
                env=clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until it serves (the stand-ins run the real interpreter until then)."""
        deadline = time.time() + timeout
        while not self.socket.exists():
            assert self.process.poll() is None and time.time() < deadline, (self.folder / "server.log").read_text()
            time.sleep(0.1)

    def served(self) -> int:
        """How many commands it has run."""
        return (self.folder / "server.log").read_text().count("served ")

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)


_warm: list[WarmInterpreter] = []


def warm_interpreter() -> WarmInterpreter | None:
    """The running server, started if need be; None with REPROLAB_TEST_COLD=1 (every command a
    fresh interpreter, as users run them)."""
    if os.environ.get("REPROLAB_TEST_COLD") == "1":
        return None
    if not _warm:
        _warm.append(WarmInterpreter())
    return _warm[0]


@pytest.fixture(scope="session", autouse=True)
def _stop_warm_interpreter() -> Iterator[None]:
    yield
    while _warm:
        _warm.pop().stop()


def sh(
    repo: Path, *args: str, check: bool = True, extra_env: dict | None = None, **kwargs
) -> subprocess.CompletedProcess:
    """Run a command in `repo` (its own code) with a clean environment and a time limit; fail
    with its output unless check=False."""
    env = clean_env(code_from=repo, warm=True, **(extra_env or {}))
    kwargs.setdefault("timeout", 600)
    done = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, **kwargs)
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@contextmanager
def logged_process(argv: list[str], cwd: Path, log: Path, warm: bool = False) -> Iterator[subprocess.Popen]:
    """`argv` started in `cwd` with a clean environment (`warm`: see clean_env), its output in the
    file `log` (never the test's pipes); killed and reaped on leaving the block if still running."""
    with log.open("w") as out:
        env = clean_env(warm=warm)
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


# The installed `reprolab` command on the repository's conf/, found on the PATH that clean_env() gives
# (the venv's, or with warm=True the warm interpreter's stand-in).
REPROLAB = ["reprolab", "--config-dir", str(CONF_DIR)]


def reprolab(
    cwd: Path, *args: str, check: bool = True, env: dict | None = None, timeout: int = 540
) -> subprocess.CompletedProcess:
    """`reprolab --config-dir conf ARGS` in `cwd`, the installed package, a clean environment and a
    time limit; fail with its output on exit != 0 unless check=False."""
    done = subprocess.run(
        [*REPROLAB, *args],
        cwd=cwd,
        env={**clean_env(warm=True), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def assert_finished_compare_runs(folder: Path, seeds: int) -> None:
    """The store in `folder` holds one FINISHED compare run of baseline for each of seeds 0..seeds-1."""
    compare_runs = runs(folder, "compare", uri=f"sqlite:///{folder / 'mlflow.db'}")
    assert sorted(r.info.run_name for r in compare_runs) == [f"baseline-seed{s}" for s in range(seeds)]
    assert {r.info.status for r in compare_runs} == {"FINISHED"}


def small_overrides(folder: Path, epochs: int) -> list[str]:
    """Small synthetic data, `epochs` for both audit sides, data and store in `folder`."""
    return [
        "data=synthetic_small",
        f"data.prepared_path={folder / 'small.npz'}",
        f"experiments.baseline.train.max_epochs={epochs}",
        f"experiments.regularized.train.max_epochs={epochs}",
        f"tracking.uri=sqlite:///{folder / 'mlflow.db'}",
    ]


def copy_repository(target: Path) -> Path:
    """The working tree as git sees it (tracked and untracked, not ignored), as a fresh repo."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    sh(target, "git", "init", "-q", "-b", "main")
    sh(target, "git", "config", "user.email", "test@reprolab.invalid")
    sh(target, "git", "config", "user.name", "reprolab tests")
    return target


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder `name` that `build(folder)` fills, built once per test run: under pytest-xdist
    the first worker to ask builds it under a file lock, the others wait for it and share it.
    Tests treat it as read-only (they copy it to change it). A failed build fails every test that
    asks for it, with the first failure's message, instead of being built again."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder, done, failed = root / name, root / f"{name}.built", root / f"{name}.failed"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if failed.exists():
            pytest.fail(f"building {name} failed in an earlier test:\n{failed.read_text()}")
        if not done.exists():
            folder.mkdir()
            try:
                build(folder)
            except BaseException as error:
                failed.write_text(f"{type(error).__name__}: {error}")
                raise
            done.touch()
    return folder


def copy_built_repository(source: Path, target: Path) -> Path:
    """A copy of a repository that built_once made (git, DVC cache, outputs, MLflow store) that
    is a repository of its own: the MLflow store's absolute paths (artifact locations) moved to
    the copy, DVC's temporary folder (locks, queue) left behind."""
    dvc_dir = source / ".dvc"
    shutil.copytree(source, target, symlinks=True, ignore=lambda d, _: ["tmp"] if Path(d) == dvc_dir else [])
    if (target / "mlflow.db").is_file():
        _move_store_paths(target / "mlflow.db", source, target)
    # A model's files stay as logged, MLmodel's artifact_path too (where it was logged: metadata
    # that loading does not use): their digest is checked before the registry serves them.
    return target


def _move_store_paths(store: Path, source: Path, target: Path) -> None:
    """In a copied MLflow store, every absolute path under `source` (artifact locations) moved to `target`."""
    import sqlite3

    with closing(sqlite3.connect(store)) as database:
        tables = [row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in database.execute(f'PRAGMA table_info("{table}")').fetchall():
                if re.search("CHAR|TEXT|CLOB", column[2].upper()):
                    database.execute(
                        f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?) '
                        f'WHERE instr("{column[1]}", ?) > 0',
                        (str(source), str(target), str(source)),
                    )
        database.commit()


@functools.cache
def _empty_store() -> Path:
    """A folder holding the mlflow.db that MLflow makes for a new store, made once per process."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="reprolab-new-store-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    # The artifact root a command run in `folder` gives the store's Default experiment.
    SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "mlruns")).engine.dispose()
    return folder


def new_store(folder: Path) -> None:
    """folder/mlflow.db: a new MLflow store as a command run in `folder` would make it, copied
    instead of made (MLflow's migrations take one to two seconds a store). For tests where the
    store is only where runs go; tests of how a store is made, or that none is, let the command
    make it."""
    shutil.copyfile(_empty_store() / "mlflow.db", folder / "mlflow.db")
    _move_store_paths(folder / "mlflow.db", _empty_store(), folder)


def set_in_yaml(path: Path, pattern: str, replacement: str) -> None:
    text = path.read_text()
    new = re.sub(pattern, replacement, text, flags=re.M)
    assert new != text, f"{pattern!r} not found in {path}"
    path.write_text(new)


def shorten_pipeline(repo: Path, data: str = "synthetic_small") -> None:
    """Edit conf/ of a copy of the repository for a test's pipeline: 4 epochs (patience 2), the
    audit and the report over seeds 0 and 1, and the small dataset: every stage and behaviour of
    the real pipeline at a fraction of its cost (`data=None` keeps conf/'s choice)."""
    set_in_yaml(repo / "conf/train/default.yaml", r"^max_epochs: \d+", "max_epochs: 4")
    set_in_yaml(repo / "conf/train/default.yaml", r"^  patience: \d+", "  patience: 2")
    set_in_yaml(repo / "conf/config.yaml", r"^  seeds: \[.*\]", "  seeds: [0, 1]")
    if data is not None:
        set_in_yaml(repo / "conf/config.yaml", r"^  - data: synthetic\b", f"  - data: {data}")


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "-m", message)


def client_for(repo: Path, uri: str | None = None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri or f"sqlite:///{repo / 'mlflow.db'}")


@contextmanager
def mlflow_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (load_model, ...) at `uri`, and restore it and the environment
    afterwards: `mlflow.set_tracking_uri` is process-wide and would leak into later tests."""
    import mlflow

    previous, env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def runs(repo: Path, kind: str = "train", uri: str | None = None) -> list:
    client = client_for(repo, uri)
    experiment = client.get_experiment_by_name("reprolab")
    return client.search_runs([experiment.experiment_id], f"tags.`reprolab.kind` = '{kind}'")


def queue_two_experiments(repo: Path) -> str:
    """Queue two `dvc exp run -S` experiments (lstm hidden size 8 and 12), run them with two
    workers at once, wait until none is queued or running; return `dvc queue status`."""
    refs = experiment_refs(repo)
    for size in (8, 12):
        sh(repo, "dvc", "exp", "run", "--queue", "-S", f"experiments.lstm.model.hidden_size={size}")
    # `queue start` returns at once, leaving worker daemons: they must not hold this test's
    # pipes (a capture would wait for them to close), so they write to a file.
    with (repo.parent / f"{repo.name}-queue-workers.log").open("w") as log:
        subprocess.run(
            ["dvc", "queue", "start", "-j", "2"],
            cwd=repo,
            env=clean_env(code_from=repo, warm=True),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            timeout=120,
            check=True,
        )

    def status() -> str:
        return sh(repo, "dvc", "queue", "status").stdout

    def busy(shown: str) -> bool:
        return bool(re.search(r"\b(Queued|Running)\b", shown))

    try:
        # Each `dvc queue status` costs a core for a second and a half, taken from the experiments:
        # wait for the two experiments' git refs (what DVC makes of a finished one), asking DVC
        # itself every 30 s (a failed experiment makes none) and at the end.
        deadline, asked = time.time() + 300, time.time()
        while time.time() < deadline and len(experiment_refs(repo) - refs) < 2:
            time.sleep(1)
            if time.time() - asked > 30:
                asked = time.time()
                if not busy(status()):
                    break
        shown = status()
        while time.time() < deadline and busy(shown):
            time.sleep(2)
            shown = status()
        return shown
    finally:
        stop_queue_workers(repo)


def experiment_refs(repo: Path) -> set[str]:
    """The git refs of the DVC experiments in `repo` (refs/exps/<baseline commit>/<name>; not DVC's
    own refs/exps/exec/... or refs/exps/celery/...)."""
    refs = sh(repo, "git", "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    return {ref for ref in refs if re.match(r"refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/", ref)}


def stop_queue_workers(repo: Path) -> None:
    """End every DVC queue worker started in `repo`: one that logged "shutting down due to
    empty queue" was seen never to exit (a known DVC issue)."""
    import psutil

    sh(repo, "dvc", "queue", "stop", check=False, timeout=60)
    deadline = time.time() + 10
    while True:
        workers = []
        for process in psutil.process_iter(["cmdline", "cwd"]):
            try:
                cmdline = " ".join(process.info["cmdline"] or [])
                if "queue-worker" in cmdline and str(process.info["cwd"] or "").startswith(str(repo)):
                    workers.append(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if not workers:
            return
        if time.time() > deadline:
            for process in workers:
                process.kill()
            psutil.wait_procs(workers, timeout=10)
            return
        time.sleep(0.5)


# -- CI: a skipped test is a failed test --------------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With REPROLAB_NO_SKIP=1 (set by .ci/run), a skip (e.g. no PostgreSQL or Chromium) fails."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("REPROLAB_NO_SKIP") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped, and REPROLAB_NO_SKIP=1 forbids skips: {report.longrepr}"


# -- pytest-xdist: what must run on one worker, and the longest work first ----------------------

# Under `-n 2 --dist loadgroup` (pyproject.toml) each worker takes the next unit of work in
# the order below: a test, or a module's tests that run on one worker in a row (SPREAD). The longest
# go first, so that neither core is left with a long tail: the first test of a module whose
# tests share what built_once made (it builds it), the server's group for the other worker
# meanwhile, then the rest of the end-to-end tests, then the quick ones.
ORDER = (
    ("test_pipeline.py", "first"),
    ("test_server.py", "all"),
    ("test_failures.py", "first"),
    ("test_pipeline.py", "all"),
    ("test_your_data_pipeline.py", "all"),
    ("test_cluster.py", "all"),
    ("test_failures.py", "all"),
)


# Modules whose tests are independent of each other (nothing module-scoped): their tests are
# spread over the workers one by one. Every other module, a new one included, is one unit of
# work: its tests run in a row on one worker, so its module-scoped fixture (a pipeline, a
# server) is built once. (xdist_group marks cannot say this: pytest 9.2 ignores the suffix that
# pytest-xdist 3.8 gives their node ids.)
SPREAD = {
    "test_pipeline.py",  # each test copies the pipeline that built_once made
    "test_failures.py",  # each test copies the folder that built_once made
    "test_cluster.py",
    "test_user_data.py",
    "test_training.py",
    "test_data.py",
    "test_config.py",
    "test_layout.py",
    "test_models.py",
    "test_tracking.py",
    "test_ci.py",
    "test_resource_limits.py",
    "test_workers.py",
    "test_messages.py",
    "test_output_paths.py",
    "test_provenance.py",
}


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup` as above: one unit per test of a SPREAD module, one per other module."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class ModuleGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope, path = super()._split_scope(nodeid), nodeid.split("::")[0]
            return scope if scope != nodeid or Path(path).name in SPREAD else path

    return ModuleGroups(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The order of the run (stable: a module's tests keep theirs)."""
    modules: dict[str, list] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    slow = {  # modules with an end-to-end test, kept whole
        Path(path).name
        for path, tests in modules.items()
        if any(item.get_closest_marker(mark) for item in tests for mark in ("slow", "server"))
    }
    seen: set[str] = set()

    def rank(item) -> int:
        name = Path(item.nodeid.split("::")[0]).name
        which = "all" if name in seen else "first"
        seen.add(name)
        for index, (module, tests) in enumerate(ORDER):
            if module == name and tests in ("all", which):
                return index
        return len(ORDER) + (0 if name in slow else 1)

    ranks = {id(item): rank(item) for item in items}
    items.sort(key=lambda item: ranks[id(item)])


def retraining(pid: int, timeout: float = 120.0):
    """The recorded-code process that `pid` (a reproduce) started, once it trains."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if any("reprolab-retrain-" in part for part in child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        time.sleep(0.2)
    raise AssertionError("reproduce never started its retraining")
